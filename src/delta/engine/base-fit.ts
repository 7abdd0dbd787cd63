/**
 * Whether a base belongs with a delta (or, for make-delta, with a target),
 * decided from the headers before anything is written. A convention
 * combines named delta tensors with named base tensors: every base tensor it
 * needs must be there, with the delta's shape; the only differences allowed
 * are the ones the convention defines (the rows a grown vocabulary adds,
 * tensors it takes from the delta alone). Anything else means another base
 * than the one the delta was made from, and is refused in one line naming
 * the tensor, both shapes (or the missing name) and what the base probably
 * is: another model size, a LlamaModel checkpoint without its head, an
 * incomplete copy.
 */
import { DeltaError } from "../../errors.js";
import type { ModelSource } from "../../model/types.js";
import type { TensorInfo } from "../../tensors.js";
import { sameShape } from "./pairing.js";

/** What a convention lets differ between the delta and the base. */
export interface FitRules {
  /** The convention's name, for messages. */
  convention: string;
  /** Whether this delta tensor is copied as stored (Ziya's whole embeddings): the base's shape does not matter. */
  storedWhole(delta: TensorInfo, base: TensorInfo): boolean;
  /**
   * Whether the convention takes this delta tensor, which no model of the
   * base's kind has, from the delta alone (kept or left out: LLaVA's
   * projector, a trl value head FastChat drops).
   */
  deltaOnly(name: string): boolean;
  /** Whether a base tensor the delta lacks is an error (FastChat asserts every base tensor has its delta). */
  everyBaseTensor: boolean;
  /** Tensors neither side's check looks at (rotary inv_freq buffers, never written). */
  ignored(name: string): boolean;
}

/** transformers' base_model_prefix for LLaMA: a LlamaModel checkpoint names its tensors without it. */
const PREFIX = "model.";

/** The input embedding and the LM head: the tensors whose rows a grown vocabulary adds to. */
export function isVocabularyTensor(name: string): boolean {
  return name === "model.embed_tokens.weight" || name === "lm_head.weight";
}

/** The top-level tensors every LLaMA causal LM has, whatever its size. */
const LLAMA_TOP_LEVEL = new Set(["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]);

/**
 * Refuses a base that does not fit the delta under the convention's rules.
 * `delta` is the delta's weights, `base` the base's.
 */
export function checkBaseFits(delta: ModelSource, base: ModelSource, rules: FitRules): void {
  const [deltaKinds, baseKinds] = [kindsOf(delta), kindsOf(base)];
  for (const d of delta.tensors.values()) {
    if (rules.ignored(d.name)) continue;
    const b = base.tensors.get(d.name);
    if (b === undefined) {
      if (!isModelTensor(d.name, base, baseKinds) && rules.deltaOnly(d.name)) continue;
      throw missingInBase(d, delta, base, rules);
    }
    if (rules.storedWhole(d, b)) continue;
    if (fits(d.shape, b.shape, d.name)) continue;
    throw shapeMismatch(d, b, "the delta", delta, base, rules.convention);
  }
  for (const b of base.tensors.values()) {
    if (rules.ignored(b.name) || delta.tensors.has(b.name)) continue;
    // A tensor of a kind the delta has (another layer's) means the base has more of them: another model size.
    if (rules.everyBaseTensor || (kindOf(b.name) !== b.name && deltaKinds.has(kindOf(b.name)))) {
      throw new DeltaError(
        `the delta ${delta.source} has no tensor "${b.name}", which the base ${base.source} has` +
          `${rules.everyBaseTensor ? ` (${rules.convention} adds a delta to every base tensor)` : ""}: ${diagnose(base, delta, "the delta", "the delta is incomplete, or made from another base")}`,
        { rule: "base-tensor-missing" },
      );
    }
  }
}

/**
 * make-delta's side of the rule: every target tensor the base also has must
 * have the base's shape, but for the rows a grown vocabulary adds. Tensors
 * only in the target are stored whole (a new head, a deeper model), so they
 * need no base tensor.
 */
export function checkTargetFitsBase(target: ModelSource, base: ModelSource): void {
  let paired = 0;
  for (const t of target.tensors.values()) {
    const b = base.tensors.get(t.name);
    if (b === undefined) continue;
    paired++;
    if (!fits(t.shape, b.shape, t.name)) throw shapeMismatch(t, b, "the target", target, base, "make-delta");
  }
  // Not one name in common: every tensor would be stored whole, a copy of the target published as a "delta".
  const [first, firstOfBase] = [target.tensors.keys().next().value, base.tensors.keys().next().value];
  if (paired === 0 && first !== undefined && firstOfBase !== undefined) {
    throw new DeltaError(
      `the base ${base.source} has none of the target ${target.source}'s tensors (the target's "${first}", the base's "${firstOfBase}"), so the delta would be the whole target: ` +
        diagnose(base, target, "the target", "the base is not the model the target was fine-tuned from", first),
      { rule: "base-tensor-missing" },
    );
  }
}

/**
 * When no convention fits, the likeliest reason is a base of another model
 * size (a convention's recognition compares the delta with the base, and
 * shapes that cannot pair compare as nothing): said as a shape mismatch,
 * naming the first tensor that differs, rather than as an unknown delta.
 */
export function checkSameModelSize(delta: ModelSource, base: ModelSource): void {
  if (!differs(sizeOf(base), sizeOf(delta))) return;
  for (const d of delta.tensors.values()) {
    const b = base.tensors.get(d.name);
    if (b !== undefined && !fits(d.shape, b.shape, d.name)) throw shapeMismatch(d, b, "the delta", delta, base, "every convention");
  }
}

/** The delta's shape against the base's: equal, or a vocabulary tensor grown by rows (columns equal). */
function fits(shape: readonly number[], baseShape: readonly number[], name: string): boolean {
  if (sameShape(shape, baseShape)) return true;
  return isVocabularyTensor(name) && shape.length === 2 && baseShape.length === 2 && shape[1] === baseShape[1] && shape[0]! >= baseShape[0]!;
}

function missingInBase(d: TensorInfo, delta: ModelSource, base: ModelSource, rules: FitRules): DeltaError {
  return new DeltaError(
    `the base ${base.source} has no tensor "${d.name}", which the delta ${delta.source} needs (${rules.convention} adds its ${d.dtype} [${d.shape}] to it): ` +
      diagnose(base, delta, "the delta", "the base is incomplete (a shard or a tensor missing from its files)", d.name),
    { rule: "base-tensor-missing" },
  );
}

function shapeMismatch(d: TensorInfo, b: TensorInfo, role: string, other: ModelSource, base: ModelSource, convention: string): DeltaError {
  const allowed = isVocabularyTensor(d.name) ? ` (${convention} lets only a grown vocabulary's rows differ)` : "";
  return new DeltaError(
    `the base ${base.source}: tensor "${d.name}" is ${b.dtype} [${b.shape}], ${role} ${other.source} needs [${d.shape}]${allowed}: ` +
      diagnose(base, other, role, vocabularyNote(d, b) ?? `the base is not the model ${role === "the target" ? "the target was fine-tuned" : "the delta was made"} from (this tensor differs although the model sizes agree)`),
    { rule: "base-shape-mismatch" },
  );
}

/** A base vocabulary larger than the delta's: the base is itself a fine-tune with added tokens. */
function vocabularyNote(d: TensorInfo, b: TensorInfo): string | undefined {
  if (!isVocabularyTensor(d.name) || d.shape.length !== 2 || b.shape.length !== 2 || d.shape[1] !== b.shape[1]) return undefined;
  return `the base has a vocabulary of ${b.shape[0]} rows, more than the ${d.shape[0]} of the model it should be: a model with added tokens, not the original`;
}

/**
 * What the base probably is, against the model the delta (or target) was
 * made from: another size; a LlamaModel checkpoint (names without the
 * "model." prefix, no lm_head); else `otherwise`.
 */
function diagnose(base: ModelSource, other: ModelSource, role: string, otherwise: string, missing?: string): string {
  const [b, o] = [sizeOf(base), sizeOf(other)];
  const made = role === "the target" ? "the target has" : "the delta was made from one with";
  if (differs(b, o)) return `the base has ${describeSize(b)}; ${made} ${describeSize(o)}: a different model size`;
  if (missing !== undefined && missing.startsWith(PREFIX) && isHeadless(base)) {
    return (
      `the base names its tensors without the "${PREFIX}" prefix and has no "lm_head.weight": it is a LlamaModel checkpoint (the model without its language-model head), ` +
      `which transformers loads into a causal LM with a newly initialised, random lm_head; pass the LlamaForCausalLM checkpoint ${role === "the target" ? "the target was fine-tuned from" : "the delta was made from"}`
    );
  }
  return otherwise;
}

/** A base saved from LlamaModel: no tensor carries the prefix, and the head is absent. */
function isHeadless(base: ModelSource): boolean {
  const names = [...base.tensors.keys()];
  return names.length > 0 && !names.some((n) => n.startsWith("model")) && !base.tensors.has("lm_head.weight");
}

/** Whether the base's model has a tensor of this name: a LLaMA top-level tensor, one of a kind its layers have, or the name without the prefix. */
function isModelTensor(name: string, base: ModelSource, baseKinds: ReadonlySet<string>): boolean {
  if (LLAMA_TOP_LEVEL.has(name)) return true;
  if (name.startsWith(PREFIX) && base.tensors.has(name.slice(PREFIX.length))) return true;
  const kind = kindOf(name);
  return kind !== name && (baseKinds.has(kind) || (kind.startsWith(PREFIX) && baseKinds.has(kind.slice(PREFIX.length))));
}

/** A layer tensor's name with its layer index replaced: `model.layers.*.mlp.up_proj.weight`. */
function kindOf(name: string): string {
  return name.replace(/(^|\.)layers\.\d+\./, "$1layers.*.");
}

/** The layer kinds a model has (read once: a model may have 100,000 tensors). */
function kindsOf(model: ModelSource): Set<string> {
  const kinds = new Set<string>();
  for (const n of model.tensors.keys()) {
    const kind = kindOf(n);
    if (kind !== n) kinds.add(kind);
  }
  return kinds;
}

/** A LLaMA-shaped model's size, read from its tensors' shapes. */
interface ModelSize {
  hidden?: number;
  layers?: number;
  intermediate?: number;
}

function sizeOf(model: ModelSource): ModelSize {
  const size: ModelSize = {};
  let layers = -1;
  for (const t of model.tensors.values()) {
    const name = t.name.startsWith(PREFIX) ? t.name.slice(PREFIX.length) : t.name;
    const layer = /^layers\.(\d+)\./.exec(name);
    if (layer !== null) layers = Math.max(layers, Number(layer[1]));
    if (name === "embed_tokens.weight" && t.shape.length === 2) size.hidden = t.shape[1];
    if (name === "norm.weight" && t.shape.length === 1) size.hidden ??= t.shape[0];
    if (/^layers\.\d+\.mlp\.gate_proj\.weight$/.test(name) && t.shape.length === 2) size.intermediate ??= t.shape[0];
  }
  if (layers >= 0) size.layers = layers + 1;
  return size;
}

function differs(a: ModelSize, b: ModelSize): boolean {
  return (["hidden", "layers", "intermediate"] as const).some((k) => a[k] !== undefined && b[k] !== undefined && a[k] !== b[k]);
}

/** LLaMA's published sizes by hidden size and layers (Llama 2 70B shares 65B's). */
const LLAMA_SIZES = new Map([["4096/32", "7B"], ["5120/40", "13B"], ["6656/60", "30B"], ["8192/80", "65B or 70B"]]);

function describeSize(size: ModelSize): string {
  const parts = [
    ...(size.hidden !== undefined ? [`hidden size ${size.hidden}`] : []),
    ...(size.layers !== undefined ? [`${size.layers} layer${size.layers === 1 ? "" : "s"}`] : []),
  ];
  const named = LLAMA_SIZES.get(`${size.hidden}/${size.layers}`);
  if (size.intermediate !== undefined && named === undefined) parts.push(`intermediate size ${size.intermediate}`);
  const text = parts.length > 1 ? `${parts.slice(0, -1).join(", ")} and ${parts.at(-1)}` : (parts[0] ?? "an unknown size");
  return named === undefined ? text : `${text} (a LLaMA ${named})`;
}
