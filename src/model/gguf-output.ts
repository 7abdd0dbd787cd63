/**
 * A model written as one GGUF file llama.cpp loads, as its converter
 * (convert_hf_to_gguf.py) would write it. Streaming: the header and tensor
 * table come first, from the shapes; then each tensor is read in chunks of
 * whole blocks (q_proj/k_proj one head at a time, for the row permutation),
 * converted and written. Memory is bounded by the chunk size and one head.
 */
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { ModelError } from "../errors.js";
import { dtypeBytes } from "../dtypes.js";
import { CHUNK_BYTES } from "../limits.js";
import { prefetch } from "../io/chunk-streams.js";
import { chunkPool } from "../io/chunk-pool.js";
import type { OnProgress } from "../progress.js";
import type { ByteSink } from "../tensors.js";
import { GGML_TYPES, layoutGguf, padded, type GgufLayout } from "../gguf/format.js";
import { checkLlamaGgufConfig, planLlamaGguf, type LlamaGgufPlan, type Outtype, type PlannedTensor } from "../gguf/llama.js";
import { convertChunk, convertPermutedHeads, permuteHeadRows } from "../gguf/quantize.js";
import { q8Worker } from "../gguf/q8-worker.js";
import { quantizeQ8_0Into } from "../kernels/index.js";
import { readSentencePieceModel } from "../tokenizer/sentencepiece.js";
import type { ModelSource } from "./types.js";

/**
 * Larger than any SentencePiece model's tokenizer.model or tokenizer.json
 * (LLaMA's: 0.5 MB and 1.8 MB; Gemma's: 4 MB and 17 MB): a companion file is
 * read and parsed whole, so a hostile one must not cost more.
 */
const MAX_COMPANION_BYTES = 24 * 1024 * 1024;

/** Reserves the file's next bytes in the sink (see ByteSink.reserve), in file order; undefined: write them instead. */
type Reserve = (length: number) => Uint8Array[] | undefined;

async function companion(model: ModelSource, file: string): Promise<Uint8Array | undefined> {
  if (!model.extraFiles.includes(file)) return undefined;
  const path = join(model.root, file);
  const info = await stat(path);
  if (info.size > MAX_COMPANION_BYTES) throw new ModelError(`${path} is ${info.size} bytes, more than the ${MAX_COMPANION_BYTES} a tokenizer or config file is read with`);
  return new Uint8Array(await readFile(path));
}

async function companionJson(model: ModelSource, file: string): Promise<unknown> {
  const bytes = await companion(model, file);
  if (bytes === undefined) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as unknown;
  } catch (err) {
    throw new ModelError(`${join(model.root, file)} is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * The GGUF plan for `model`: every refusal (architecture, tokenizer, dtype,
 * tensor) happens here, before any output. `name` becomes general.name.
 */
export async function planGguf(model: ModelSource, name: string, outtype: Outtype | undefined): Promise<{ plan: LlamaGgufPlan; layout: GgufLayout }> {
  const config = await companionJson(model, "config.json");
  if (config === undefined) throw new ModelError(`${model.source} has no config.json: a GGUF file needs the model's hyperparameters`, { rule: "gguf-config" });
  const spBytes = await companion(model, "tokenizer.model");
  if (spBytes === undefined) {
    const bpe = model.extraFiles.includes("tokenizer.json") ? " (it has only tokenizer.json, a BPE tokenizer whose pre-tokenizer llama.cpp's converter identifies by a hash table this tool does not carry)" : "";
    throw new ModelError(`${model.source} has no tokenizer.model: GGUF output is written for SentencePiece tokenizers only${bpe}`, { rule: "gguf-tokenizer" });
  }
  let chatTemplateFile: string | undefined;
  const jinja = await companion(model, "chat_template.jinja");
  if (jinja !== undefined) chatTemplateFile = new TextDecoder().decode(jinja);
  else {
    const json = await companionJson(model, "chat_template.json");
    const template = typeof json === "object" && json !== null ? (json as Record<string, unknown>).chat_template : undefined;
    if (typeof template === "string") chatTemplateFile = template;
  }
  const plan = planLlamaGguf({
    label: model.source,
    name,
    config,
    tokenizerModel: readSentencePieceModel(spBytes, join(model.root, "tokenizer.model")),
    tokenizerConfig: await companionJson(model, "tokenizer_config.json"),
    tokenizerJson: await companionJson(model, "tokenizer.json"),
    addedTokens: await companionJson(model, "added_tokens.json"),
    ...(chatTemplateFile === undefined ? {} : { chatTemplateFile }),
    tensors: [...model.tensors.values()],
    ...(outtype === undefined ? {} : { outtype }),
  });
  return { plan, layout: layoutGguf(plan.metadata, plan.tensors) };
}

/** Exactly [start, end) of a tensor's bytes, in one buffer. */
async function readRange(model: ModelSource, name: string, start: number, end: number, chunkBytes: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of model.readTensor(name, { start, end, chunkBytes })) parts.push(chunk);
  if (parts.length === 1) return parts[0]!;
  const out = chunkPool.take(end - start); // every byte is copied in below
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
    chunkPool.giveBack(p);
  }
  return out;
}

/**
 * Output pieces of about 1 MiB. A piece is written while the next ones are
 * read and converted; at 1 MiB the bytes a write or a hash reads are still
 * in the cache the read or the conversion left them in, where at 4 MiB
 * (the read chunk, all of a core's L2 here) they were not: F16 output took
 * 0.3-0.4 CPU-seconds less per 2.14 GB, and less wall time.
 */
const PIECE_BYTES = 1024 * 1024;

/**
 * Source elements per piece: about PIECE_BYTES of output, but never a read
 * or an output smaller than that (the chunk pool serves reads from 1 MiB)
 * nor a read larger than `chunkBytes`; whole Q8_0 blocks (the innermost
 * dimension holds whole blocks, so any multiple of 32 elements does).
 */
function pieceElements(t: PlannedTensor, chunkBytes: number): number {
  const elementBytes = dtypeBytes(t.sourceDtype);
  const { blockSize, typeSize } = GGML_TYPES[t.type];
  const wanted = Math.max(Math.ceil(PIECE_BYTES / typeSize) * blockSize, Math.ceil(PIECE_BYTES / elementBytes));
  const most = Math.floor(chunkBytes / elementBytes / 32) * 32;
  return Math.max(32, Math.min(Math.ceil(wanted / 32) * 32, most));
}

/**
 * The tensor's bytes as the converter writes them, chunk by chunk, with the
 * source bytes each chunk consumed: pieces as pieceElements sizes them,
 * and for q_proj/k_proj whole heads, as many as make a piece (always one,
 * at most `chunkBytes` of the source when more than one).
 */
async function* convertedChunks(model: ModelSource, t: PlannedTensor, chunkBytes: number, reserve: Reserve): AsyncIterable<ConvertedChunk> {
  const elementBytes = dtypeBytes(t.sourceDtype);
  const { blockSize, typeSize } = GGML_TYPES[t.type];
  // The piece's place in the file, reserved as soon as its source is read: reservations come in file order.
  const reserveFor = (source: Uint8Array) => reserve((source.length / elementBytes / blockSize) * typeSize);
  const numel = t.shape.reduce((n, d) => n * d, 1);
  if (t.permuteHeads !== undefined) {
    const rows = t.shape[0] ?? 1;
    const rowBytes = (numel / rows) * elementBytes;
    const headRows = rows / t.permuteHeads;
    const headBytes = headRows * rowBytes;
    const headsPerChunk = Math.max(1, Math.min(Math.ceil((pieceElements(t, chunkBytes) * elementBytes) / headBytes), Math.floor(chunkBytes / headBytes)));
    for (let h = 0; h < t.permuteHeads; h += headsPerChunk) {
      const heads = Math.min(headsPerChunk, t.permuteHeads - h);
      const source = await readRange(model, t.source, h * headBytes, (h + heads) * headBytes, chunkBytes);
      const reserved = reserveFor(source);
      const onWorker = quantizedOnWorker(t, source, reserved, { headRows, rowBytes });
      if (onWorker !== undefined) {
        yield { bytes: onWorker, reserved, sourceBytes: source.length };
        continue;
      }
      // Rows go from where they are to where the converter puts them, converted on the way: one pass.
      let bytes = convertPermutedHeads(t.sourceDtype, t.type, source, headRows, rowBytes, (n) => chunkPool.take(n));
      if (bytes === undefined) {
        const permuted = chunkPool.take(source.length);
        for (let k = 0; k < heads; k++) permuted.set(permuteHeadRows(source.subarray(k * headBytes, (k + 1) * headBytes), headRows, rowBytes), k * headBytes);
        bytes = convertedOnce(t, permuted);
      }
      chunkPool.giveBack(source);
      yield { bytes, reserved, sourceBytes: source.length };
    }
    return;
  }
  const groupElements = pieceElements(t, chunkBytes);
  for (let first = 0; first < numel; first += groupElements) {
    const last = Math.min(numel, first + groupElements);
    const source = await readRange(model, t.source, first * elementBytes, last * elementBytes, chunkBytes);
    const reserved = reserveFor(source);
    yield { bytes: quantizedOnWorker(t, source, reserved) ?? convertedOnce(t, source), reserved, sourceBytes: source.length };
  }
}

/** A piece of a tensor's output, still being quantized on the worker when a promise. */
interface ConvertedChunk {
  /** The bytes; undefined once the worker has put them in `reserved` itself. */
  bytes: Uint8Array | Promise<Uint8Array | undefined>;
  /** Where the piece goes in the sink, when the sink reserved it: its bytes are copied there unless already put there. */
  reserved: Uint8Array[] | undefined;
  sourceBytes: number;
}

/**
 * A Q8_0 piece quantized on the worker (q8-worker.ts), while this thread
 * reads, writes and hashes: into its place in the sink when the sink
 * reserved one (no thread copies it then; resolves to undefined), else into
 * a chunk of the pool. The source goes back to the pool once the worker is
 * done with it. Undefined when the piece is not Q8_0 of F16, BF16 or F32,
 * or its source is not shared memory (a read smaller than the pool serves,
 * or past its live buffers): then it is converted here, as before.
 */
function quantizedOnWorker(t: PlannedTensor, source: Uint8Array, reserved: Uint8Array[] | undefined, permute?: { headRows: number; rowBytes: number }): Promise<Uint8Array | undefined> | undefined {
  const from = t.sourceDtype;
  if (t.type !== "Q8_0" || quantizeQ8_0Into === undefined || (from !== "F16" && from !== "BF16" && from !== "F32")) return undefined;
  const blockBytes = 32 * dtypeBytes(from);
  if (permute !== undefined && (permute.rowBytes % blockBytes !== 0 || permute.headRows % 2 !== 0)) return undefined;
  const out = reserved ?? chunkPool.take((source.length / blockBytes) * 34);
  const done = q8Worker.quantize(from, source, out, permute);
  if (done === undefined) {
    if (reserved === undefined) chunkPool.giveBack(out as Uint8Array);
    return undefined;
  }
  const bytes = done.then(() => {
    chunkPool.giveBack(source);
    return reserved === undefined ? (out as Uint8Array) : undefined;
  });
  // Awaited in order by the writer, perhaps never if an earlier piece failed: never an unhandled rejection.
  bytes.catch(() => undefined);
  return bytes;
}

/**
 * A chunk converted (Q8_0 into a chunk of the pool); the source goes back
 * to the pool unless it is the result itself (a same-width copy).
 */
function convertedOnce(t: PlannedTensor, source: Uint8Array): Uint8Array {
  const bytes = convertChunk(t.sourceDtype, t.type, source, (n) => chunkPool.take(n));
  if (bytes !== source) chunkPool.giveBack(source);
  return bytes;
}

/**
 * Every tensor's converted chunks in file order, each tensor followed by a
 * piece without a chunk that ends it (with its padding reserved, when the
 * sink reserves).
 */
async function* piecesInOrder(model: ModelSource, plan: LlamaGgufPlan, layout: GgufLayout, chunkBytes: number, reserve: Reserve): AsyncIterable<{ tensor: GgufLayout["tensors"][number]; source: string; chunk?: ConvertedChunk; padReserved?: Uint8Array[] }> {
  for (const tensor of layout.tensors) {
    const planned = plan.tensors.find((p) => p.name === tensor.name)!;
    for await (const chunk of convertedChunks(model, planned, chunkBytes, reserve)) yield { tensor, source: planned.source, chunk };
    const pad = padded(tensor.byteLength) - tensor.byteLength;
    const padReserved = pad > 0 ? reserve(pad) : undefined;
    yield { tensor, source: planned.source, ...(padReserved === undefined ? {} : { padReserved }) };
  }
}

/**
 * Pieces read and converted ahead of the one being written. Two kept the
 * Q8_0 worker, the hash worker and the main thread each waiting on another
 * (a 2.14 GB Q8_0 convert used the two cores 72 % of its time, none of the
 * three threads busy more than 60 %): six took it from 2.12-2.23 s to
 * 1.92-1.99 s, for 20 MB more at the peak; ten were no faster.
 */
const PIECES_AHEAD = 6;

/**
 * Writes the planned file into `sink`; checks that every byte the layout
 * promised was written. `chunkBytes` bounds the source bytes converted at
 * once (tests lower it so that tensors split into many chunks).
 */
export async function writeGguf(model: ModelSource, plan: LlamaGgufPlan, layout: GgufLayout, sink: ByteSink, label: string, onProgress?: OnProgress, chunkBytes = CHUNK_BYTES): Promise<void> {
  await sink.write(layout.header);
  let written = layout.header.length;
  let bytes = 0;
  const reserve: Reserve = sink.reserve !== undefined && sink.writeReserved !== undefined ? (length) => sink.reserve!(length) : () => undefined;
  // The next pieces are read and converted while this one is written (and
  // hashed, on a worker), across tensor boundaries too: the pipeline never drains.
  for await (const piece of prefetch(piecesInOrder(model, plan, layout, chunkBytes, reserve), PIECES_AHEAD)) {
    if (piece.chunk !== undefined) {
      const { reserved } = piece.chunk;
      const converted = await piece.chunk.bytes;
      if (reserved !== undefined) {
        const length = reserved.reduce((n, view) => n + view.length, 0);
        if (converted !== undefined && converted.length !== length) throw new ModelError(`${label}: a piece of tensor "${piece.tensor.name}" came to ${converted.length} bytes, not the ${length} reserved for it`);
        if (converted !== undefined) copyInto(reserved, converted);
        await sink.writeReserved!(reserved);
        bytes += length;
      } else {
        await sink.write(converted!);
        bytes += converted!.length;
      }
      chunkPool.giveBack(converted); // written and hashed (or copied): the sink was its last user
      onProgress?.({ kind: "advance", phase: "convert", bytes: piece.chunk.sourceBytes, label: piece.source });
      continue;
    }
    const t = piece.tensor;
    if (bytes !== t.byteLength) throw new ModelError(`${label}: tensor "${t.name}" came to ${bytes} bytes, not the ${t.byteLength} its header entry says`);
    const pad = padded(bytes) - bytes;
    if (piece.padReserved !== undefined) {
      for (const view of piece.padReserved) view.fill(0);
      await sink.writeReserved!(piece.padReserved);
    } else if (pad > 0) await sink.write(new Uint8Array(pad));
    written += bytes + pad;
    bytes = 0;
  }
  if (written !== layout.fileSize) throw new ModelError(`${label}: wrote ${written} bytes, not the ${layout.fileSize} the header lays out`);
}

/** `bytes` into `views` taken as one run of bytes (their lengths add up to its length). */
function copyInto(views: readonly Uint8Array[], bytes: Uint8Array): void {
  let at = 0;
  for (const view of views) {
    view.set(bytes.subarray(at, at + view.length));
    at += view.length;
  }
}

/**
 * general.name for a model: the converter falls back to its directory's
 * name; a Hub repo's is its name, not the snapshot's commit hash.
 */
export function ggufModelName(model: ModelSource): string {
  const named = model.source.replace(/^hf:\/\//, "").replace(/[\\/]+$/, "");
  if (/\.(safetensors|bin|pt|pth)$/i.test(named)) return basename(model.root);
  return basename(named.replace(/@[^/\\]*$/, "")) || basename(model.root);
}


/**
 * The refusals of planGguf that need only config.json and tokenizer.model,
 * read from the first of `dirs` that holds each (a delta's own, else the
 * base's): apply-delta --format gguf says them before any output.
 */
export async function checkGgufCompanions(dirs: readonly string[], label: string): Promise<void> {
  const find = (file: string) => dirs.map((d) => join(d, file)).find((p) => existsSync(p));
  const configPath = find("config.json");
  const spPath = find("tokenizer.model");
  if (spPath === undefined) {
    const bpe = find("tokenizer.json") !== undefined ? " (only tokenizer.json, a BPE tokenizer whose pre-tokenizer llama.cpp's converter identifies by a hash table this tool does not carry)" : "";
    throw new ModelError(`${label}: no tokenizer.model${bpe}: GGUF output is written for SentencePiece tokenizers only`, { rule: "gguf-tokenizer" });
  }
  if (configPath === undefined) throw new ModelError(`${label}: no config.json: a GGUF file needs the model's hyperparameters`, { rule: "gguf-config" });
  const read = async (path: string) => {
    const info = await stat(path);
    if (info.size > MAX_COMPANION_BYTES) throw new ModelError(`${path} is ${info.size} bytes, more than the ${MAX_COMPANION_BYTES} a tokenizer or config file is read with`);
    return new Uint8Array(await readFile(path));
  };
  let config: unknown;
  try {
    config = JSON.parse(new TextDecoder().decode(await read(configPath))) as unknown;
  } catch (err) {
    if (err instanceof ModelError) throw err;
    throw new ModelError(`${configPath} is not valid JSON: ${(err as Error).message}`);
  }
  checkLlamaGgufConfig(label, config, readSentencePieceModel(await read(spPath), spPath));
}
