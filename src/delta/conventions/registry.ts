import { DeltaError, UsageError } from "../../errors.js";
import { deltaWeights } from "../own/delta-weights.js";
import { alpaca } from "../additive/alpaca.js";
import { chineseLlamaAlpaca } from "../adapters/chinese-llama-alpaca.js";
import { enc } from "../byte-codecs/enc.js";
import { fastchat } from "../additive/fastchat.js";
import { fastchatV0 } from "../additive/fastchat-v0.js";
import { koala } from "../easylm/koala.js";
import { llava } from "../additive/llava.js";
import { lora, loraBaseDType } from "../adapters/lora.js";
import { ziya } from "../additive/ziya.js";
import { checkSameModelSize } from "../engine/base-fit.js";
import type { Convention, ConventionOption, DeltaView, Recognition } from "./types.js";
import { xorPayload } from "../byte-codecs/xor-payload.js";

/**
 * Every convention apply-delta knows, in the order they are tried: byte
 * codecs and Koala's EasyLM file first (their files are not checkpoints, so
 * no tensor rule could read them), then the most specific evidence (a
 * manifest; an adapter_config.json, Chinese-LLaMA-Alpaca's before PEFT's as
 * its adapters are PEFT adapters with more to show, and lora-base-dtype,
 * which recognises the same files, only when forced; LLaVA's config fields;
 * Ziya's whole embeddings; a one-token vocabulary growth in half or single
 * precision), FastChat's last (it asks least of the files).
 */
export const CONVENTIONS: readonly Convention[] = [enc, xorPayload, koala, deltaWeights, chineseLlamaAlpaca, lora, loraBaseDType, llava, ziya, fastchatV0, alpaca, fastchat];

/**
 * The convention the delta's files follow, and why. With `forced` (the
 * user's --convention) that one, unless the files contradict it.
 */
export async function chooseConvention(view: DeltaView, forced?: string): Promise<{ convention: Convention; recognition: Recognition }> {
  if (forced !== undefined) {
    const convention = CONVENTIONS.find((c) => c.name === forced);
    if (convention === undefined) throw new UsageError(`--convention ${forced}: unknown; expected one of ${CONVENTIONS.map((c) => c.name).join(", ")}`);
    const recognition = await convention.recognize(view);
    if (!recognition.fits) throw new DeltaError(`--convention ${forced} does not fit ${view.source}: ${recognition.reason}`);
    return { convention, recognition: { fits: true, reason: `--convention ${forced} (${recognition.reason})` } };
  }
  const reasons: string[] = [];
  const undecided: { name: string; why: string }[] = [];
  for (const convention of CONVENTIONS) {
    const recognition = await convention.recognize(view);
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

/** How each convention-specific option is spelled on the command line, and what it is. */
const OPTION_FLAGS: Record<ConventionOption, { flag: string; what: string }> = {
  checksums: { flag: "--checksums", what: "a list of the outputs' published checksums" },
  expectSum: { flag: "--expect-sum", what: "Alpaca's integrity sum of the recovered float32 tensors" },
};

/**
 * The one place a convention-specific option is checked: one the chosen
 * convention does not take is refused (a usage error), never ignored.
 */
export function refuseUnacceptedOptions(convention: Convention, given: Iterable<ConventionOption>): void {
  for (const option of given) {
    if (convention.accepts.includes(option)) continue;
    const { flag, what } = OPTION_FLAGS[option];
    const takes = convention.accepts.map((o) => OPTION_FLAGS[o].flag);
    throw new UsageError(
      `${flag} does not apply to the ${convention.name} convention this delta follows (${flag} is ${what}); ` +
        `${takes.length > 0 ? `it takes ${takes.join(" and ")}` : "it takes no option of its own"}: leave ${flag} out`,
    );
  }
}
