/**
 * Weights that are neither a Hugging Face model nor a delta of one, told
 * apart by what their files show: Meta's original checkpoint, a quantized
 * model (GPTQ, AWQ, ...), a LoRA adapter, a GGUF file. Given as a base or a
 * delta, each would be read as tensors and turned into a wrong model (or
 * refused for a reason that does not say what it is), so apply-delta and
 * make-delta name the format instead.
 *
 * The one place these formats are recognised: a helper that comes to read
 * one of them (Meta's checkpoints as a base, adapters merged) changes what
 * this module returns for it, and every refusal follows.
 */
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { localFileSet, type FileSet } from "../io/file-set.js";
import { readJsonFile } from "../io/files.js";
import { openRandomAccessFile } from "../io/random-access-file.js";
import { MAX_INDEX_BYTES } from "../limits.js";
import { META_FILES } from "../formats/weight-files.js";
import type { ModelSource } from "./types.js";

export type ForeignFormat = "meta-checkpoint" | "quantized" | "lora-adapter" | "gguf";

export interface ForeignWeights {
  format: ForeignFormat;
  /** What it is, a noun phrase with its evidence: `a LoRA adapter (adapter_config.json; lora_A/lora_B tensors)`. */
  what: string;
  /** Given as a base: what to pass instead (follows "--base X is <what>: "). */
  asBase: string;
  /** Given as a delta: what it is for instead (follows "--delta X is <what>, not a delta: "). */
  asDelta: string;
  /** Given to make-delta as the fine-tuned model: what to pass instead (follows "--target X is <what>: "). */
  asTarget: string;
}

/** GGUF's magic, the file's first four bytes (llama.cpp's ggml/docs/gguf.md). */
const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46];


/** Tensor names only Meta's layout uses (llama/model.py): transformers' conversion renames every one. */
function isMetaTensor(name: string): boolean {
  return name === "tok_embeddings.weight" || /^layers\.\d+\.(attention\.w[qkvo]|feed_forward\.w[123])\.weight$/.test(name);
}

/** GPTQ's (and AWQ's) packed linear layers: qweight, qzeros, scales and g_idx in place of weight. */
function isQuantizedTensor(name: string): boolean {
  return /\.(qweight|qzeros|g_idx)$/.test(name);
}

/** PEFT's LoRA tensors: lora_A/lora_B (lora_embedding_A/B for embeddings). */
function isLoraTensor(name: string): boolean {
  return /\.lora_(embedding_)?[AB]\b/.test(name);
}

/**
 * What foreign format the weights at `where` are in, or undefined when they
 * read as a Hugging Face model (or a delta of one). `where` is a path (a
 * directory, or one file) or a FileSet (a download). With `model` (the same
 * weights, opened), its tensor names count too: a single checkpoint file
 * carries no companions to tell by.
 */
export async function describeForeignWeights(where: string | FileSet, model?: ModelSource): Promise<ForeignWeights | undefined> {
  const files = typeof where === "string" ? await singleFileOrDirectory(where) : { set: where, names: await topLevel(where), single: undefined };
  // Once the weights opened as a model, only the files it was read from count: a directory may hold
  // a converted model beside Meta's originals, or beside an adapter it was merged from.
  const names = new Set(model === undefined ? files.names : [...model.weightFiles.map((f) => basename(f)), ...model.extraFiles]);
  const tensors = model === undefined ? [] : [...model.tensors.keys()];
  return (await gguf(files, model)) ?? meta(names, files.single, tensors) ?? lora(names, tensors, model !== undefined) ?? (await quantized(files.set, names, tensors));
}

interface Files {
  set: FileSet | undefined;
  /** Top-level file names of the directory (the one file's name when a single file was named). */
  names: readonly string[];
  /** The file's path, when `where` named one file. */
  single: string | undefined;
}

async function singleFileOrDirectory(path: string): Promise<Files> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) return { set: undefined, names: [], single: undefined };
  if (info.isFile()) return { set: undefined, names: [basename(path)], single: path };
  if (!info.isDirectory()) return { set: undefined, names: [], single: undefined };
  const set = localFileSet(path);
  return { set, names: await topLevel(set), single: undefined };
}

async function topLevel(set: FileSet): Promise<string[]> {
  return (await set.list().catch(() => [] as readonly string[])).filter((n) => !n.includes("/"));
}

/**
 * A GGUF file named on its own, or a directory of GGUF files with no
 * weights we read (a `*-GGUF` repo; older GGML-era files were named `.bin`).
 * Only when the weights did not open as a model: a stray .gguf beside a
 * model's safetensors is not the model.
 */
async function gguf(files: Files, model: ModelSource | undefined): Promise<ForeignWeights | undefined> {
  if (model !== undefined) return undefined;
  const candidates = files.names.filter((n) => /\.(gguf|bin)$/i.test(n) || files.single !== undefined);
  for (const name of candidates) {
    if (await startsWithMagic(files, name)) {
      return {
        format: "gguf",
        what: `a GGUF file (${name}: llama.cpp's format)`,
        asBase: "a delta applies to the Hugging Face model (safetensors or PyTorch .bin) it was made from; pass that",
        asDelta: "it is a whole model for llama.cpp; use it as it is",
        asTarget: "a delta is made from the fine-tuned model in the Hugging Face layout (safetensors or PyTorch .bin); pass that",
      };
    }
  }
  return undefined;
}

async function startsWithMagic(files: Files, name: string): Promise<boolean> {
  let input;
  try {
    if (files.single !== undefined) {
      input = await openRandomAccessFile(files.single);
    } else if (files.set !== undefined) {
      input = await files.set.open(name);
    } else {
      return false;
    }
  } catch {
    return false;
  }
  try {
    if (input.size < GGUF_MAGIC.length) return false;
    const head = await input.read(0, GGUF_MAGIC.length);
    return GGUF_MAGIC.every((b, i) => head[i] === b);
  } catch {
    return false;
  } finally {
    await input.close();
  }
}

/**
 * A model opened from Meta's original checkpoint (model/meta-source.ts): a
 * base, never a delta, nor make-delta's target (its delta would recreate
 * Meta's file names around converted tensors).
 */
export function metaCheckpointOpened(model: ModelSource): ForeignWeights | undefined {
  if (model.readAs === undefined || !model.readAs.startsWith("Meta's")) return undefined;
  return meta(new Set(model.weightFiles.map((f) => basename(f)).concat(META_FILES.params)), undefined, []);
}

function meta(names: ReadonlySet<string>, single: string | undefined, tensors: readonly string[]): ForeignWeights | undefined {
  const shards = [...names].filter((n) => META_FILES.part.test(n));
  const byFiles = shards.length > 0 && (names.has(META_FILES.params) || single !== undefined);
  const byTensors = tensors.filter(isMetaTensor);
  if (!byFiles && byTensors.length === 0) return undefined;
  const evidence = [
    ...(shards.length > 0 ? [`${shards[0]}${names.has(META_FILES.params) ? ` with ${META_FILES.params}` : ""}`] : []),
    ...(byTensors.length > 0 ? [`tensors named ${byTensors.slice(0, 2).map((n) => JSON.stringify(n)).join(", ")}`] : []),
  ];
  return {
    format: "meta-checkpoint",
    what: `a Meta checkpoint (${evidence.join("; ")}: Meta's original LLaMA layout)`,
    // A Meta directory (consolidated.0N.pth beside params.json) is read as transformers' conversion reads it; a lone file cannot be.
    asBase: "pass the directory Meta's release came in (its consolidated.0N.pth files beside params.json): it is read as transformers' convert_llama_weights_to_hf.py converts it",
    // Read as a base since Meta checkpoints are bases (model/meta-source.ts): no conversion is asked of the user.
    asDelta: "it is Meta's base model itself; pass its directory as --base (it is read as transformers' convert_llama_weights_to_hf.py converts it)",
    asTarget: "make-delta takes the fine-tuned model in the Hugging Face layout; convert the directory it came in first (delta-weights convert DIR OUT) and pass the result",
  };
}

function lora(names: ReadonlySet<string>, tensors: readonly string[], opened: boolean): ForeignWeights | undefined {
  const files = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"].filter((n) => names.has(n));
  const loraTensors = tensors.filter(isLoraTensor);
  // Beside weights that opened, adapter_config.json alone is an adapter the model may have been merged from.
  const decisive = opened ? files.filter((n) => n !== "adapter_config.json") : files;
  if (decisive.length === 0 && loraTensors.length === 0) return undefined;
  const evidence = [...files, ...(loraTensors.length > 0 ? [`tensors like ${JSON.stringify(loraTensors[0])}`] : [])];
  return {
    format: "lora-adapter",
    what: `a LoRA adapter (${evidence.join(", ")})`,
    asBase: "not a model; pass the base model itself",
    // Reached only when --convention names a convention of deltas: adapters are merged by their own conventions.
    asDelta: "an adapter holds low-rank factors, not a difference of the weights; it is merged into the base by the lora conventions: drop --convention, or pass --convention lora, lora-base-dtype or chinese-llama-alpaca",
    asTarget: "not a model; publish the adapter as it is (apply-delta merges it), or merge it first (apply-delta --base BASE --delta ADAPTER --target MERGED) and pass the merged model",
  };
}

async function quantized(set: FileSet | undefined, names: ReadonlySet<string>, tensors: readonly string[]): Promise<ForeignWeights | undefined> {
  const config = set !== undefined && names.has("config.json") ? await readObject(set, "config.json") : undefined;
  const quantization = asObject(config?.quantization_config);
  const declared = typeof quantization?.quant_method === "string" ? quantization.quant_method : undefined;
  const packed = tensors.filter(isQuantizedTensor);
  const gptqFile = names.has("quantize_config.json");
  if (quantization === undefined && packed.length === 0 && !gptqFile) return undefined;
  // AutoGPTQ writes quantize_config.json; its packed tensors are GPTQ's unless the config says another method.
  const method = declared ?? (gptqFile || packed.some((n) => n.endsWith(".g_idx")) ? "gptq" : undefined);
  const label = method === undefined ? "a quantized model" : `a ${method === "gptq" || method === "awq" ? method.toUpperCase() : method}-quantized model`;
  const evidence = [
    ...(quantization !== undefined ? ["quantization_config in config.json"] : []),
    ...(gptqFile ? ["quantize_config.json"] : []),
    ...(packed.length > 0 ? [`tensors like ${JSON.stringify(packed.find((n) => n.endsWith(".qweight")) ?? packed[0])}`] : []),
  ];
  return {
    format: "quantized",
    what: `${label} (${evidence.join(", ")})`,
    asBase: "a delta needs the unquantized base (the float16 model it was quantized from), whose weights it was made against",
    asDelta: "it is a whole model, already quantized; use it as it is",
    asTarget: "a delta against an unquantized base would hold the quantization error, not the fine-tune; pass the unquantized fine-tuned model",
  };
}

async function readObject(set: FileSet, file: string): Promise<Record<string, unknown> | undefined> {
  try {
    return asObject(await readJsonFile(await set.whole(file), MAX_INDEX_BYTES, "a model's config.json", "E_MODEL"));
  } catch {
    return undefined; // an unreadable config is the model reader's to report
  }
}

function asObject(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}
