/**
 * Meta's original LLaMA release (`consolidated.0N.pth`, one file per
 * model-parallel rank, + `params.json` + `tokenizer.model`) read as
 * transformers' `convert_llama_weights_to_hf.py` converts it: which Hugging
 * Face tensor comes from which Meta tensor, along which axis the ranks are
 * concatenated, which rows the rotary permutation moves, and the files the
 * script writes beside the weights. Pure: no file system.
 *
 * Read from the script as transformers 4.28-4.30 shipped it (the conversion
 * every published delta assumes), `write_model()`:
 *   - one rank: the tensors renamed; several: norms from rank 0;
 *     wq/wk/wv viewed per head and concatenated along dim 0; wo, w2 and
 *     tok_embeddings along dim 1; w1, w3 and output along dim 0;
 *   - wq and wk permuted: w.view(n_heads, dim / n_heads / 2, 2, dim)
 *     .transpose(1, 2).reshape(dim, dim) (Meta's interleaved rotary pairs
 *     to Hugging Face's two halves);
 *   - rope.freqs never read; every tensor loaded back with
 *     torch_dtype=float16, so written as float16.
 * Later versions of the script (4.31+) add grouped-query attention (wk
 * permuted with n_kv_heads heads of the same size, wv viewed with n_kv_heads
 * per rank) and ffn_dim_multiplier; both are followed here. Since 4.31 the
 * per-layer rotary_emb.inv_freq buffers are no longer written (4.28-4.30
 * wrote them): they are left out, as transformers computes them. The latest
 * versions load in bfloat16 instead of float16: not followed (every delta
 * was made against a float16 conversion).
 */
import { ModelError } from "../errors.js";
import { dtypeBytes, isArithmeticDType, type DType, type FloatDType } from "../dtypes.js";
import { META_FILES, metaPartName } from "../formats/weight-files.js";
import { PythonInt, pythonJsonDumps, type PythonJsonValue } from "./python-json.js";

/** Meta's per-rank weight files. */
export const META_SHARD_PATTERN = META_FILES.part;
export const META_PARAMS_FILE = META_FILES.params;
export const META_TOKENIZER_FILE = "tokenizer.model";

/** The transformers version whose output files are written (the conversion the April-2023 deltas were made against). */
export const CONVERTER_TRANSFORMERS_VERSION = "4.28.1";

/** transformers' save_pretrained default in 4.28 ("10GB" = 10 * 10**9 bytes): 7B in 2 shards, 13B in 3. */
export const CONVERTER_MAX_SHARD_BYTES = 10 * 10 ** 9;

export interface MetaParams {
  dim: number;
  nLayers: number;
  nHeads: number;
  /** n_kv_heads when given (grouped-query attention), else n_heads. */
  nKvHeads: number;
  normEps: number;
  multipleOf: number;
  ffnDimMultiplier?: number;
  /** LLaMA-2's params (n_kv_heads, ffn_dim_multiplier, or norm_eps 1e-5): its context length is 4096. */
  llama2: boolean;
}

/** How one Hugging Face tensor is made from the ranks' tensors. */
export interface MetaTensorPlan {
  /** The Hugging Face name. */
  name: string;
  /** Always F16 (the script's from_pretrained(torch_dtype=float16)). */
  dtype: DType;
  shape: number[];
  byteLength: number;
  /** The Meta name, the same in every rank. */
  source: string;
  /** The ranks' dtype (every rank the same). */
  sourceDtype: FloatDType;
  /** "rows": ranks stacked along dim 0; "cols": along dim 1; "rank0": rank 0's tensor alone (norms). */
  join: "rows" | "cols" | "rank0";
  /** For wq/wk: the rows of one head (head_dim), within which the rotary permutation moves rows. */
  permuteHeadRows?: number;
}

export interface MetaPlan {
  params: MetaParams;
  ranks: number;
  tensors: MetaTensorPlan[];
  intermediateSize: number;
  vocabSize: number;
}

/** Reads params.json (`path` for messages): the fields the conversion uses, checked. */
export function parseMetaParams(path: string, text: string): MetaParams {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ModelError(`${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ModelError(`${path} is not a JSON object`);
  // Some releases nest the parameters under "model" (the script reads params.get("model", params)).
  const obj = ("model" in raw && typeof (raw as { model: unknown }).model === "object" ? (raw as { model: object }).model : raw) as Record<string, unknown>;
  const int = (key: string, fallback?: number): number => {
    const v = obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw new ModelError(`${path}: "${key}" must be a positive integer, got ${JSON.stringify(v) ?? "nothing"}`);
    return v;
  };
  const dim = int("dim");
  const nLayers = int("n_layers");
  const nHeads = int("n_heads");
  const hasKv = obj.n_kv_heads !== undefined && obj.n_kv_heads !== null;
  const nKvHeads = hasKv ? int("n_kv_heads") : nHeads;
  const multipleOf = int("multiple_of", 256);
  const normEps = obj.norm_eps;
  if (typeof normEps !== "number" || !(normEps > 0)) throw new ModelError(`${path}: "norm_eps" must be a positive number`);
  const mult = obj.ffn_dim_multiplier;
  if (mult !== undefined && mult !== null && (typeof mult !== "number" || !(mult > 0))) throw new ModelError(`${path}: "ffn_dim_multiplier" must be a positive number`);
  if (dim % nHeads !== 0 || (dim / nHeads) % 2 !== 0) throw new ModelError(`${path}: dim ${dim} is not n_heads ${nHeads} heads of an even size`);
  if (nHeads % nKvHeads !== 0) throw new ModelError(`${path}: n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  return {
    dim,
    nLayers,
    nHeads,
    nKvHeads,
    normEps,
    multipleOf,
    ...(typeof mult === "number" ? { ffnDimMultiplier: mult } : {}),
    llama2: hasKv || typeof mult === "number" || normEps === 1e-5,
  };
}

/**
 * The script's intermediate size: multiple_of * ceil(int(ffn_dim_multiplier
 * * int(8 * dim / 3)) / multiple_of) (4.31+; 4.28's
 * int(ceil(dim * 8 / 3) + 255) // 256 * 256 gives the same for every LLaMA-1 size).
 */
export function intermediateSize(params: MetaParams): number {
  const base = Math.floor((8 * params.dim) / 3);
  const hidden = params.ffnDimMultiplier === undefined ? base : Math.floor(params.ffnDimMultiplier * base);
  return params.multipleOf * Math.floor((hidden + params.multipleOf - 1) / params.multipleOf);
}

interface RankTensor {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

/**
 * Plans every Hugging Face tensor from the ranks' tensor lists (rank order),
 * checking that the ranks are one model split as Meta splits it and that it
 * agrees with params.json. `where` names the directory in messages.
 */
export function planMetaTensors(where: string, params: MetaParams, ranks: readonly (readonly RankTensor[])[]): MetaPlan {
  const n = ranks.length;
  const { dim, nHeads, nKvHeads, nLayers } = params;
  const headDim = dim / nHeads;
  const kvDim = headDim * nKvHeads;
  if (nHeads % n !== 0 || nKvHeads % n !== 0) {
    throw new ModelError(`${where}: ${n} model-parallel files cannot split ${nHeads} heads (${nKvHeads} key/value heads) evenly: files are missing or extra`);
  }
  const byRank = ranks.map((tensors) => new Map(tensors.map((t) => [t.name, t])));
  const rank0 = byRank[0]!;
  const embeddings = rank0.get("tok_embeddings.weight");
  if (embeddings === undefined || embeddings.shape.length !== 2) throw new ModelError(`${where}: consolidated.00.pth has no 2-D tensor "tok_embeddings.weight": not a LLaMA checkpoint`);
  const vocabSize = embeddings.shape[0]!;
  // Each rank holds dim / ranks embedding columns: a rank file missing (or one too many) shows here first.
  if (embeddings.shape[1]! * n !== dim) {
    const split = dim / embeddings.shape[1]!;
    throw new ModelError(Number.isInteger(split)
      ? `${where}: tok_embeddings.weight in consolidated.00.pth holds ${embeddings.shape[1]} of dim ${dim} columns, so the checkpoint has ${split} model-parallel files, but ${n} are there`
      : `${where}: tok_embeddings.weight in consolidated.00.pth holds ${embeddings.shape[1]} columns, which does not divide params.json's dim ${dim}`);
  }
  const ffn = intermediateSize(params);
  const w1 = rank0.get("layers.0.feed_forward.w1.weight");
  if (w1 !== undefined && w1.shape[0]! * n !== ffn) {
    throw new ModelError(`${where}: layers.0.feed_forward.w1.weight has ${w1.shape[0]! * n} rows over ${n} file(s), but params.json gives an intermediate size of ${ffn} (multiple_of ${params.multipleOf}${params.ffnDimMultiplier === undefined ? "" : `, ffn_dim_multiplier ${params.ffnDimMultiplier}`}): the conversion would write a config that does not fit the weights`);
  }

  const tensors: MetaTensorPlan[] = [];
  const used = new Set<string>();
  const add = (name: string, source: string, join: MetaTensorPlan["join"], shape: number[], permuteHeadRows?: number) => {
    used.add(source);
    // The shape each rank must hold.
    const part = join === "rows" ? [shape[0]! / n, shape[1]!] : join === "cols" ? [shape[0]!, shape[1]! / n] : shape;
    let sourceDtype: DType | undefined;
    byRank.forEach((tensorsOfRank, r) => {
      const t = tensorsOfRank.get(source);
      const file = metaPartName(r);
      if (t === undefined) throw new ModelError(`${where}: ${file} has no tensor "${source}" (needed for ${name})`);
      if (t.shape.length !== part.length || t.shape.some((d, i) => d !== part[i])) {
        throw new ModelError(`${where}: ${file} tensor "${source}" has shape [${t.shape.join(", ")}], but params.json and ${n} file(s) give [${part.join(", ")}]`);
      }
      if (!isArithmeticDType(t.dtype) || t.dtype === "F64") throw new ModelError(`${where}: ${file} tensor "${source}" is ${t.dtype}, not a float16, bfloat16 or float32 weight`);
      if (sourceDtype !== undefined && t.dtype !== sourceDtype) throw new ModelError(`${where}: tensor "${source}" is ${sourceDtype} in consolidated.00.pth but ${t.dtype} in ${file}`);
      sourceDtype = t.dtype;
    });
    const numel = shape.reduce((a, b) => a * b, 1);
    tensors.push({
      name,
      dtype: "F16",
      shape,
      byteLength: numel * dtypeBytes("F16"),
      source,
      sourceDtype: sourceDtype as FloatDType,
      join,
      ...(permuteHeadRows === undefined ? {} : { permuteHeadRows }),
    });
  };

  if (vocabSize % n !== 0) throw new ModelError(`${where}: a vocabulary of ${vocabSize} rows cannot be split over ${n} files`);
  // LlamaForCausalLM's state-dict order: embeddings, each layer (attention q k v o, mlp gate down up, norms), norm, lm_head.
  add("model.embed_tokens.weight", "tok_embeddings.weight", n === 1 ? "rows" : "cols", [vocabSize, dim]);
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const m = `layers.${i}`;
    add(`${p}.self_attn.q_proj.weight`, `${m}.attention.wq.weight`, "rows", [dim, dim], headDim);
    add(`${p}.self_attn.k_proj.weight`, `${m}.attention.wk.weight`, "rows", [kvDim, dim], headDim);
    add(`${p}.self_attn.v_proj.weight`, `${m}.attention.wv.weight`, "rows", [kvDim, dim]);
    add(`${p}.self_attn.o_proj.weight`, `${m}.attention.wo.weight`, "cols", [dim, dim]);
    add(`${p}.mlp.gate_proj.weight`, `${m}.feed_forward.w1.weight`, "rows", [ffn, dim]);
    add(`${p}.mlp.down_proj.weight`, `${m}.feed_forward.w2.weight`, "cols", [dim, ffn]);
    add(`${p}.mlp.up_proj.weight`, `${m}.feed_forward.w3.weight`, "rows", [ffn, dim]);
    add(`${p}.input_layernorm.weight`, `${m}.attention_norm.weight`, "rank0", [dim]);
    add(`${p}.post_attention_layernorm.weight`, `${m}.ffn_norm.weight`, "rank0", [dim]);
  }
  add("model.norm.weight", "norm.weight", "rank0", [dim]);
  add("lm_head.weight", "output.weight", "rows", [vocabSize, dim]);

  // rope.freqs is the script's only omission; anything else unknown means another model than the one params.json describes.
  byRank.forEach((tensorsOfRank, r) => {
    for (const name of tensorsOfRank.keys()) {
      if (!used.has(name) && name !== "rope.freqs") {
        throw new ModelError(`${where}: ${metaPartName(r)} holds tensor "${name}", which a LLaMA checkpoint of ${nLayers} layers has not: params.json does not describe these weights`);
      }
    }
  });
  return { params, ranks: n, tensors, intermediateSize: ffn, vocabSize };
}

/**
 * The row of the unpermuted (rank-concatenated) matrix that lands in row
 * `row` of the permuted one. Within each head of `headRows` rows, the
 * permutation view(heads, headRows / 2, 2, cols).transpose(1, 2) puts
 * output row j * headRows / 2 + i at input row 2 * i + j.
 */
export function permutedSourceRow(row: number, headRows: number): number {
  const half = headRows / 2;
  const head = Math.floor(row / headRows);
  const within = row - head * headRows;
  const j = within >= half ? 1 : 0;
  const i = within - j * half;
  return head * headRows + 2 * i + j;
}

/**
 * The files the script writes beside the weights, byte for byte as
 * transformers 4.28's save_pretrained writes them (json.dumps, indent 2,
 * sorted keys, a final newline): config.json (LlamaConfig's differences from
 * the defaults, as to_json_string(use_diff=True) gives them),
 * generation_config.json (GenerationConfig.from_model_config) and the slow
 * LlamaTokenizer's tokenizer_config.json and special_tokens_map.json.
 * The vocabulary size is the embeddings' (4.28 wrote LlamaConfig's default,
 * 32000, the same for every LLaMA-1 size; later versions pass it).
 */
export function convertedCompanionFiles(plan: MetaPlan): Map<string, string> {
  const { params } = plan;
  const version = CONVERTER_TRANSFORMERS_VERSION;
  const config: Record<string, PythonJsonValue> = {
    architectures: ["LlamaForCausalLM"],
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    hidden_size: params.dim,
    initializer_range: 0.02,
    intermediate_size: plan.intermediateSize,
    max_position_embeddings: params.llama2 ? 4096 : 2048,
    model_type: "llama",
    num_attention_heads: params.nHeads,
    num_hidden_layers: params.nLayers,
    pad_token_id: 0,
    rms_norm_eps: params.normEps,
    tie_word_embeddings: false,
    torch_dtype: "float16",
    transformers_version: version,
    use_cache: true,
    vocab_size: plan.vocabSize,
  };
  // Grouped-query attention came with transformers 4.31, which writes the key/value head count.
  if (params.nKvHeads !== params.nHeads) config.num_key_value_heads = params.nKvHeads;
  const generation = { _from_model_config: true, bos_token_id: 1, eos_token_id: 2, pad_token_id: 0, transformers_version: version };
  const token = (content: string, typed: boolean): Record<string, PythonJsonValue> => ({
    ...(typed ? { __type: "AddedToken" } : {}),
    content,
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  });
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: token("<s>", true),
    clean_up_tokenization_spaces: false,
    eos_token: token("</s>", true),
    // A tokenizer made from a file, not from_pretrained of a known name, gets VERY_LARGE_INTEGER = int(1e30).
    model_max_length: new PythonInt("1000000000000000019884624838656"),
    pad_token: null,
    sp_model_kwargs: {},
    tokenizer_class: "LlamaTokenizer",
    unk_token: token("<unk>", true),
  };
  const specialTokens = { bos_token: token("<s>", false), eos_token: token("</s>", false), unk_token: token("<unk>", false) };
  return new Map([
    ["config.json", pythonJsonDumps(config) + "\n"],
    ["generation_config.json", pythonJsonDumps(generation) + "\n"],
    ["special_tokens_map.json", pythonJsonDumps(specialTokens) + "\n"],
    ["tokenizer_config.json", pythonJsonDumps(tokenizerConfig) + "\n"],
  ]);
}
