/**
 * What llama.cpp's convert_hf_to_gguf.py (LlamaModel, its TextModel and
 * ModelBase, and gguf-py's SpecialVocab) writes for a LLaMA-family model with
 * a SentencePiece tokenizer: the metadata, in the converter's order, and the
 * tensor table (names, types, which rows are permuted). Pure: parsed files
 * in, a plan out. Anything it does not write the same way is refused by name
 * before any output.
 */
import { ModelError } from "../errors.js";
import type { DType } from "../dtypes.js";
import { GGML_QUANT_VERSION, type GgmlType, type GgufMetadata, type GgufValue } from "./format.js";
import { CONVERTIBLE_DTYPES } from "./quantize.js";
import { PieceType, type SentencePieceModel } from "../tokenizer/sentencepiece.js";

export const OUTTYPES = ["f32", "f16", "bf16", "q8_0", "auto"] as const;
export type Outtype = (typeof OUTTYPES)[number];
/** The converter's default --outtype. */
export const DEFAULT_OUTTYPE: Outtype = "f16";

/** LlamaFileType: general.file_type, and the type of every tensor that is not kept F32. */
const FILE_TYPES = {
  f32: { fileType: 0, type: "F32" },
  f16: { fileType: 1, type: "F16" },
  q8_0: { fileType: 7, type: "Q8_0" },
  bf16: { fileType: 32, type: "BF16" },
} as const satisfies Record<Exclude<Outtype, "auto">, { fileType: number; type: GgmlType }>;

/** The Hugging Face architectures the converter's LlamaModel takes that are the plain LLaMA graph in llama.cpp. */
const LLAMA_ARCHITECTURES = new Set(["LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"]);

/** transformers' config defaults the converter sees through AutoConfig (transformers 4.45 and later). */
const CONFIG_DEFAULTS: Record<string, Record<string, number>> = {
  llama: { max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 10000 },
  mistral: { max_position_embeddings: 4096 * 32, rms_norm_eps: 1e-6, rope_theta: 10000 },
};

const LAYER_TENSORS: Record<string, string> = {
  "input_layernorm": "attn_norm",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.o_proj": "attn_output",
  "post_attention_layernorm": "ffn_norm",
  "mlp.gate_proj": "ffn_gate",
  "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down",
};

const MODEL_TENSORS: Record<string, string> = {
  "model.embed_tokens.weight": "token_embd.weight",
  "model.norm.weight": "output_norm.weight",
  "lm_head.weight": "output.weight",
};

/** Above any real vocabulary (Gemma's 256,000 is the largest SentencePiece one): the token list is built in memory. */
const MAX_VOCAB = 524_288;

export interface SourceTensor {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

export interface PlannedTensor {
  /** The GGUF name (blk.N.attn_q.weight). */
  name: string;
  /** The source tensor it is made from. */
  source: string;
  sourceDtype: DType;
  shape: readonly number[];
  type: GgmlType;
  /** Heads whose rows are reordered (q_proj: attention heads; k_proj: key/value heads). */
  permuteHeads?: number;
}

export interface LlamaGgufInputs {
  /** What the model is called in messages. */
  label: string;
  /** general.name. */
  name: string;
  config: unknown;
  tokenizerModel: SentencePieceModel;
  tokenizerConfig?: unknown;
  /** tokenizer.json: only its added_tokens and post_processor are read, as gguf-py's SpecialVocab reads them. */
  tokenizerJson?: unknown;
  /** added_tokens.json. */
  addedTokens?: unknown;
  /** chat_template.jinja, or chat_template.json's chat_template (used when tokenizer_config has none). */
  chatTemplateFile?: string;
  tensors: readonly SourceTensor[];
  outtype?: Outtype;
}

export interface LlamaGgufPlan {
  metadata: GgufMetadata;
  tensors: PlannedTensor[];
  /** The outtype used ("auto" resolved). */
  outtype: Exclude<Outtype, "auto">;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}

/** The GGUF name of a LLaMA tensor, as gguf-py's tensor_mapping gives it; undefined for the rotary buffers the converter drops. */
function ggufTensorName(name: string, label: string): string | undefined {
  if (name.endsWith(".rotary_emb.inv_freq")) return undefined;
  const direct = MODEL_TENSORS[name];
  if (direct !== undefined) return direct;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
  const mapped = m === null ? undefined : LAYER_TENSORS[m[2]!];
  if (m === null || mapped === undefined) throw new ModelError(`${label}: tensor "${name}" is not part of a LLaMA model the GGUF writer knows (llama.cpp's converter cannot map it either)`, { rule: "gguf-tensor" });
  return `blk.${m[1]}.${mapped}.${m[3]}`;
}

function requireInt(config: Json, key: string, label: string): number {
  const v = config[key];
  if (!isInt(v) || v <= 0) throw new ModelError(`${label}: config.json has no positive integer "${key}", which a GGUF file needs`, { rule: "gguf-config" });
  return v;
}

/** gguf-py's model_weight_count_rounded_notation (general.size_label). */
export function sizeLabel(params: number): string {
  const [scaled, suffix] = params > 1e12 ? [params * 1e-12, "T"] : params > 1e9 ? [params * 1e-9, "B"] : params > 1e6 ? [params * 1e-6, "M"] : [params * 1e-3, "K"];
  // Python's round(): half to even.
  const floor = Math.floor(scaled);
  const diff = scaled - floor;
  const rounded = diff > 0.5 || (diff === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
  const digits = String(rounded).replace(/^0+/, "").length;
  return `${scaled.toFixed(Math.max(2 - digits, 0))}${suffix}`;
}

/** TextModel.does_token_look_special. */
function looksSpecial(token: string): boolean {
  return ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(token)
    || (token.startsWith("<|") && token.endsWith("|>"))
    || (token.startsWith("<｜") && token.endsWith("｜>"))
    || (token.startsWith("<unused") && token.endsWith(">"));
}

/** The piece types the converter keeps (IsUnknown, IsControl, IsUnused, IsByte); any other is NORMAL (a USER_DEFINED piece included). */
const KEPT_PIECE_TYPES: ReadonlySet<number> = new Set([PieceType.UNKNOWN, PieceType.CONTROL, PieceType.UNUSED, PieceType.BYTE]);

/** _create_vocab_sentencepiece: tokens, scores and token types. */
function sentencePieceVocab(inputs: LlamaGgufInputs, vocabSize: number): { tokens: string[]; scores: Float32Array; types: Int32Array } {
  const scores = new Float32Array(vocabSize).fill(-10000);
  const types = new Int32Array(vocabSize).fill(PieceType.UNUSED);
  const pieces = inputs.tokenizerModel.pieces;
  const tokens = Array.from({ length: vocabSize }, (_, id) => (id < pieces.length ? pieces[id]!.piece : `[PAD${id}]`));
  for (let id = 0; id < pieces.length && id < vocabSize; id++) {
    const p = pieces[id]!;
    scores[id] = p.score;
    types[id] = KEPT_PIECE_TYPES.has(p.type) ? p.type : PieceType.NORMAL;
  }
  if (inputs.addedTokens !== undefined) {
    if (!isObject(inputs.addedTokens)) throw new ModelError(`${inputs.label}: added_tokens.json is not an object of token -> id`, { rule: "gguf-tokenizer" });
    for (const [token, id] of Object.entries(inputs.addedTokens)) {
      if (!isInt(id) || id < 0) throw new ModelError(`${inputs.label}: added_tokens.json gives "${token}" the id ${String(id)}, not a token id`, { rule: "gguf-tokenizer" });
      if (id >= vocabSize) continue;
      tokens[id] = token;
      scores[id] = -1000;
      types[id] = PieceType.USER_DEFINED;
    }
  }
  const decoder = isObject(inputs.tokenizerConfig) ? inputs.tokenizerConfig.added_tokens_decoder : undefined;
  if (isObject(decoder)) {
    for (const [key, data] of Object.entries(decoder)) {
      const id = Number(key);
      if (!Number.isSafeInteger(id) || id < 0 || !isObject(data) || typeof data.content !== "string") {
        throw new ModelError(`${inputs.label}: tokenizer_config.json's added_tokens_decoder entry "${key}" is not an id with a content string`, { rule: "gguf-tokenizer" });
      }
      if (id >= vocabSize) continue;
      let token = data.content;
      if (data.special === true || looksSpecial(token)) {
        types[id] = PieceType.CONTROL;
      } else {
        token = token.replaceAll("\u2581", " ");
        types[id] = PieceType.USER_DEFINED;
      }
      scores[id] = -1000;
      tokens[id] = token;
    }
  }
  return { tokens, scores, types };
}

const SPECIAL_TYPES = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] as const;
/** gguf-py's add_{typ}_token_id keys (cls has none: SpecialVocab skips it with a warning). */
const SPECIAL_ID_KEYS: Partial<Record<string, string>> = {
  bos: "tokenizer.ggml.bos_token_id",
  eos: "tokenizer.ggml.eos_token_id",
  unk: "tokenizer.ggml.unknown_token_id",
  sep: "tokenizer.ggml.seperator_token_id",
  pad: "tokenizer.ggml.padding_token_id",
  mask: "tokenizer.ggml.mask_token_id",
};
const ADD_KEYS: Partial<Record<string, string>> = {
  bos: "tokenizer.ggml.add_bos_token",
  eos: "tokenizer.ggml.add_eos_token",
  sep: "tokenizer.ggml.add_sep_token",
};

function tokenContent(entry: unknown): string | undefined {
  if (typeof entry === "string") return entry;
  if (isObject(entry) && typeof entry.content === "string") return entry.content;
  return undefined;
}

/** gguf-py's SpecialVocab (load_merges off): special token ids, add_*_token flags, chat template. */
function specialVocab(inputs: LlamaGgufInputs, nVocab: number): GgufMetadata {
  const ids = new Map<string, number>();
  const add = new Map<string, boolean>();
  let chatTemplate: string | undefined;
  const setId = (typ: string, id: unknown) => {
    if (!isInt(id)) return;
    if (id < 0) throw new ModelError(`${inputs.label}: the ${typ} token id ${id} is negative`, { rule: "gguf-tokenizer" });
    if (id < nVocab && !ids.has(typ)) ids.set(typ, id);
  };
  const tokenizerConfig = isObject(inputs.tokenizerConfig) ? { ...inputs.tokenizerConfig } : undefined;
  const tokenizer = isObject(inputs.tokenizerJson) ? inputs.tokenizerJson : undefined;
  const addedTokens = tokenizer !== undefined && Array.isArray(tokenizer.added_tokens) ? tokenizer.added_tokens.filter(isObject) : [];
  if (tokenizer !== undefined) {
    let bos = tokenContent(tokenizerConfig?.bos_token);
    let eos = tokenContent(tokenizerConfig?.eos_token);
    const cls = tokenContent(tokenizerConfig?.cls_token);
    const sep = tokenContent(tokenizerConfig?.sep_token);
    if (!bos && cls && tokenizerConfig) tokenizerConfig.bos_token = bos = cls;
    if (!eos && sep && tokenizerConfig) tokenizerConfig.eos_token = eos = sep;
    const post = tokenizer.post_processor;
    if (isObject(post)) {
      const processors = Array.isArray(post.processors) ? post.processors.filter(isObject) : [post];
      for (const processor of processors) {
        if (processor.type === "RobertaProcessing") {
          throw new ModelError(`${inputs.label}: tokenizer.json uses RobertaProcessing, which is not a LLaMA tokenizer`, { rule: "gguf-tokenizer" });
        }
        if (processor.type !== "TemplateProcessing") continue;
        const single = Array.isArray(processor.single) ? processor.single.filter(isObject) : [];
        const pair = Array.isArray(processor.pair) ? processor.pair.filter(isObject) : [];
        const specialId = (item: Json | undefined): string | undefined => {
          const s = item?.SpecialToken;
          return isObject(s) && typeof s.id === "string" && s.id !== "" ? s.id : undefined;
        };
        const seqId = (item: Json | undefined): unknown => (isObject(item?.Sequence) ? item.Sequence.id : undefined);
        let first: string | undefined;
        let last: string | undefined;
        if (single.length > 1) {
          first = specialId(single[0]);
          if (first !== undefined) {
            if (!tokenizerConfig) bos = first;
            add.set("bos", first === bos || first === cls);
          }
          last = specialId(single[single.length - 1]);
          if (last !== undefined) {
            if (!tokenizerConfig) eos = last;
            else if (last !== eos) throw new ModelError(`${inputs.label}: tokenizer.json ends a sequence with ${last}, not the eos token ${String(eos)} (the converter then writes an EOT token this writer does not)`, { rule: "gguf-tokenizer" });
            add.set("eos", last === eos);
          }
        }
        if (pair.length > 0) {
          const start = first !== undefined && specialId(pair[0]) === first ? 1 : 0;
          const stop = last !== undefined && specialId(pair[pair.length - 1]) === last ? pair.length - 1 : pair.length;
          let middle = pair.slice(start, stop);
          if (middle.length > 0 && seqId(middle[0]) === "A" && seqId(middle[middle.length - 1]) === "B") {
            middle = middle.slice(1, -1);
            if (middle.length > 0) {
              let addSep = false;
              const entry = specialId(middle[0]);
              if (entry !== undefined && (entry === sep || entry === eos) && last === undefined) addSep = true;
              if (middle.length === 2) {
                const second = specialId(middle[1]);
                if (second !== undefined && (second === sep || second === eos)) addSep = true;
              }
              add.set("sep", addSep);
              if (addSep && !sep && tokenizerConfig) tokenizerConfig.sep_token = eos;
            }
          }
        }
      }
    }
  }
  if (tokenizerConfig) {
    const template = tokenizerConfig.chat_template ?? inputs.chatTemplateFile;
    if (typeof template === "string") chatTemplate = template;
    else if (template !== undefined && template !== null) throw new ModelError(`${inputs.label}: tokenizer_config.json's chat_template is not a string (named templates are not written)`, { rule: "gguf-tokenizer" });
    for (const typ of SPECIAL_TYPES) {
      const flag = tokenizerConfig[`add_${typ}_token`];
      if (typeof flag === "boolean") add.set(typ, flag);
      const content = tokenContent(tokenizerConfig[`${typ}_token`]);
      if (content === undefined) continue;
      setId(typ, addedTokens.find((t) => t.content === content)?.id);
    }
  }
  if (isObject(inputs.config)) for (const typ of SPECIAL_TYPES) setId(typ, inputs.config[`${typ}_token_id`]);

  const out: GgufMetadata = [];
  for (const [typ, id] of ids) {
    const key = SPECIAL_ID_KEYS[typ];
    if (key !== undefined) out.push([key, { type: "uint32", value: id }]);
  }
  for (const [typ, value] of add) {
    const key = ADD_KEYS[typ];
    if (key !== undefined) out.push([key, { type: "bool", value }]);
  }
  if (chatTemplate !== undefined) out.push(["tokenizer.chat_template", { type: "string", value: chatTemplate }]);
  return out;
}

/** The model's hyperparameters, or a refusal naming what the GGUF writer does not write (before any output). */
export function checkLlamaGgufConfig(label: string, config: unknown, tokenizerModel: SentencePieceModel): LlamaHyperparameters {
  if (!isObject(config)) throw new ModelError(`${label}: config.json is not a JSON object`, { rule: "gguf-config" });
  const architectures = Array.isArray(config.architectures) ? config.architectures : [];
  const arch = architectures[0];
  if (typeof arch !== "string" || !LLAMA_ARCHITECTURES.has(arch)) {
    throw new ModelError(`${label}: GGUF output is written for LLaMA-family models (LlamaForCausalLM, MistralForCausalLM), not ${typeof arch === "string" ? arch : "a config without \"architectures\""}`, { rule: "gguf-architecture" });
  }
  for (const key of ["quantization_config", "num_local_experts", "text_config"]) {
    if (config[key] !== undefined && config[key] !== null) throw new ModelError(`${label}: config.json has "${key}": GGUF output is written only for plain dense LLaMA models`, { rule: "gguf-architecture" });
  }
  const ropeScaling = config.rope_scaling ?? config.rope_parameters;
  if (isObject(ropeScaling) && (ropeScaling.rope_type ?? ropeScaling.type ?? "default") !== "default") {
    throw new ModelError(`${label}: config.json's rope scaling (${String(ropeScaling.rope_type ?? ropeScaling.type)}) is not written to GGUF by this tool: use llama.cpp's converter`, { rule: "gguf-architecture" });
  }
  const defaults = CONFIG_DEFAULTS[config.model_type === "mistral" ? "mistral" : "llama"]!;
  const blockCount = requireInt(config, "num_hidden_layers", label);
  const hidden = requireInt(config, "hidden_size", label);
  const nHead = requireInt(config, "num_attention_heads", label);
  const nKvHead = config.num_key_value_heads === undefined || config.num_key_value_heads === null ? nHead : requireInt(config, "num_key_value_heads", label);
  const ff = requireInt(config, "intermediate_size", label);
  const vocabSize = requireInt(config, "vocab_size", label);
  if (vocabSize > MAX_VOCAB) throw new ModelError(`${label}: config.json's vocab_size ${vocabSize} is more than the ${MAX_VOCAB} tokens GGUF output is written for`, { rule: "gguf-config" });
  if (vocabSize === 32016) throw new ModelError(`${label}: a 32016-token vocabulary is CodeLlama's, whose infill tokens this writer does not write: use llama.cpp's converter`, { rule: "gguf-architecture" });
  const headDim = config.head_dim === undefined || config.head_dim === null ? Math.floor(hidden / nHead) : requireInt(config, "head_dim", label);
  const context = config.max_position_embeddings ?? defaults.max_position_embeddings;
  const eps = config.rms_norm_eps ?? defaults.rms_norm_eps;
  const theta = (isObject(ropeScaling) ? ropeScaling.rope_theta : undefined) ?? config.rope_theta ?? defaults.rope_theta;
  for (const [key, v] of [["max_position_embeddings", context], ["rms_norm_eps", eps], ["rope_theta", theta]] as const) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new ModelError(`${label}: config.json's "${key}" is not a number`, { rule: "gguf-config" });
  }
  if (tokenizerModel.modelType !== 1 && tokenizerModel.modelType !== 2) {
    throw new ModelError(`${label}: tokenizer.model is a SentencePiece ${tokenizerModel.modelType === 3 ? "word" : "char"} model; llama.cpp's "llama" tokenizer reads BPE and unigram models only`, { rule: "gguf-tokenizer" });
  }

  return { blockCount, hidden, nHead, nKvHead, ff, vocabSize, headDim, context: context as number, eps: eps as number, theta: theta as number };
}

interface LlamaHyperparameters {
  blockCount: number;
  hidden: number;
  nHead: number;
  nKvHead: number;
  ff: number;
  vocabSize: number;
  headDim: number;
  context: number;
  eps: number;
  theta: number;
}

/** The GGUF plan for a LLaMA-family model, or a refusal naming what it does not write. */
export function planLlamaGguf(inputs: LlamaGgufInputs): LlamaGgufPlan {
  const { label } = inputs;
  const { blockCount, hidden, nHead, nKvHead, ff, vocabSize, headDim, context, eps, theta } = checkLlamaGgufConfig(label, inputs.config, inputs.tokenizerModel);

  // Tensors, in the source's order, as prepare_tensors types them.
  const tensors: PlannedTensor[] = [];
  let firstDtype: DType | undefined;
  let params = 0;
  for (const t of inputs.tensors) {
    const name = ggufTensorName(t.name, label);
    if (name === undefined) continue;
    if (!CONVERTIBLE_DTYPES.includes(t.dtype)) throw new ModelError(`${label}: tensor "${t.name}" is ${t.dtype}; GGUF output is written from float tensors only`, { rule: "gguf-tensor" });
    firstDtype ??= t.dtype;
    params += t.shape.reduce((n, d) => n * d, 1);
    let permuteHeads: number | undefined;
    if (/\.self_attn\.q_proj\.(weight|bias)$/.test(t.name)) permuteHeads = nHead;
    if (/\.self_attn\.k_proj\.(weight|bias)$/.test(t.name)) permuteHeads = nKvHead;
    if (permuteHeads !== undefined && ((t.shape[0] ?? 0) % (permuteHeads * 2) !== 0)) {
      throw new ModelError(`${label}: tensor "${t.name}" has ${t.shape[0]} rows, not ${permuteHeads} heads of an even size`, { rule: "gguf-tensor" });
    }
    tensors.push({ name, source: t.name, sourceDtype: t.dtype, shape: [...t.shape], type: "F32", ...(permuteHeads === undefined ? {} : { permuteHeads }) });
  }
  if (tensors.length === 0) throw new ModelError(`${label}: no tensors to write`, { rule: "gguf-tensor" });
  const outtype: Exclude<Outtype, "auto"> = inputs.outtype === undefined ? DEFAULT_OUTTYPE as "f16" : inputs.outtype === "auto" ? (firstDtype === "F16" ? "f16" : "bf16") : inputs.outtype;
  const { fileType, type: wideType } = FILE_TYPES[outtype];
  for (const t of tensors) {
    // 1-D tensors and norms stay F32; a Q8_0 tensor whose rows are not whole blocks falls back to F16, as the converter's QuantError does.
    if (t.shape.length <= 1 || t.name.endsWith("_norm.weight") || !t.name.endsWith(".weight")) continue;
    t.type = wideType === "Q8_0" && (t.shape[t.shape.length - 1] as number) % 32 !== 0 ? "F16" : wideType;
  }

  const vocab = sentencePieceVocab(inputs, vocabSize);
  const m: GgufMetadata = [];
  const kv = (key: string, value: GgufValue) => m.push([key, value]);
  kv("general.architecture", { type: "string", value: "llama" });
  kv("general.type", { type: "string", value: "model" });
  kv("general.name", { type: "string", value: inputs.name });
  kv("general.size_label", { type: "string", value: sizeLabel(params) });
  kv("llama.block_count", { type: "uint32", value: blockCount });
  kv("llama.context_length", { type: "uint32", value: context });
  kv("llama.embedding_length", { type: "uint32", value: hidden });
  kv("llama.feed_forward_length", { type: "uint32", value: ff });
  kv("llama.attention.head_count", { type: "uint32", value: nHead });
  kv("llama.attention.head_count_kv", { type: "uint32", value: nKvHead });
  kv("llama.rope.freq_base", { type: "float32", value: theta });
  kv("llama.attention.layer_norm_rms_epsilon", { type: "float32", value: eps });
  kv("llama.attention.key_length", { type: "uint32", value: headDim });
  kv("llama.attention.value_length", { type: "uint32", value: headDim });
  kv("general.file_type", { type: "uint32", value: fileType });
  kv("llama.vocab_size", { type: "uint32", value: vocabSize });
  kv("llama.rope.dimension_count", { type: "uint32", value: headDim });
  kv("general.quantization_version", { type: "uint32", value: GGML_QUANT_VERSION });
  kv("tokenizer.ggml.model", { type: "string", value: "llama" });
  kv("tokenizer.ggml.pre", { type: "string", value: "default" });
  kv("tokenizer.ggml.tokens", { type: "string[]", value: vocab.tokens });
  kv("tokenizer.ggml.scores", { type: "float32[]", value: vocab.scores });
  kv("tokenizer.ggml.token_type", { type: "int32[]", value: vocab.types });
  m.push(...specialVocab(inputs, vocab.tokens.length));
  if (vocabSize === 49152) {
    // LlamaModel.set_vocab (granite small models): add_key_value overwrites a key in place.
    const existing = m.find(([key]) => key === "tokenizer.ggml.add_bos_token");
    if (existing) existing[1] = { type: "bool", value: false };
    else kv("tokenizer.ggml.add_bos_token", { type: "bool", value: false });
  }
  return { metadata: m, tensors, outtype };
}
