import { isArithmeticDType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import type { ModelSource, TensorInfo } from "../../model/types.js";
import { sameShape } from "../engine/pairing.js";

/**
 * A PEFT LoRA adapter as it is published: `adapter_config.json` and
 * `adapter_model.safetensors` (or `adapter_model.bin`), read as PEFT reads
 * them (huggingface/peft at 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40:
 * tuners/lora/config.py, layer.py, model.py; utils/save_and_load.py), and
 * matched to the base's tensors. Everything PEFT's merge would do
 * differently from `W += scaling * (B @ A)` is refused here by name, before
 * any output.
 */

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = ["adapter_model.safetensors", "adapter_model.bin"] as const;

/** The fields of adapter_config.json the merge depends on. */
export interface LoraConfig {
  r: number;
  alpha: number;
  useRslora: boolean;
  fanInFanOut: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  baseModel: string | undefined;
}

/** One LoRA pair to merge into a base tensor. */
export interface LoraPair {
  /** The base tensor it merges into. */
  target: string;
  a: TensorInfo;
  b: TensorInfo;
  rank: number;
  /** lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, per module (rank_pattern, alpha_pattern). */
  scaling: number;
  /** The product is merged transposed: embeddings (lora_embedding_A is rank x vocab) and fan_in_fan_out layers. */
  transposed: boolean;
  /** An embedding LoRA: PEFT's Embedding.merge casts the update to the base's dtype before adding it. */
  embedding: boolean;
}

/** An adapter matched to a base: LoRA pairs, and whole tensors that replace the base's. */
export interface MatchedAdapter {
  source: string;
  config: LoraConfig;
  weights: ModelSource;
  /** By base tensor name. */
  pairs: Map<string, LoraPair>;
  /** Base tensor name -> the adapter's tensor that replaces it (modules_to_save, resized embeddings). */
  whole: Map<string, TensorInfo>;
  notes: string[];
}

/** PEFT types other than LoRA: their merge is another formula, so they are refused by name. */
const PEFT_TYPE_NAMES: Record<string, string> = {
  LOHA: "LoHa", LOKR: "LoKr", IA3: "IA3", ADALORA: "AdaLoRA", OFT: "OFT", BOFT: "BOFT", VERA: "VeRA", FOURIERFT: "FourierFT",
  PROMPT_TUNING: "prompt tuning", P_TUNING: "p-tuning", PREFIX_TUNING: "prefix tuning", ADAPTION_PROMPT: "adaption prompt", LN_TUNING: "LN tuning", XLORA: "X-LoRA",
};

/**
 * adapter_config.json, checked: a LoRA adapter whose merge is the plain
 * low-rank sum. Anything else is refused naming the field.
 */
export function readLoraConfig(raw: unknown, where: string): LoraConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new DeltaError(`${where}: not a JSON object`);
  const c = raw as Record<string, unknown>;
  const type = c.peft_type;
  if (type !== "LORA") {
    const named = typeof type === "string" ? (PEFT_TYPE_NAMES[type] ?? type) : String(type);
    throw new DeltaError(`${where}: peft_type ${JSON.stringify(type)} (${named}) is not a LoRA adapter; only peft_type "LORA" can be merged (its merge is another formula)`);
  }
  const refuse = (field: string, why: string): never => {
    throw new DeltaError(`${where}: ${field} ${JSON.stringify(c[field])}: ${why}; nothing was written`);
  };
  if (c.use_dora === true) refuse("use_dora", "DoRA adapters (a magnitude vector rescales each merged row) are not supported");
  if (c.lora_bias === true) refuse("lora_bias", "a LoRA bias merges into the layer's bias, which LLaMA layers do not have (PEFT refuses to merge it too)");
  if (c.bias !== undefined && c.bias !== null && c.bias !== "none") refuse("bias", "trained biases are saved beside the adapter and are not merged here");
  for (const field of ["use_qalora", "layer_replication", "trainable_token_indices", "megatron_config", "eva_config", "corda_config", "lora_ga_config", "target_parameters"]) {
    const value = c[field];
    if (value !== undefined && value !== null && value !== false && !(Array.isArray(value) && value.length === 0)) refuse(field, "this option changes what the merge does, and is not supported");
  }
  if (typeof c.init_lora_weights === "string" && /^(pissa|olora|corda|loftq|lora_ga)/i.test(c.init_lora_weights)) {
    refuse("init_lora_weights", "such an adapter was trained on a modified base (its residual), not on the base itself");
  }
  const r = c.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1) refuse("r", "the rank must be a positive integer");
  const alpha = c.lora_alpha;
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) refuse("lora_alpha", "must be a number");
  return {
    r: r as number,
    alpha: alpha as number,
    useRslora: c.use_rslora === true,
    fanInFanOut: c.fan_in_fan_out === true,
    rankPattern: numberMap(c.rank_pattern, "rank_pattern", where),
    alphaPattern: numberMap(c.alpha_pattern, "alpha_pattern", where),
    baseModel: typeof c.base_model_name_or_path === "string" ? c.base_model_name_or_path : undefined,
  };
}

function numberMap(value: unknown, field: string, where: string): Record<string, number> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw new DeltaError(`${where}: ${field} is not an object`);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new DeltaError(`${where}: ${field} "${k}" is not a number`);
    out[k] = v;
  }
  return out;
}

/**
 * PEFT's get_pattern_key: the first pattern key that matches the module
 * name as `re.match(rf"(.*\.)?({key})$", name)` does.
 */
function patternValue(pattern: Record<string, number>, module: string, fallback: number, field: string, where: string): number {
  for (const [key, value] of Object.entries(pattern)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(.*\\.)?(${key})$`, "s");
    } catch {
      throw new DeltaError(`${where}: ${field} key ${JSON.stringify(key)} is not a regular expression this tool can read`);
    }
    if (re.test(module)) return value;
  }
  return fallback;
}

const PREFIX = "base_model.model.";

/**
 * Matches every tensor of the adapter to the base: lora_A/lora_B pairs and
 * lora_embedding_A/B to the module's `.weight`; other tensors (modules_to_save,
 * resized embeddings) replace the base tensor of their name. An adapter
 * tensor that names no base tensor, a pair whose shapes do not fit, a rank
 * that is not the config's: refused, naming the tensor and both shapes.
 */
export function matchAdapter(weights: ModelSource, config: LoraConfig, base: ModelSource, where: string, transposeRule: "peft" | "config"): MatchedAdapter {
  const pairs = new Map<string, LoraPair>();
  const whole = new Map<string, TensorInfo>();
  const notes: string[] = [];
  const used = new Set<string>();
  let fanInFanOutIgnored = false;
  for (const t of weights.tensors.values()) {
    if (!t.name.startsWith(PREFIX)) throw new DeltaError(`${where}: tensor "${t.name}" is not named as PEFT names a model's parameters (base_model.model.*)`);
    if (!isArithmeticDType(t.dtype)) throw new DeltaError(`${where}: tensor "${t.name}" is ${t.dtype}; an adapter holds float tensors (a quantized adapter cannot be merged exactly)`);
  }
  for (const t of weights.tensors.values()) {
    const m = /^(.*)\.(lora_A\.weight|lora_embedding_A)$/.exec(t.name.slice(PREFIX.length));
    if (m === null) continue;
    const module = m[1]!;
    const embedding = m[2] === "lora_embedding_A";
    const bName = `${PREFIX}${module}.${embedding ? "lora_embedding_B" : "lora_B.weight"}`;
    const b = weights.tensors.get(bName);
    if (b === undefined) throw new DeltaError(`${where}: tensor "${t.name}" has no "${bName}" beside it`);
    used.add(t.name).add(bName);
    const target = `${module}.weight`;
    const w = base.tensors.get(target);
    if (w === undefined) throw new DeltaError(`${where}: tensor "${t.name}" adapts "${target}", which the base ${base.source} does not have: the adapter was made for another model`);
    if (t.shape.length !== 2 || b.shape.length !== 2) throw new DeltaError(`${where}: tensor "${t.name}" [${t.shape}] and "${bName}" [${b.shape}] are not matrices`);
    const rank = t.shape[0]!;
    if (b.shape[1] !== rank) throw new DeltaError(`${where}: "${bName}" [${b.shape}] does not multiply "${t.name}" [${t.shape}] (rank ${rank})`);
    if (t.dtype !== b.dtype) throw new DeltaError(`${where}: "${t.name}" is ${t.dtype} and "${bName}" ${b.dtype}; PEFT keeps both factors in one dtype`);
    const r = patternValue(config.rankPattern, module, config.r, "rank_pattern", where);
    if (r !== rank) throw new DeltaError(`${where}: tensor "${t.name}" has rank ${rank}, adapter_config.json says r = ${r} for ${module}: the scaling would be wrong`);
    const alpha = patternValue(config.alphaPattern, module, config.alpha, "alpha_pattern", where);
    const scaling = config.useRslora ? alpha / Math.sqrt(r) : alpha / r;
    // B @ A is [B rows, A cols]; the base weight must be that or, transposed, its transpose.
    const product = [b.shape[0]!, t.shape[1]!];
    let transposed: boolean;
    if (embedding) {
      transposed = true;
    } else if (transposeRule === "config") {
      transposed = config.fanInFanOut;
    } else {
      // PEFT sets fan_in_fan_out back to False for torch.nn.Linear (lora/model.py _create_new_module): LLaMA's
      // layers are Linear ([out, in] = B @ A). Only a Conv1D layer ([in, out]) merges transposed.
      transposed = config.fanInFanOut && !sameShape(w.shape, product);
      if (config.fanInFanOut && !transposed) fanInFanOutIgnored = true;
    }
    const expected = transposed ? [product[1]!, product[0]!] : product;
    const fits = sameShape(w.shape, expected) || (whole.has(target) || hasWhole(weights, module));
    if (!fits) {
      throw new DeltaError(`${where}: tensor "${t.name}" makes a [${expected}] update for "${target}", which is [${w.shape}] in the base ${base.source}: the adapter was made for another model`);
    }
    if (!isArithmeticDType(w.dtype)) throw new DeltaError(`base ${base.source}: tensor "${target}" is ${w.dtype}: a quantized base cannot be merged into; use the unquantized model`);
    pairs.set(target, { target, a: t, b, rank, scaling, transposed, embedding });
  }
  for (const t of weights.tensors.values()) {
    if (used.has(t.name)) continue;
    const rest = t.name.slice(PREFIX.length);
    if (/\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\b/.test(rest)) {
      throw new DeltaError(`${where}: tensor "${t.name}" has no partner (or is DoRA's magnitude vector, which is not supported)`);
    }
    // modules_to_save: <module>.modules_to_save.<param> (PEFT >= 0.14) or <module>.<param>; a saved
    // embedding layer (save_embedding_layers) of a targeted module: <module>.base_layer.<param>.
    const target = rest.replace(".modules_to_save.", ".").replace(".base_layer.", ".");
    const w = base.tensors.get(target);
    if (w === undefined) throw new DeltaError(`${where}: tensor "${t.name}" replaces "${target}", which the base ${base.source} does not have: the adapter was made for another model`);
    if (t.shape.length !== w.shape.length || t.shape.slice(1).some((d, i) => d !== w.shape[i + 1])) {
      throw new DeltaError(`${where}: tensor "${t.name}" [${t.shape}] cannot replace "${target}" [${w.shape}] of the base ${base.source}: the adapter was made for another model`);
    }
    if (!isArithmeticDType(w.dtype)) throw new DeltaError(`base ${base.source}: tensor "${target}" is ${w.dtype}: a quantized base cannot be merged into; use the unquantized model`);
    whole.set(target, t);
  }
  // With a whole tensor replacing the base's (a grown vocabulary), the pair must fit the replacement.
  for (const pair of pairs.values()) {
    const shape = whole.get(pair.target)?.shape ?? base.tensors.get(pair.target)!.shape;
    const product = pair.transposed ? [pair.a.shape[1]!, pair.b.shape[0]!] : [pair.b.shape[0]!, pair.a.shape[1]!];
    if (!sameShape(shape, product)) {
      throw new DeltaError(`${where}: tensor "${pair.a.name}" makes a [${product}] update for "${pair.target}", which is [${shape}]: the adapter was made for another model`);
    }
  }
  if (fanInFanOutIgnored) notes.push("adapter_config.json sets fan_in_fan_out, which PEFT turns off for Linear layers (every adapted layer here is one): merged untransposed, as PEFT does");
  return { source: where, config, weights, pairs, whole, notes };
}

function hasWhole(weights: ModelSource, module: string): boolean {
  return [`${PREFIX}${module}.weight`, `${PREFIX}${module}.modules_to_save.weight`, `${PREFIX}${module}.base_layer.weight`].some((n) => weights.tensors.has(n));
}
