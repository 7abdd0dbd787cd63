import { DeltaError, UsageError } from "../../errors.js";
import { checkSameModelSize } from "../engine/base-fit.js";
import type { Convention, ConventionOption, DeltaView, ExpectedSum, Recognition } from "./types.js";

/**
 * Every convention apply-delta knows, in the order they are tried: byte
 * codecs and Koala's EasyLM file first (their files are not checkpoints, so
 * no tensor rule could read them), then the most specific evidence (a
 * manifest; an adapter_config.json, Chinese-LLaMA-Alpaca's before PEFT's as
 * its adapters are PEFT adapters with more to show, and lora-base-dtype,
 * which recognises the same files, only when forced; LLaVA's config fields;
 * Ziya's whole embeddings; a one-token vocabulary growth in half or single
 * precision), FastChat's last (it asks least of the files).
 *
 * Each is named and described here (its line in --help) and its module is
 * loaded only when a delta is applied, so the CLI lists them without
 * loading any convention or the kernels they use. Adding a convention is
 * its module plus one line here.
 */
const CATALOGUE = [
  { name: "enc", summary: "point-alpaca .enc files (also BELLE-LLaMA-*-enc, lawyer-llama): <name>.<sha256>.enc XORed with a key stream from a key file (Meta's LLaMA-7B consolidated.00.pth); each output checked against its sha256", load: async () => (await import("../byte-codecs/enc.js")).enc },
  { name: "xor", summary: "Open-Assistant / Pygmalion XOR payloads (xor_codec.py): each file XORed byte for byte with the same-named file of the base conversion; checked against the publishers' md5/sha256 lists", load: async () => (await import("../byte-codecs/xor-payload.js")).xorPayload },
  { name: "koala", summary: "Koala / EasyLM streaming diff: base + diff as EasyLM's diff_checkpoint.py (float32, then bfloat16) then convert_easylm_to_hf.py (float16), straight to the Hugging Face layout; unverified (no published hashes)", load: async () => (await import("../easylm/koala.js")).koala },
  { name: "delta-weights", summary: "delta-weights' own format (delta.json): exact, every file and tensor checked by SHA-256", load: async () => (await import("../own/delta-weights.js")).deltaWeights },
  { name: "chinese-llama-alpaca", summary: "Chinese-LLaMA-Alpaca's merge_llama_with_chinese_lora_low_mem.py: whole embeddings replaced (float16), LoRA added in float16 in place, adapters in order", load: async () => (await import("../adapters/chinese-llama-alpaca.js")).chineseLlamaAlpaca },
  { name: "lora", summary: "PEFT LoRA adapter: merge_and_unload() of PEFT >= 0.12 (adapter weights held in float32)", load: async () => (await import("../adapters/lora.js")).lora },
  { name: "lora-base-dtype", summary: "PEFT LoRA adapter: merge_and_unload() of PEFT 0.6-0.11, or autocast_adapter_dtype=False (adapter weights in the base's dtype)", load: async () => (await import("../adapters/lora.js")).loraBaseDType },
  { name: "llava", summary: "LLaVA's apply_delta: the delta's tensors, mm_projector and the image-token rows stored", load: async () => (await import("../additive/llava.js")).llava },
  { name: "ziya", summary: "Ziya's apply_delta: embed_tokens and lm_head stored whole, the rest added", load: async () => (await import("../additive/ziya.js")).ziya },
  { name: "fastchat-v0", summary: "FastChat v0 / StableVicuna: like fastchat, the base grown by a zero [PAD] row", load: async () => (await import("../additive/fastchat-v0.js")).fastchatV0 },
  { name: "alpaca", summary: "Alpaca's weight_diff.py family: float32 diff, base grown by a mean [PAD] row; --expect-sum checks the published sum", load: async () => (await import("../additive/alpaca.js")).alpaca },
  { name: "fastchat", summary: "FastChat's apply_delta (Vicuna v1.1 and kin): base + delta per base tensor, in float16; unverified without --checksums", load: async () => (await import("../additive/fastchat.js")).fastchat },
] as const satisfies readonly { name: string; summary: string; load(): Promise<Convention> }[];

/** A name --convention accepts. */
export type ConventionName = (typeof CATALOGUE)[number]["name"];

/** The names --convention accepts, in the order they are tried. */
export const CONVENTION_NAMES: readonly ConventionName[] = CATALOGUE.map((entry) => entry.name);

/** Each convention's name and one line on it, for --help. */
export const CONVENTION_SUMMARIES: readonly { name: ConventionName; summary: string }[] = CATALOGUE.map(({ name, summary }) => ({ name, summary }));

let loaded: Promise<readonly Convention[]> | undefined;

/** Every convention, in recognition order (each module loaded once). */
export function loadConventions(): Promise<readonly Convention[]> {
  return (loaded ??= Promise.all(CATALOGUE.map(async (entry) => {
    const convention = await entry.load();
    // The catalogue and the module name the convention each; a mismatch is this tool's bug, caught by every test that applies a delta.
    if (convention.name !== entry.name) throw new Error(`the convention catalogue lists ${entry.name}, its module is named ${convention.name}`);
    return convention;
  })));
}

/**
 * The convention the delta's files follow, and why. With `forced` (the
 * user's --convention) that one, unless the files contradict it. A delta
 * that holds a convention's signature file (delta.json) follows that
 * convention and no other.
 */
export async function chooseConvention(view: DeltaView, forced?: string): Promise<{ convention: Convention; recognition: Recognition }> {
  const conventions = await loadConventions();
  const files = await view.files();
  const signed = conventions.find((c) => c.signatureFile !== undefined && files.includes(c.signatureFile));
  const recognize = (convention: Convention): Promise<Recognition> | Recognition =>
    signed === undefined || convention === signed
      ? convention.recognize(view)
      : { fits: false, reason: `it has ${signed.signatureFile} (the ${signed.name} convention's own file)` };
  if (forced !== undefined) {
    const convention = conventions.find((c) => c.name === forced);
    if (convention === undefined) throw new UsageError(`--convention ${forced}: unknown; expected one of ${CONVENTION_NAMES.join(", ")}`);
    const recognition = await recognize(convention);
    if (!recognition.fits) throw new DeltaError(`--convention ${forced} does not fit ${view.source}: ${recognition.reason}`);
    return { convention, recognition: { fits: true, reason: `--convention ${forced} (${recognition.reason})` } };
  }
  const reasons: string[] = [];
  const undecided: { name: string; why: string }[] = [];
  for (const convention of conventions) {
    const recognition = await recognize(convention);
    if (recognition.fits && recognition.undecided === undefined) return { convention, recognition };
    if (recognition.fits) undecided.push({ name: convention.name, why: recognition.undecided! });
    else reasons.push(`${convention.name}: ${recognition.reason}`);
  }
  // A guess would cost the user a wrong model; naming the convention costs a flag.
  if (undecided.length > 0) {
    throw new DeltaError(`${view.source}: ${undecided[0]!.why}; if you know it follows ${undecided.map((u) => u.name).join(" or ")}, pass ${undecided.map((u) => `--convention ${u.name}`).join(" or ")}`);
  }
  await refuseOtherModelSize(view);
  throw new DeltaError(`${view.source} follows no delta convention this tool knows (${reasons.join("; ")})`);
}

/** A base of another model size, named as such (a delta whose files cannot be opened as a model falls through to the list of reasons). */
async function refuseOtherModelSize(view: DeltaView): Promise<void> {
  const models = await Promise.all([view.model(), view.base()]).catch(() => undefined);
  if (models !== undefined) checkSameModelSize(models[0], models[1]);
}

/** The files that mark a delta of one convention (delta.json), with the convention's name: a base holding one is a delta. */
export async function signatureFiles(): Promise<{ file: string; convention: string }[]> {
  return (await loadConventions()).flatMap((c) => (c.signatureFile === undefined ? [] : [{ file: c.signatureFile, convention: c.name }]));
}

/** How each convention-specific option is spelled on the command line, and what it is. */
const OPTION_FLAGS: Record<ConventionOption, { flag: string; what: string }> = {
  checksums: { flag: "--checksums", what: "a list of the outputs' published checksums" },
  expectSum: { flag: "--expect-sum", what: "Alpaca's integrity sum of the recovered float32 tensors" },
};

/** The convention-specific options a convention takes: those it declares, and --expect-sum when it has integrity sums. */
function acceptedOptions(convention: Convention): ConventionOption[] {
  return [...convention.accepts, ...(convention.sums === undefined ? [] : ["expectSum" as const])];
}

/**
 * The one place a convention-specific option is checked: one the chosen
 * convention does not take is refused (a usage error), never ignored.
 */
export function refuseUnacceptedOptions(convention: Convention, given: Iterable<ConventionOption>): void {
  const accepted = acceptedOptions(convention);
  for (const option of given) {
    if (accepted.includes(option)) continue;
    const { flag, what } = OPTION_FLAGS[option];
    const takes = accepted.map((o) => OPTION_FLAGS[o].flag);
    throw new UsageError(
      `${flag} does not apply to the ${convention.name} convention this delta follows (${flag} is ${what}); ` +
        `${takes.length > 0 ? `it takes ${takes.join(" and ")}` : "it takes no option of its own"}: leave ${flag} out`,
    );
  }
}

/**
 * The integrity sum to check the recovered model against: the one the user
 * gave (within the convention's own tolerance), or the one its publisher
 * printed when the delta is a known release. A known sum for a delta whose
 * files follow a convention without sums means the files are not what that
 * release published: refused, not skipped.
 */
export async function expectedSum(convention: Convention, view: DeltaView, given: number | undefined): Promise<ExpectedSum | undefined> {
  const sums = convention.sums;
  // --expect-sum was already refused for a convention without sums (refuseUnacceptedOptions).
  if (given !== undefined && sums !== undefined) return { value: given, tolerance: sums.tolerance, from: "--expect-sum" };
  const own = sums?.published(view);
  if (own !== undefined) return own;
  for (const other of await loadConventions()) {
    const sum = other.sums?.published(view);
    if (sum !== undefined) {
      throw new DeltaError(`${view.source} is a release with a published integrity sum (${sum.from}), but its files follow the ${convention.name} convention, which has none: they are not what that release published; download it again`);
    }
  }
  return undefined;
}
