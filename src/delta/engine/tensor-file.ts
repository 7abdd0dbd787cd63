import { dtypeBytes, type DType } from "../../dtypes.js";
import { DeltaError, VerifyError } from "../../errors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import { copyInto, type StreamHasher } from "../../io/atomic-file.js";
import { prefetch, tap } from "../../io/chunk-streams.js";
import { lentToConsumer } from "../../io/chunk-pool.js";
import { encodeHeaderVerbatim } from "../../safetensors/header.js";
import type { ReadRange } from "../../tensors.js";
import { numel, sameShape } from "./pairing.js";
import type { TensorRecipe } from "./recipe.js";
import type { InputFile, PlannedFile, ProduceContext } from "./recover.js";
import type { FileSet } from "../../io/file-set.js";
import { recoverTensor, rowBlocks } from "./tensor-transform.js";

/**
 * A convention's own per-tensor correction of the recipe's output, applied
 * to each window of output elements as it streams (our format's fix-ups are
 * one: see own/fixups.ts). The engine knows only this face.
 */
export interface TensorOutputHook {
  /** The correction for one output tensor, or undefined when it has none. */
  forTensor(name: string, numel: number, elementBytes: number): TensorOutputFix | undefined;
}

export interface TensorOutputFix {
  /** Corrects the window of output elements starting at `firstIndex`, in place. */
  fixWindow(firstIndex: number, out: Uint8Array): Promise<void>;
  /** Called once the tensor is written: a correction left unused is the failure to raise here. */
  finish(): Promise<void>;
  /** Elements it corrected. */
  readonly count: number;
}

/** Where tensors are read from: a model, a delta's shards. */
export interface TensorReader {
  /** Each tensor, with the file of `files` that holds it. */
  readonly tensors: ReadonlyMap<string, { dtype: string; shape: number[]; file: string }>;
  readonly files: FileSet;
  readTensor(name: string, range?: ReadRange): AsyncIterable<Uint8Array>;
  /** Bytes [start, start + length) of a tensor as stored, at once: needed for a delta read transposed (TensorRecipe.rowOrder). */
  readRange?(name: string, start: number, length: number): Promise<Uint8Array>;
}

export interface TensorFileSpec {
  /** Output path, relative to the target. */
  path: string;
  /** The file's exact safetensors header text: the publisher's, or one our writer laid out. */
  header: string;
  /** A recipe for every tensor the header lists. */
  recipes: ReadonlyMap<string, TensorRecipe>;
  delta: TensorReader;
  base?: TensorReader;
  /** The mean row of a base tensor, in the output dtype (for recipes whose unpaired rows are "mean"). */
  meanRow?(recipe: TensorRecipe): Promise<Uint8Array>;
  /**
   * Each base tensor's bytes (converted to the output dtype) are hashed and
   * checked against this sha256 when one is given; `wrongBase` names the failure.
   */
  baseSha256?(name: string): string | undefined;
  wrongBase?(name: string): DeltaError;
  /** A convention's own correction of each output tensor (our format's fix-ups). */
  fixups?: TensorOutputHook;
  /** Elements corrected by `fixups`, reported as each tensor finishes. */
  onFixed?(count: number): void;
  /** Every output byte of a tensor as it is written; `last` once the tensor is complete (integrity sums). */
  onTensorBytes?(recipe: TensorRecipe, chunk: Uint8Array, last: boolean): void;
  /** Where the expected output sha256 comes from, when known. */
  expected?: PlannedFile["expected"];
  /**
   * Each output tensor's sha256 as the publisher recorded it (delta.json):
   * checked only when the file is written in another format than the header's,
   * whose file digest is then unknown.
   */
  targetSha256?(name: string): string | undefined;
}

/** The writer a tensor file streams into: the safetensors one, or another format's with the same face. */
interface TensorSink {
  readonly tensors: readonly { name: string; dtype: string; shape: number[] }[];
  writeTensor(name: string, chunks: AsyncIterable<Uint8Array>): Promise<void>;
  finish(): Promise<void>;
}

/** The spec each planned tensor file was made from, so apply-delta can write it in another format (delta/pytorch-output.ts). */
const specs = new WeakMap<PlannedFile, TensorFileSpec>();

export function tensorSpecOf(file: PlannedFile): TensorFileSpec | undefined {
  return specs.get(file);
}

/**
 * A planned safetensors output file made tensor by tensor from recipes: the
 * header first, then each tensor in the header's order, through the one
 * streaming loop. Base checks run on the hash workers and are awaited
 * without stalling the pipeline (each one when the next tensor is done).
 */
export function tensorFile(spec: TensorFileSpec): PlannedFile {
  const headerBytes = encodeHeaderVerbatim(spec.header);
  const file: PlannedFile = {
    path: spec.path,
    size: headerBytes.length + [...spec.recipes.values()].reduce((n, r) => n + numel(r.shape) * dtypeBytes(r.dtype), 0),
    reads: tensorReads(spec),
    ...(spec.expected === undefined ? {} : { expected: spec.expected }),
    produce: (sink, context) => writeRecipes(spec, SAFETENSORS_OUTPUT.verbatim(sink, sink.finalPath, spec.header), context, false),
  };
  specs.set(file, spec);
  return file;
}

/**
 * Streams every tensor of `spec` into `writer`, in the writer's order, through
 * the one recovery loop; with `checkTensors`, each output tensor is hashed
 * and checked against spec.targetSha256.
 */
export async function writeRecipes(spec: TensorFileSpec, writer: TensorSink, { pool, advance }: ProduceContext, checkTensors: boolean): Promise<{ checks: Promise<void> }> {
  const baseChecks: Promise<void>[] = [];
  const checkBases = () => Promise.all(baseChecks.splice(0));
  try {
    for (const t of writer.tensors) {
      const recipe = spec.recipes.get(t.name);
      if (recipe === undefined) throw new DeltaError(`no recipe for tensor "${t.name}" of ${spec.path}`);
      if (recipe.dtype !== t.dtype || !sameShape(recipe.shape, t.shape)) {
        throw new DeltaError(`tensor "${t.name}" of ${spec.path} is ${recipe.dtype} [${recipe.shape}] in the delta, the header says ${t.dtype} [${t.shape}]`);
      }
      const expectedBase = recipe.base === undefined ? undefined : spec.baseSha256?.(recipe.base.name);
      const baseHash = expectedBase === undefined ? undefined : pool.create();
      const fixer = spec.fixups?.forTensor(t.name, numel(t.shape), dtypeBytes(t.dtype));
      const transposed = recipe.rowOrder?.transposed === true;
      const readRange = spec.delta.readRange?.bind(spec.delta);
      // A row-by-row recipe's inputs come a block per chunk, each used as it comes.
      const block = recipe.rowOrder === undefined ? undefined : rowBlocks(recipe).blockElements;
      const chunked = (dtype: DType) => (block === undefined ? undefined : { chunkBytes: block * dtypeBytes(dtype) });
      const chunks = recoverTensor(recipe, {
        delta: recipe.op === "base" || transposed ? undefined : spec.delta.readTensor(t.name, chunked(recipe.deltaDtype ?? recipe.dtype)),
        ...(transposed && readRange !== undefined ? { deltaRange: (start: number, length: number) => readRange(t.name, start, length) } : {}),
        base: recipe.base === undefined || spec.base === undefined ? undefined : spec.base.readTensor(recipe.base.name, chunked(recipe.base.dtype)),
        meanRow: recipe.unpaired === "mean" && spec.meanRow !== undefined ? await spec.meanRow(recipe) : undefined,
      }, {
        onBase: baseHash === undefined ? undefined : (bytes) => baseHash.update(bytes),
        fixWindow: fixer === undefined ? undefined : (first, bytes) => fixer.fixWindow(first, bytes),
      });
      const expectedTensor = checkTensors ? spec.targetSha256?.(t.name) : undefined;
      if (checkTensors && expectedTensor === undefined) throw new DeltaError(`no sha256 recorded for tensor "${t.name}" of ${spec.path}: it cannot be checked in another format`);
      const tensorHash = expectedTensor === undefined ? undefined : pool.create();
      const written = tap(prefetch(chunks), (chunk) => {
        spec.onTensorBytes?.(recipe, chunk, false);
        advance(chunk.length, t.name);
      });
      // The writer is each chunk's last user (TensorFileWriter's contract): it goes back to the pool when the next is asked for.
      await writer.writeTensor(t.name, lentToConsumer(tensorHash === undefined ? written : hashedChunks(written, tensorHash)));
      spec.onTensorBytes?.(recipe, new Uint8Array(0), true);
      await checkBases();
      let baseCheck: Promise<void> | undefined;
      if (baseHash !== undefined) {
        baseCheck = baseHash.digest().then((digest) => {
          if (digest !== expectedBase) throw spec.wrongBase?.(recipe.base!.name) ?? new DeltaError(`wrong base: tensor "${recipe.base!.name}" differs`);
        });
        baseCheck.catch(() => undefined); // awaited by checkBases(); this only stops an early rejection counting as unhandled
        baseChecks.push(baseCheck);
      }
      if (tensorHash !== undefined) {
        // After the base's check: a wrong base is the failure to name, not the output it spoiled.
        const check = (baseCheck ?? Promise.resolve()).then(() => tensorHash.digest()).then((digest) => {
          if (digest !== expectedTensor) throw new VerifyError(`recovered tensor "${t.name}" of ${spec.path}: its sha256 ${digest} does not match ${expectedTensor} from ${spec.expected?.from ?? "the delta"}`);
        });
        check.catch(() => undefined); // awaited by checkBases()
        baseChecks.push(check);
      }
      if (fixer !== undefined) {
        await fixer.finish();
        spec.onFixed?.(fixer.count);
      }
    }
    await writer.finish();
  } catch (err) {
    await Promise.allSettled(baseChecks);
    throw err;
  }
  advance(0, spec.path);
  return { checks: checkBases().then(() => undefined) };
}

/** Passes chunks through, each handed to its hash (which may wait for the workers to catch up) before it goes on. */
async function* hashedChunks(chunks: AsyncIterable<Uint8Array>, hasher: StreamHasher): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    await hasher.update(chunk);
    yield chunk;
  }
}

/** The files a tensor file reads its tensors from (a hook's own files, read by every file, are not declared: they are kept to the end). */
function tensorReads(spec: TensorFileSpec): InputFile[] {
  const reads = new Map<string, InputFile>();
  const add = (reader: TensorReader | undefined, role: string, name: string) => {
    const file = reader?.tensors.get(name)?.file;
    if (reader !== undefined && file !== undefined) reads.set(`${role}:${file}`, { files: reader.files, path: file });
  };
  for (const recipe of spec.recipes.values()) {
    if (recipe.op !== "base") add(spec.delta, "delta", recipe.name);
    if (recipe.base !== undefined) add(spec.base, "base", recipe.base.name);
  }
  return [...reads.values()];
}

/**
 * A planned file copied from `from` (config, tokenizer), checked like every
 * output: a local path, or a file of a file set (perhaps still downloading).
 */
export function copiedFile(path: string, from: string | InputFile, size: number, expected?: PlannedFile["expected"]): PlannedFile {
  return {
    path,
    size,
    ...(typeof from === "string" ? {} : { reads: [from] }),
    ...(expected === undefined ? {} : { expected }),
    async produce(sink, { advance }) {
      await copyInto(typeof from === "string" ? from : await from.files.whole(from.path), sink);
      advance(sink.size, path);
      return {};
    },
  };
}

/** A planned file of known text (an index), checked like every output. */
export function textFile(path: string, text: string, expected?: PlannedFile["expected"]): PlannedFile {
  const bytes = new TextEncoder().encode(text);
  return {
    path,
    size: bytes.length,
    ...(expected === undefined ? {} : { expected }),
    async produce(sink, { advance }) {
      await sink.write(bytes);
      advance(bytes.length, path);
      return {};
    },
  };
}
