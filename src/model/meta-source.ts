/**
 * A directory of Meta's original LLaMA release opened as the model
 * transformers' convert_llama_weights_to_hf.py makes of it: Hugging Face
 * tensor names, ranks concatenated, wq/wk permuted, float16, and the config
 * and tokenizer files the script writes. Nothing is converted ahead: each
 * tensor is assembled as it is read, a block of rows at a time (a whole head
 * for the permuted ones), so memory stays bounded by the chunk size.
 */
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { ModelError, ioError } from "../errors.js";
import { dtypeBytes } from "../dtypes.js";
import { INPUT_FORMATS, readWeightFile } from "../formats/registry.js";
import { META_FILES, metaPartName } from "../formats/weight-files.js";
import { localFileSet, type FileSet } from "../io/file-set.js";
import { releasedChunk } from "../io/memory.js";
import { readSmallFile } from "../io/files.js";
import { openRandomAccessFile } from "../io/random-access-file.js";
import { convertInto } from "../kernels/index.js";
import { CHUNK_BYTES, MAX_INDEX_BYTES } from "../limits.js";
import { resolveRange, type RandomAccess, type ReadRange, type TensorInfo, type WeightFile } from "../tensors.js";
import {
  CONVERTER_MAX_SHARD_BYTES,
  META_PARAMS_FILE,
  META_SHARD_PATTERN,
  META_TOKENIZER_FILE,
  convertedCompanionFiles,
  parseMetaParams,
  permutedSourceRow,
  planMetaTensors,
  type MetaTensorPlan,
} from "./meta-checkpoint.js";
import type { ModelSource } from "./types.js";

/** Where a Meta checkpoint is: its files, and a tokenizer.model found beside the size folder (Meta's own layout: LLaMA/tokenizer.model, LLaMA/7B/). */
export interface MetaCheckpointLocation {
  files: FileSet;
  /** Absolute path of tokenizer.model when it is not among `files` but in the parent folder. */
  parentTokenizer?: string;
}

/**
 * Whether the files at the top of a directory are Meta's layout:
 * params.json and consolidated.00.pth, and no Hugging Face weights (which
 * win, as transformers would load them).
 */
export function isMetaLayout(names: readonly string[]): boolean {
  const hfWeights = names.some((n) => INPUT_FORMATS.some((f) => f.isWeightFile(n) || n === f.indexFile));
  return names.includes(META_PARAMS_FILE) && names.includes(META_FILES.first) && !hfWeights;
}

/**
 * The Meta checkpoint `where` names, if it is one: a directory (or a Hub
 * download) holding params.json and consolidated.00.pth, or one of its
 * consolidated.0N.pth files named on its own (which means the checkpoint:
 * a rank alone is not a model).
 */
export async function findMetaCheckpoint(where: string | FileSet): Promise<MetaCheckpointLocation | undefined> {
  if (typeof where !== "string") {
    const names = (await where.list()).filter((n) => !n.includes("/"));
    return isMetaLayout(names) ? { files: where } : undefined;
  }
  const path = resolve(where);
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) return undefined;
  let dir = path;
  if (info.isFile()) {
    if (!META_SHARD_PATTERN.test(basename(path))) return undefined;
    dir = dirname(path);
  } else if (!info.isDirectory()) {
    return undefined;
  }
  const names = await readdir(dir).catch(() => [] as string[]);
  if (!isMetaLayout(names)) return undefined;
  const parent = join(dirname(dir), META_TOKENIZER_FILE);
  const inParent = !names.includes(META_TOKENIZER_FILE) && (await stat(parent).catch(() => undefined))?.isFile() === true;
  return { files: localFileSet(dir), ...(inParent ? { parentTokenizer: parent } : {}) };
}

/** Opens a Meta checkpoint as the Hugging Face model its conversion makes. */
export async function openMetaCheckpoint(location: MetaCheckpointLocation, source: string): Promise<ModelSource> {
  const { files } = location;
  const root = files.root;
  const names = (await files.list()).filter((n) => !n.includes("/"));
  const shardNames = names.filter((n) => META_SHARD_PATTERN.test(n)).sort();
  shardNames.forEach((name, rank) => {
    if (name !== metaPartName(rank)) {
      throw new ModelError(`${root} has ${shardNames.join(", ")}: the model-parallel files must be ${META_FILES.first} to ${metaPartName(shardNames.length - 1)}, with none missing`);
    }
  });
  const paramsPath = join(root, META_PARAMS_FILE);
  const params = parseMetaParams(paramsPath, await readSmallFile(await files.whole(META_PARAMS_FILE), MAX_INDEX_BYTES, "params.json", "E_MODEL"));
  const pytorch = INPUT_FORMATS.find((f) => f.name === "pytorch")!;
  const ranks: WeightFile[] = [];
  try {
    for (const name of shardNames) ranks.push(await readWeightFile(await files.open(name), pytorch));
    const plan = planMetaTensors(root, params, ranks.map((r) => r.tensors));
    const generated = new Map([...convertedCompanionFiles(plan)].map(([k, v]) => [k, new TextEncoder().encode(v)]));
    const hasTokenizer = names.includes(META_TOKENIZER_FILE) || location.parentTokenizer !== undefined;
    // Without a tokenizer.model the script writes no tokenizer files either.
    if (!hasTokenizer) {
      generated.delete("tokenizer_config.json");
      generated.delete("special_tokens_map.json");
    }
    const overlay = new ConvertedFiles(files, generated, location.parentTokenizer);
    return new MetaModel(source, root, overlay, shardNames, ranks, plan.tensors, [...generated.keys(), ...(hasTokenizer ? [META_TOKENIZER_FILE] : [])].sort());
  } catch (err) {
    await Promise.all(ranks.map((r) => r.close()));
    throw err;
  }
}

class MetaModel implements ModelSource {
  readonly format = "pytorch" as const;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: ReadonlyMap<string, Record<string, string>> = new Map();
  readonly convertShardBytes = CONVERTER_MAX_SHARD_BYTES;
  readonly readAs = "Meta's original checkpoint, read as transformers' convert_llama_weights_to_hf.py converts it";
  readonly #plans: Map<string, MetaTensorPlan>;

  constructor(
    readonly source: string,
    readonly root: string,
    readonly files: ConvertedFiles,
    readonly weightFiles: readonly string[],
    private readonly ranks: WeightFile[],
    plans: MetaTensorPlan[],
    readonly extraFiles: readonly string[],
  ) {
    this.#plans = new Map(plans.map((p) => [p.name, p]));
    // A tensor is made from every rank; it is filed under rank 0's file.
    this.tensors = new Map(plans.map((p) => [p.name, { name: p.name, dtype: p.dtype, shape: p.shape, byteLength: p.byteLength, file: weightFiles[0]! }]));
  }

  async *readTensor(name: string, range: ReadRange = {}): AsyncIterable<Uint8Array> {
    const plan = this.#plans.get(name);
    if (plan === undefined) throw new ModelError(`${this.source} has no tensor "${name}"`);
    const { start, end, chunkBytes } = resolveRange(name, plan.byteLength, range, CHUNK_BYTES);
    if (start === end) return;
    const [rows, cols] = plan.shape.length === 2 ? [plan.shape[0]!, plan.shape[1]!] : [1, plan.shape[0]!];
    const rowBytes = cols * dtypeBytes(plan.dtype);
    // A block of whole rows about a chunk in size; for a permuted tensor, whole heads (a permutation moves rows within a head).
    const unit = plan.permuteHeadRows ?? 1;
    const blockRows = unit * Math.max(1, Math.floor(chunkBytes / (unit * rowBytes)));
    for (let row = Math.floor(start / rowBytes / unit) * unit; row < rows && row * rowBytes < end; row += blockRows) {
      const count = Math.min(blockRows, rows - row);
      const block = await this.#rows(plan, row, count, cols);
      const blockStart = row * rowBytes;
      const from = Math.max(start, blockStart) - blockStart;
      const to = Math.min(end, blockStart + block.length) - blockStart;
      // Disjoint views of one block: each is the consumer's own.
      for (let p = from; p < to; p += chunkBytes) yield block.subarray(p, Math.min(to, p + chunkBytes));
    }
  }

  /** Rows [row, row + count) of the converted tensor, float16. */
  async #rows(plan: MetaTensorPlan, row: number, count: number, cols: number): Promise<Uint8Array> {
    const item = dtypeBytes(plan.sourceDtype);
    const n = this.ranks.length;
    let raw: Uint8Array;
    if (plan.join === "rank0") {
      raw = await readAll(this.ranks[0]!, plan.source, row * cols * item, (row + count) * cols * item);
    } else if (plan.join === "rows") {
      const perRank = plan.shape[0]! / n;
      raw = new Uint8Array(count * cols * item);
      for (let r = row; r < row + count; ) {
        const rank = Math.floor(r / perRank);
        const upTo = Math.min(row + count, (rank + 1) * perRank);
        const local = r - rank * perRank;
        const part = await readAll(this.ranks[rank]!, plan.source, local * cols * item, (local + upTo - r) * cols * item);
        raw.set(part, (r - row) * cols * item);
        releasedChunk(part.length);
        r = upTo;
      }
      if (plan.permuteHeadRows !== undefined) {
        const permuted = permuteRows(raw, count, cols * item, plan.permuteHeadRows);
        releasedChunk(raw.length);
        raw = permuted;
      }
    } else {
      // Each output row is every rank's piece of that row, side by side.
      const pieceBytes = (cols / n) * item;
      raw = new Uint8Array(count * cols * item);
      for (let rank = 0; rank < n; rank++) {
        const part = await readAll(this.ranks[rank]!, plan.source, row * pieceBytes, (row + count) * pieceBytes);
        for (let i = 0; i < count; i++) raw.set(part.subarray(i * pieceBytes, (i + 1) * pieceBytes), i * cols * item + rank * pieceBytes);
        releasedChunk(part.length);
      }
    }
    if (plan.sourceDtype === plan.dtype) return raw;
    // from_pretrained(torch_dtype=float16): round to nearest even, as tensor.to(float16).
    const out = new Uint8Array((raw.length / item) * dtypeBytes(plan.dtype));
    convertInto(plan.sourceDtype, "F16", raw, out);
    releasedChunk(raw.length);
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.ranks.map((r) => r.close()));
    await this.files.dispose();
  }
}

/** Rows of whole heads, each head's rows reordered as the script's permute() orders them. */
function permuteRows(raw: Uint8Array, rows: number, rowBytes: number, headRows: number): Uint8Array {
  const out = new Uint8Array(raw.length);
  for (let r = 0; r < rows; r++) {
    const from = permutedSourceRow(r, headRows);
    out.set(raw.subarray(from * rowBytes, (from + 1) * rowBytes), r * rowBytes);
  }
  return out;
}

/** Bytes [start, end) of a rank's tensor, in one buffer. */
async function readAll(file: WeightFile, name: string, start: number, end: number): Promise<Uint8Array> {
  const out = new Uint8Array(end - start);
  let at = 0;
  for await (const chunk of file.readTensor(name, { start, end, chunkBytes: Math.max(1, end - start) })) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/**
 * The checkpoint's files as the converted model's: the directory's own,
 * plus the config and tokenizer files the script writes (held in memory;
 * written to a private scratch folder only when a caller needs a path), and
 * a tokenizer.model from the parent folder.
 */
class ConvertedFiles implements FileSet {
  readonly root: string;
  readonly settled: Promise<void>;
  #scratch: Promise<string> | undefined;
  readonly #written = new Map<string, Promise<string>>();

  constructor(
    private readonly inner: FileSet,
    private readonly generated: ReadonlyMap<string, Uint8Array>,
    private readonly parentTokenizer: string | undefined,
  ) {
    this.root = inner.root;
    this.settled = inner.settled;
  }

  async list(): Promise<readonly string[]> {
    const own = await this.inner.list();
    return [...new Set([...own, ...this.generated.keys(), ...(this.parentTokenizer === undefined ? [] : [META_TOKENIZER_FILE])])].sort();
  }

  async size(path: string): Promise<number> {
    const bytes = this.generated.get(path);
    if (bytes !== undefined) return bytes.length;
    if (path === META_TOKENIZER_FILE && this.parentTokenizer !== undefined) {
      const info = await stat(this.parentTokenizer).catch((err: unknown) => { throw ioError("read", this.parentTokenizer!, err); });
      return info.size;
    }
    return this.inner.size(path);
  }

  async open(path: string): Promise<RandomAccess> {
    const bytes = this.generated.get(path);
    if (bytes !== undefined) return memoryFile(join(this.root, path), bytes);
    if (path === META_TOKENIZER_FILE && this.parentTokenizer !== undefined) return openRandomAccessFile(this.parentTokenizer);
    return this.inner.open(path);
  }

  async whole(path: string): Promise<string> {
    const bytes = this.generated.get(path);
    if (bytes !== undefined) {
      let written = this.#written.get(path);
      if (written === undefined) {
        written = (this.#scratch ??= mkdtemp(join(tmpdir(), "delta-weights-meta-"))).then(async (dir) => {
          const file = join(dir, path);
          await writeFile(file, bytes).catch((err: unknown) => { throw ioError("write", file, err); });
          return file;
        });
        this.#written.set(path, written);
      }
      return written;
    }
    if (path === META_TOKENIZER_FILE && this.parentTokenizer !== undefined) return this.parentTokenizer;
    return this.inner.whole(path);
  }

  /** Removes the scratch folder, if one was made. */
  async dispose(): Promise<void> {
    const scratch = this.#scratch;
    this.#scratch = undefined;
    if (scratch !== undefined) await rm(await scratch, { recursive: true, force: true });
  }
}

function memoryFile(label: string, bytes: Uint8Array): RandomAccess {
  return {
    label,
    size: bytes.length,
    read: async (position, length) => {
      if (position < 0 || length < 0 || position + length > bytes.length) throw new ModelError(`${label}: a read of ${length} bytes at ${position} is past its end (${bytes.length} bytes)`);
      return bytes.slice(position, position + length);
    },
    close: async () => undefined,
  };
}
