/**
 * A LLaMA model written in Meta's original layout (`consolidated.0N.pth`, one
 * torch.save checkpoint per model-parallel rank, + `params.json` + the
 * tokenizer), byte for byte as Chinese-LLaMA-Alpaca's
 * `merge_llama_with_chinese_lora_low_mem.py --output_type pth` writes it (read
 * at ymcui/Chinese-LLaMA-Alpaca 25dba18c, `translate_state_dict_key`,
 * `unpermute`, `save_shards`, `merge_shards`):
 *   - keys renamed to Meta's, `rotary_emb.inv_freq` dropped, no `rope.freqs`;
 *   - wq and wk unpermuted from Hugging Face's rotary halves back to Meta's
 *     interleaved pairs: w.view(n_heads, 2, dim / n_heads / 2, dim)
 *     .transpose(1, 2).reshape(dim, dim);
 *   - several ranks: tok_embeddings, wo and w2 split along dim 1; w1, w3, wv,
 *     wq and wk along dim 0; output along dim 0, the last rank taking the
 *     remainder rows; norms in every rank; each split cloned (so each tensor
 *     owns its storage, contiguous: torch.save writes it alone);
 *   - key order: the script saves each base file's tensors as
 *     `L{i+1}-consolidated.0N.pth` (i: the file's place in sorted name order)
 *     and merges those in sorted() string order (L1, L10, L11, ..., L2), each
 *     in its state-dict order, which for a save_pretrained .bin is
 *     LlamaForCausalLM's module order (used whatever the file we read holds:
 *     a safetensors file lists its tensors in data order);
 *   - params.json: json.dump of {dim, multiple_of, n_heads, n_layers,
 *     norm_eps, vocab_size: -1}, Python's separators, no newline; the
 *     script's own table for the four LLaMA sizes (norm_eps 1e-06, 1e-05 for
 *     65B), the config's values for any other size.
 * Streaming: a block of rows at a time; a permuted tensor needs one head's
 * rows. A column split reads the whole tensor once per rank.
 */
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { ModelError } from "../errors.js";
import { dtypeBytes, type DType } from "../dtypes.js";
import type { ByteSink, OutputOptions } from "../formats/output-format.js";
import { CHUNK_BYTES } from "../limits.js";
import type { OnProgress } from "../progress.js";
import { PytorchWriter } from "../pytorch/writer.js";
import { pythonFloatOrInt } from "./python-json.js";
import type { ModelSource } from "./types.js";

/** The script's emb_to_model_size, num_shards_of_models and params_of_models, by hidden size. */
const KNOWN_SIZES: ReadonlyMap<number, { ranks: number; heads: number; layers: number; normEps: number }> = new Map([
  [4096, { ranks: 1, heads: 32, layers: 32, normEps: 1e-6 }],
  [5120, { ranks: 2, heads: 40, layers: 40, normEps: 1e-6 }],
  [6656, { ranks: 4, heads: 52, layers: 60, normEps: 1e-6 }],
  [8192, { ranks: 8, heads: 64, layers: 80, normEps: 1e-5 }],
]);

const MULTIPLE_OF = 256;
/** Dtypes a Meta checkpoint holds (Meta's own are float16; LLaMA-2's bfloat16). */
const META_DTYPES: readonly DType[] = ["F16", "BF16", "F32"];
const MAX_CONFIG_BYTES = 1024 * 1024;
/** The tokenizer files LlamaTokenizer.save_pretrained writes, copied when the model has them. */
export const META_OUTPUT_TOKENIZER_FILES = ["tokenizer.model", "special_tokens_map.json", "tokenizer_config.json", "added_tokens.json"] as const;

/** How an output tensor is cut from its source: whole, or [begin, end) along an axis. */
export interface MetaOutputTensor {
  /** Meta's name. */
  name: string;
  /** The Hugging Face tensor it comes from. */
  source: string;
  dtype: DType;
  shape: number[];
  cut?: { axis: 0 | 1; begin: number; end: number };
  /** wq, wk: rows per head, within which Hugging Face's halves go back to interleaved pairs. */
  permuteHeadRows?: number;
}

export interface MetaOutputPlan {
  ranks: number;
  /** consolidated.00.pth ...: each rank's tensors in the order the script's dict holds them. */
  files: { name: string; tensors: MetaOutputTensor[] }[];
  paramsJson: string;
  /** The tokenizer files the model has, copied as they are. */
  companions: string[];
}

interface LlamaShape {
  hidden: number;
  heads: number;
  layers: number;
  intermediate: number;
  vocab: number;
  normEps: number;
}

/** Meta's rule (and the script's params): multiple_of * ceil(int(2 * 4 * dim / 3) / multiple_of). */
export function metaIntermediateSize(dim: number, multipleOf = MULTIPLE_OF): number {
  const hidden = Math.floor((8 * dim) / 3);
  return multipleOf * Math.ceil(hidden / multipleOf);
}

/** The rank count the script uses for this hidden size (1 for a size it does not know). */
export function defaultMetaRanks(hidden: number): number {
  return KNOWN_SIZES.get(hidden)?.ranks ?? 1;
}

function positiveInt(where: string, config: Record<string, unknown>, key: string): number {
  const v = config[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw new ModelError(`${where}: "${key}" must be a positive integer for Meta's layout, got ${JSON.stringify(v) ?? "nothing"}`);
  return v;
}

/** The config's LLaMA shape; anything Meta's LLaMA-1 layout cannot describe is refused by name. */
export function llamaShapeOf(where: string, config: unknown, vocab: number): LlamaShape {
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new ModelError(`${where} is not a JSON object`);
  const c = config as Record<string, unknown>;
  const architectures = Array.isArray(c.architectures) ? c.architectures : [];
  if (c.model_type !== "llama" && !architectures.includes("LlamaForCausalLM")) {
    throw new ModelError(`${where}: model_type ${JSON.stringify(c.model_type) ?? "missing"} is not llama: Meta's layout holds LLaMA models only`);
  }
  const hidden = positiveInt(where, c, "hidden_size");
  const heads = positiveInt(where, c, "num_attention_heads");
  const layers = positiveInt(where, c, "num_hidden_layers");
  const intermediate = positiveInt(where, c, "intermediate_size");
  const kv = c.num_key_value_heads;
  if (kv !== undefined && kv !== null && kv !== heads) {
    throw new ModelError(`${where}: num_key_value_heads ${JSON.stringify(kv)} differs from num_attention_heads ${heads}: the script's Meta layout (LLaMA-1 params, square wk and wv) has no grouped-query attention`);
  }
  if (hidden % heads !== 0 || (hidden / heads) % 2 !== 0) throw new ModelError(`${where}: hidden_size ${hidden} is not ${heads} heads of an even size`);
  const expected = metaIntermediateSize(hidden);
  if (intermediate !== expected) {
    throw new ModelError(`${where}: intermediate_size ${intermediate} is not what params.json (dim ${hidden}, multiple_of ${MULTIPLE_OF}) gives, ${expected}: Meta's loader would build another model`);
  }
  for (const key of ["rope_scaling", "attention_bias", "mlp_bias"] as const) {
    const v = c[key];
    if (v !== undefined && v !== null && v !== false) throw new ModelError(`${where}: ${key} ${JSON.stringify(v)} cannot be written in Meta's LLaMA layout`);
  }
  const eps = c.rms_norm_eps ?? 1e-6;
  if (typeof eps !== "number" || !(eps > 0)) throw new ModelError(`${where}: "rms_norm_eps" must be a positive number`);
  return { hidden, heads, layers, intermediate, vocab, normEps: eps };
}

/** params.json as the script's json.dump(params, f) writes it. */
export function metaParamsJson(shape: LlamaShape): string {
  const known = KNOWN_SIZES.get(shape.hidden);
  const normEps = known !== undefined && known.heads === shape.heads && known.layers === shape.layers ? known.normEps : shape.normEps;
  return `{"dim": ${shape.hidden}, "multiple_of": ${MULTIPLE_OF}, "n_heads": ${shape.heads}, "n_layers": ${shape.layers}, "norm_eps": ${pythonFloatOrInt(normEps)}, "vocab_size": -1}`;
}

type Split = "dim0" | "dim1" | "output" | "replicated";

/** translate_state_dict_key, with how save_shards splits each key across ranks and the shape it must have; undefined: dropped. */
function translateKey(name: string, s: LlamaShape): { meta: string; split: Split; shape: number[]; permute: boolean } | undefined {
  const { hidden: h, intermediate: i, vocab: v } = s;
  if (name === "model.embed_tokens.weight") return { meta: "tok_embeddings.weight", split: "dim1", shape: [v, h], permute: false };
  if (name === "model.norm.weight") return { meta: "norm.weight", split: "replicated", shape: [h], permute: false };
  if (name === "lm_head.weight") return { meta: "output.weight", split: "output", shape: [v, h], permute: false };
  const layer = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  if (layer === null) return { meta: "", split: "replicated", shape: [], permute: false };
  const [, n, rest] = layer;
  if (Number(n) >= s.layers || String(Number(n)) !== n) return { meta: "", split: "replicated", shape: [], permute: false };
  const at = (what: string) => `layers.${n}.${what}`;
  switch (rest) {
    case "self_attn.q_proj.weight": return { meta: at("attention.wq.weight"), split: "dim0", shape: [h, h], permute: true };
    case "self_attn.k_proj.weight": return { meta: at("attention.wk.weight"), split: "dim0", shape: [h, h], permute: true };
    case "self_attn.v_proj.weight": return { meta: at("attention.wv.weight"), split: "dim0", shape: [h, h], permute: false };
    case "self_attn.o_proj.weight": return { meta: at("attention.wo.weight"), split: "dim1", shape: [h, h], permute: false };
    case "mlp.gate_proj.weight": return { meta: at("feed_forward.w1.weight"), split: "dim0", shape: [i, h], permute: false };
    case "mlp.down_proj.weight": return { meta: at("feed_forward.w2.weight"), split: "dim1", shape: [h, i], permute: false };
    case "mlp.up_proj.weight": return { meta: at("feed_forward.w3.weight"), split: "dim0", shape: [i, h], permute: false };
    case "input_layernorm.weight": return { meta: at("attention_norm.weight"), split: "replicated", shape: [h], permute: false };
    case "post_attention_layernorm.weight": return { meta: at("ffn_norm.weight"), split: "replicated", shape: [h], permute: false };
    case "self_attn.rotary_emb.inv_freq": return undefined;
    default: return { meta: "", split: "replicated", shape: [], permute: false };
  }
}

/** The script's L-file name for the i-th base file (sorted name order) and rank r: merge_shards orders by it. */
function layerFileKey(index: number): string {
  return `L${index + 1}-consolidated`;
}

/**
 * Every refusal (architecture, shapes, dtypes, rank count), then the files
 * and the order of their tensors. `ranks` undefined: the script's count for
 * the size.
 */
export function planMetaOutput(where: string, model: Pick<ModelSource, "tensors" | "weightFiles">, config: unknown, ranks: number | undefined, companions: string[] = []): MetaOutputPlan {
  const embed = model.tensors.get("model.embed_tokens.weight");
  if (embed === undefined || embed.shape.length !== 2) throw new ModelError(`${where} has no model.embed_tokens.weight matrix: Meta's layout holds LLaMA models only`);
  const shape = llamaShapeOf(`${where}: config.json`, config, embed.shape[0]!);
  const n = ranks ?? defaultMetaRanks(shape.hidden);
  checkRanks(where, shape, n);
  const seen = new Set<string>();
  const planned: { t: MetaOutputTensor[]; file: string }[] = [];
  for (const info of model.tensors.values()) {
    const key = translateKey(info.name, shape);
    if (key === undefined) continue;
    if (key.meta === "") throw new ModelError(`${where}: tensor "${info.name}" has no name in Meta's LLaMA layout (translate_state_dict_key would raise)`);
    if (info.shape.length !== key.shape.length || info.shape.some((d, k) => d !== key.shape[k])) {
      throw new ModelError(`${where}: tensor "${info.name}" is [${info.shape.join(", ")}], config.json makes it [${key.shape.join(", ")}]`);
    }
    if (!META_DTYPES.includes(info.dtype)) throw new ModelError(`${where}: tensor "${info.name}" is ${info.dtype}: Meta's layout holds float16, bfloat16 or float32 weights`);
    seen.add(info.name);
    const base = { name: key.meta, source: info.name, dtype: info.dtype, ...(key.permute ? { permuteHeadRows: shape.hidden / shape.heads } : {}) };
    const perRank: MetaOutputTensor[] = [];
    for (let r = 0; r < n; r++) {
      if (n === 1 || key.split === "replicated") {
        perRank.push({ ...base, shape: [...info.shape] });
        continue;
      }
      const axis = key.split === "dim1" ? 1 : 0;
      const size = info.shape[axis]!;
      let begin: number, end: number;
      if (key.split === "output") {
        const step = Math.floor(size / n);
        begin = r * step;
        end = r === n - 1 ? size : begin + step;
      } else {
        begin = (r * size) / n;
        end = ((r + 1) * size) / n;
      }
      const cutShape = [...info.shape];
      cutShape[axis] = end - begin;
      perRank.push({ ...base, shape: cutShape, cut: { axis, begin, end } });
    }
    planned.push({ t: perRank, file: info.file });
  }
  const missing = [...expectedNames(shape)].find((name) => !seen.has(name));
  if (missing !== undefined) throw new ModelError(`${where} has no tensor "${missing}", which Meta's layout needs`);

  // merge_shards: the base files' L-files in sorted() order, each in its state-dict order: the order save_pretrained
  // wrote its .bin in (LlamaForCausalLM's modules), whatever order the file we read holds (safetensors: data order).
  const fileOrder = [...model.weightFiles].sort();
  const groupKey = (file: string) => layerFileKey(fileOrder.indexOf(file));
  const groups = [...new Set(planned.map((p) => p.file))].sort((a, b) => (groupKey(a) < groupKey(b) ? -1 : groupKey(a) > groupKey(b) ? 1 : 0));
  const byModule = (a: { source: string }, b: { source: string }) => {
    const [x, y] = [moduleOrder(a.source), moduleOrder(b.source)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  };
  const files = Array.from({ length: n }, (_, r) => ({
    name: `consolidated.${String(r).padStart(2, "0")}.pth`,
    tensors: groups.flatMap((g) => planned.filter((p) => p.file === g).map((p) => p.t[r]!).sort(byModule)),
  }));
  return { ranks: n, files, paramsJson: metaParamsJson(shape), companions };
}

/** LlamaDecoderLayer's parameters in registration order (attention q k v o, mlp gate down up, the norms). */
const LAYER_ORDER = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"];

/** A Hugging Face LLaMA tensor's place in LlamaForCausalLM.state_dict(): embeddings, layers in order, norm, lm_head. */
function moduleOrder(name: string): [number, number, number] {
  if (name === "model.embed_tokens.weight") return [0, 0, 0];
  if (name === "model.norm.weight") return [2, 0, 0];
  if (name === "lm_head.weight") return [3, 0, 0];
  const layer = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  return [1, Number(layer?.[1] ?? 0), LAYER_ORDER.indexOf(layer?.[2] ?? "")];
}

function* expectedNames(s: LlamaShape): Iterable<string> {
  yield "model.embed_tokens.weight";
  for (let l = 0; l < s.layers; l++) {
    for (const part of LAYER_ORDER) yield `model.layers.${l}.${part}`;
  }
  yield "model.norm.weight";
  yield "lm_head.weight";
}

/**
 * The refusals config.json decides (architecture, sizes, rank count), from
 * the first of `dirs` that holds one: apply-delta says them before it
 * recovers anything. The vocabulary is the config's (an adapter may grow it;
 * only the rank split's checks need it here).
 */
export async function checkMetaConfig(dirs: readonly string[], label: string, ranks: number | undefined): Promise<void> {
  for (const dir of dirs) {
    const path = join(dir, "config.json");
    let text: string;
    try {
      if ((await stat(path)).size > MAX_CONFIG_BYTES) throw new ModelError(`${path} is larger than a config file is read with (${MAX_CONFIG_BYTES} bytes)`);
      text = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    let config: unknown;
    try {
      config = JSON.parse(text) as unknown;
    } catch (err) {
      throw new ModelError(`${path} is not valid JSON: ${(err as Error).message}`);
    }
    const vocab = typeof (config as { vocab_size?: unknown }).vocab_size === "number" ? (config as { vocab_size: number }).vocab_size : 1;
    const shape = llamaShapeOf(`${label}: ${path}`, config, vocab);
    checkRanks(`${label}: ${path}`, shape, ranks ?? defaultMetaRanks(shape.hidden));
    return;
  }
}

function checkRanks(where: string, shape: LlamaShape, n: number): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > 99) throw new ModelError(`--num-shards ${n}: Meta's layout has 1 to 99 ranks (consolidated.00.pth ...)`);
  const divides = (what: string, size: number) => {
    if (size % n !== 0) throw new ModelError(`${where}: ${n} ranks do not divide ${what} (${size}): choose --num-shards among its divisors`);
  };
  divides("the hidden size", shape.hidden);
  divides("the attention heads", shape.heads);
  divides("the intermediate size", shape.intermediate);
  if (shape.vocab < n) throw new ModelError(`${where}: ${shape.vocab} vocabulary rows cannot be split over ${n} ranks`);
}

/** config.json of the model, read whole (small). */
export async function readModelConfig(model: ModelSource): Promise<unknown> {
  if (!model.extraFiles.includes("config.json")) throw new ModelError(`${model.source} has no config.json: Meta's layout needs the model's hyperparameters (params.json)`);
  const path = join(model.root, "config.json");
  if ((await stat(path)).size > MAX_CONFIG_BYTES) throw new ModelError(`${path} is larger than a config file is read with (${MAX_CONFIG_BYTES} bytes)`);
  try {
    return JSON.parse(await readFile(path, "utf8")) as unknown;
  } catch (err) {
    throw new ModelError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** The plan for `model` with the options given. */
export async function prepareMetaOutput(model: ModelSource, options: OutputOptions): Promise<MetaOutputPlan> {
  const config = await readModelConfig(model);
  const companions = META_OUTPUT_TOKENIZER_FILES.filter((f) => model.extraFiles.includes(f));
  return planMetaOutput(model.source, model, config, options.numShards, companions);
}

async function readBytes(model: ModelSource, name: string, start: number, end: number): Promise<Uint8Array> {
  const out = new Uint8Array(end - start);
  let at = 0;
  for await (const chunk of model.readTensor(name, { start, end, chunkBytes: CHUNK_BYTES })) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** The output tensor's bytes, in chunks: a block of rows (or one head's rows) at a time. */
export async function* metaTensorChunks(model: ModelSource, t: MetaOutputTensor): AsyncIterable<Uint8Array> {
  const info = model.tensors.get(t.source);
  if (info === undefined) throw new ModelError(`${model.source} has no tensor "${t.source}"`);
  const cols = info.shape.length === 2 ? info.shape[1]! : 1;
  const rowBytes = cols * dtypeBytes(info.dtype);
  const rows = info.shape.length === 2 ? info.shape[0]! : info.shape[0] ?? 1;
  const [rowBegin, rowEnd] = t.cut?.axis === 0 ? [t.cut.begin, t.cut.end] : [0, rows];
  if (t.permuteHeadRows !== undefined) {
    const hd = t.permuteHeadRows;
    const half = hd / 2;
    for (let head = rowBegin / hd; head < rowEnd / hd; head++) {
      const block = await readBytes(model, t.source, head * hd * rowBytes, (head + 1) * hd * rowBytes);
      const out = new Uint8Array(block.length);
      // Meta's row 2i + j is Hugging Face's row j * hd / 2 + i.
      for (let i = 0; i < half; i++) {
        for (let j = 0; j < 2; j++) out.set(block.subarray((j * half + i) * rowBytes, (j * half + i + 1) * rowBytes), (2 * i + j) * rowBytes);
      }
      yield out;
    }
    return;
  }
  if (t.cut?.axis === 1) {
    const elem = dtypeBytes(info.dtype);
    const [c0, c1] = [t.cut.begin * elem, t.cut.end * elem];
    const width = c1 - c0;
    const blockRows = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
    for (let r = 0; r < rows; r += blockRows) {
      const n = Math.min(blockRows, rows - r);
      const block = await readBytes(model, t.source, r * rowBytes, (r + n) * rowBytes);
      const out = new Uint8Array(n * width);
      for (let k = 0; k < n; k++) out.set(block.subarray(k * rowBytes + c0, k * rowBytes + c1), k * width);
      yield out;
    }
    return;
  }
  yield* model.readTensor(t.source, { start: rowBegin * rowBytes, end: rowEnd * rowBytes, chunkBytes: CHUNK_BYTES });
}

/** One rank's checkpoint: torch.save of the script's dict (each tensor its own storage). */
export async function writeMetaRank(model: ModelSource, file: MetaOutputPlan["files"][number], sink: ByteSink, label: string, onProgress?: OnProgress): Promise<void> {
  const writer = new PytorchWriter(sink, label, file.tensors, { container: "dict" });
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  for (const placed of writer.tensors) {
    const t = byName.get(placed.name)!;
    await writer.writeTensor(placed.name, tapProgress(metaTensorChunks(model, t), t.name, onProgress));
  }
  await writer.finish();
}

async function* tapProgress(chunks: AsyncIterable<Uint8Array>, label: string, onProgress: OnProgress | undefined): AsyncIterable<Uint8Array> {
  for await (const chunk of chunks) {
    onProgress?.({ kind: "advance", phase: "convert", bytes: chunk.length, label });
    yield chunk;
  }
}

/** The rank file's size, known before it is written. */
export function metaRankSize(file: MetaOutputPlan["files"][number], label: string): number {
  return new PytorchWriter({ write: async () => {} }, label, file.tensors, { container: "dict" }).fileSize;
}
