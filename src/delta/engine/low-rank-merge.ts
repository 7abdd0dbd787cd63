import { dtypeBytes, type DType, type FloatDType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import { convertInto } from "../../kernels/index.js";
import { openLowRankBlocks, type BlockStep } from "../../kernels/low-rank-step.js";
import { CHUNK_BYTES, MAX_LORA_FACTOR_BYTES } from "../../limits.js";
import { chunkPool, lentToConsumer } from "../../io/chunk-pool.js";
import { prefetch } from "../../io/chunk-streams.js";
import type { ModelSource } from "../../model/types.js";
import { ExactReader } from "./exact-reader.js";
import type { InputFile, PlannedFile } from "./recover.js";
import { numel } from "./pairing.js";

/**
 * The engine's "base plus low-rank products" recipe (a LoRA merge; see
 * recipe.ts for the element-wise one), streaming: each output tensor is made a
 * block of rows at a time from the base's rows (or a whole tensor from an
 * adapter that replaces them) and, for each adapter in order, the same rows
 * of `scaling * (B @ A)`. Memory per tensor: both factors as float32 (rank x
 * (rows + columns) elements, capped by MAX_LORA_FACTOR_BYTES) and a block of
 * CHUNK_BYTES in the kernel's memory (another as float32 between two
 * adapters' steps), and the pool's chunks in flight: the block read ahead,
 * the one merged, the one being hashed and written.
 *
 * Arithmetic per step, as torch does it on CPU: the factors' values (rounded
 * first to `factorDType` when the publisher's tool held them in another dtype),
 * their float32 product summed in order (kernels/low-rank-step.ts), times the
 * float32 value of the scaling; rounded to `deltaDType` when the tool casts
 * the update back; then `W += update` in place: the float32 sum of the two,
 * rounded to W's dtype.
 */

/** One LoRA update to add to a tensor. */
export interface LoraStep {
  /** The adapter's weights, and its two factors there. */
  weights: ModelSource;
  a: { name: string; dtype: FloatDType; shape: number[] };
  b: { name: string; dtype: FloatDType; shape: number[] };
  /** The update is the transpose of B @ A (embeddings, fan_in_fan_out). */
  transposed: boolean;
  /** The scaling as the publisher's tool holds it (a double); torch multiplies by its float32 value. */
  scaling: number;
  /** The dtype the tool held the factors in before its float32 product ("F32": as stored). */
  factorDType: FloatDType;
  /** The dtype the tool casts the scaled product to before adding ("F32": not cast). */
  deltaDType: FloatDType;
}

/** How one output tensor is made. */
export interface MergedTensor {
  name: string;
  /** The output's dtype (the base's) and shape (a replacing tensor's, when one grows the vocabulary). */
  dtype: FloatDType | DType;
  shape: number[];
  /** Where its starting values come from: the base tensor, or an adapter's whole tensor (converted to `dtype`). */
  from: { model: ModelSource; name: string; dtype: DType };
  /** LoRA updates added in order; none: the source's bytes are copied. */
  steps: LoraStep[];
}

/** Where a merged file's and each tensor's sha256 are recorded, as they are written (adapters/merge-record.ts is one). */
export interface MergeDigests {
  fileDigest(path: string, entry: Promise<{ size: number; sha256: string }>): void;
  tensorDigest(name: string, spec: { dtype: DType; shape: number[]; file: string }, sha256: Promise<string>): void;
}

export interface MergedFileSpec {
  path: string;
  headerText: string;
  tensors: ReadonlyMap<string, MergedTensor>;
  /** Where the file's and each tensor's sha256 are recorded. */
  record?: MergeDigests;
}

/** A planned output file whose tensors are merged as their specs say. */
export function mergedFile(spec: MergedFileSpec, size: number): PlannedFile {
  return {
    path: spec.path,
    size,
    reads: mergedReads(spec),
    async produce(sink, { pool, advance }) {
      const writer = SAFETENSORS_OUTPUT.verbatim(sink, sink.finalPath, spec.headerText);
      for (const t of writer.tensors) {
        const merged = spec.tensors.get(t.name);
        if (merged === undefined) throw new DeltaError(`no plan for tensor "${t.name}" of ${spec.path}`);
        const tensorHash = spec.record === undefined ? undefined : pool.create();
        // The next block is made while this one is hashed and written (prefetch); the writer is each
        // chunk's last user, and gives it back to the pool when it asks for the next.
        await writer.writeTensor(t.name, lentToConsumer(counted(prefetch(mergeTensor(merged)), async (chunk) => {
          await tensorHash?.update(chunk);
          advance(chunk.length, t.name);
        })));
        if (tensorHash !== undefined) spec.record!.tensorDigest(t.name, { dtype: t.dtype, shape: [...t.shape], file: spec.path }, tensorHash.digest());
      }
      await writer.finish();
      // The file's sha256 is the one its sink computes as it writes (no second pass over the bytes).
      if (spec.record !== undefined) spec.record.fileDigest(spec.path, sink.sha256.then((sha256) => ({ size: writer.fileSize, sha256 })));
      advance(0, spec.path);
      return {};
    },
  };
}

/** Each chunk passed to `seen` (hashing, progress) before it is written. */
async function* counted(chunks: AsyncIterable<Uint8Array>, seen: (chunk: Uint8Array) => Promise<void>): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    await seen(chunk);
    yield chunk;
  }
}

function mergedReads(spec: MergedFileSpec): InputFile[] {
  const reads = new Map<string, InputFile>();
  const add = (model: ModelSource, name: string) => {
    const file = model.tensors.get(name)?.file;
    if (file !== undefined) reads.set(`${model.root}\0${file}`, { files: model.files, path: file });
  };
  for (const t of spec.tensors.values()) {
    add(t.from.model, t.from.name);
    for (const step of t.steps) {
      add(step.weights, step.a.name);
      add(step.weights, step.b.name);
    }
  }
  return [...reads.values()];
}

/**
 * The output tensor's bytes, block by block of rows. Each chunk is the
 * consumer's: its last user gives it back to the chunk pool.
 */
export async function* mergeTensor(t: MergedTensor): AsyncGenerator<Uint8Array> {
  const fromType = t.from.dtype;
  if (t.steps.length === 0 && fromType === t.dtype) {
    // The source's bytes as read (pooled chunks, passed on whole).
    const source = new ExactReader(prefetch(t.from.model.readTensor(t.from.name)), `tensor "${t.from.name}" of ${t.from.model.source}`);
    try {
      const total = numel(t.shape) * dtypeBytes(t.dtype);
      for (let done = 0; done < total; ) {
        const n = Math.min(CHUNK_BYTES, total - done);
        yield await source.read(n);
        done += n;
      }
      await source.expectEnd();
    } finally {
      await source.close();
    }
    return;
  }
  const out = t.dtype as FloatDType;
  const rows = t.shape.length >= 2 ? t.shape[0]! : 1;
  const cols = numel(t.shape) / Math.max(1, rows);
  const [inSize, outSize] = [dtypeBytes(fromType), dtypeBytes(out)];
  // Blocks of whole rows within a chunk, read as one chunk each (so each is used whole and given
  // back); between two adapters' steps a block is held as float32.
  const blockRows = Math.max(1, Math.floor(CHUNK_BYTES / (cols * Math.max(inSize, outSize, t.steps.length > 1 ? 4 : 0))));
  const source = new ExactReader(prefetch(t.from.model.readTensor(t.from.name, { chunkBytes: blockRows * cols * inSize })), `tensor "${t.from.name}" of ${t.from.model.source}`);
  const blocks = t.steps.length === 0 ? undefined : openLowRankBlocks(out, rows, cols, t.steps.map((step) => blockStep(step)), blockRows);
  try {
    if (blocks !== undefined) {
      await Promise.all(t.steps.map((step, s) => loadFactors(step, t, (which, first, values) => blocks.setFactor(s, which, first, values))));
    }
    for (let row = 0; row < rows; row += blockRows) {
      const n = Math.min(blockRows, rows - row);
      const raw = await source.read(n * cols * inSize);
      // Replacing a base tensor copies the adapter's values into the base's dtype (PEFT's
      // modules_to_save copy, Chinese-LLaMA-Alpaca's .half()): the merge starts from those.
      let w = raw;
      if (fromType !== out) {
        w = chunkPool.take(n * cols * outSize);
        convertInto(fromType as FloatDType, out, raw, w);
        chunkPool.giveBack(raw);
      }
      // In place: the block is ours, and goes to the consumer.
      blocks?.merge(row, w, w);
      yield w;
    }
    await source.expectEnd();
  } finally {
    blocks?.close();
    await source.close();
  }
}

/** A step as the kernel takes it: the factors' shapes, the float32 scaling, the update's dtype. */
function blockStep(step: LoraStep): BlockStep {
  return { rank: step.a.shape[0]!, aCols: step.a.shape[1]!, bRows: step.b.shape[0]!, transposed: step.transposed, scale: Math.fround(step.scaling), deltaDType: step.deltaDType };
}

/** Rounds float32 values to `dtype` and back, in place: what a cast to `dtype` leaves. */
function roundThrough(dtype: FloatDType, values: Float32Array): void {
  if (dtype === "F32") return;
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const rounded = new Uint8Array(values.length * dtypeBytes(dtype));
  convertInto("F32", dtype, bytes, rounded);
  convertInto(dtype, "F32", rounded, bytes);
}

/**
 * Refuses a step whose factors do not make the tensor's shape, or are too
 * large to hold as float32: called when the merge is planned, before any
 * output, and again when the factors are read.
 */
export function checkLoraStep(step: LoraStep, t: MergedTensor): void {
  const rows = t.shape.length >= 2 ? t.shape[0]! : 1;
  const cols = numel(t.shape) / Math.max(1, rows);
  const [rank, aCols] = [step.a.shape[0]!, step.a.shape[1]!];
  const bRows = step.b.shape[0]!;
  const product = step.transposed ? [aCols, bRows] : [bRows, aCols];
  if (product[0] !== rows || product[1] !== cols || step.b.shape[1] !== rank) {
    throw new DeltaError(`${step.weights.source}: tensor "${step.a.name}" [${step.a.shape}] and "${step.b.name}" [${step.b.shape}] make a [${product}] update for "${t.name}", which is [${rows}, ${cols}]`);
  }
  const bytes = (rank * (aCols + bRows)) * 4;
  if (bytes > MAX_LORA_FACTOR_BYTES) {
    throw new DeltaError(`${step.weights.source}: tensor "${step.a.name}": rank ${rank} factors of ${aCols} and ${bRows} elements need ${bytes} bytes as float32, more than the ${MAX_LORA_FACTOR_BYTES} this tool holds per tensor`);
  }
}

/**
 * Both factors as float32 (as the tool holds them), checked against the
 * output's shape, passed to `into` a chunk of elements at a time.
 */
async function loadFactors(step: LoraStep, t: MergedTensor, into: (which: "a" | "b", first: number, values: Float32Array) => void): Promise<void> {
  checkLoraStep(step, t);
  const load = async (which: "a" | "b"): Promise<void> => {
    const spec = step[which];
    const reader = new ExactReader(step.weights.readTensor(spec.name), `tensor "${spec.name}" of ${step.weights.source}`);
    try {
      const size = dtypeBytes(spec.dtype);
      const total = numel(spec.shape);
      const per = Math.max(1, Math.floor(CHUNK_BYTES / size));
      const values = new Float32Array(Math.min(per, total));
      for (let done = 0; done < total; ) {
        const n = Math.min(per, total - done);
        const part = values.subarray(0, n);
        const chunk = await reader.read(n * size);
        convertInto(spec.dtype, "F32", chunk, new Uint8Array(part.buffer, 0, n * 4));
        chunkPool.giveBack(chunk); // converted: its last use
        // PEFT's parameters take the values as load_state_dict copies them in: rounded to their dtype.
        if (step.factorDType !== "F32" && step.factorDType !== spec.dtype) roundThrough(step.factorDType, part);
        into(which, done, part);
        done += n;
      }
      await reader.expectEnd();
    } finally {
      await reader.close();
    }
  };
  await Promise.all([load("a"), load("b")]);
}
