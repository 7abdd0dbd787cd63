import { dtypeBytes } from "../dtypes.js";
import { DeltaError } from "../errors.js";
import { OUTPUT_FORMAT } from "../formats/registry.js";
import { copyInto } from "../io/atomic-file.js";
import { prefetch, tap } from "../io/chunk-streams.js";
import { encodeHeaderVerbatim } from "../safetensors/header.js";
import type { ReadRange } from "../tensors.js";
import type { FixupSource } from "./fixups.js";
import { numel, sameShape } from "./pairing.js";
import type { TensorRecipe } from "./recipe.js";
import type { InputFile, PlannedFile } from "./recover.js";
import type { FileSet } from "../io/file-set.js";
import { recoverTensor } from "./tensor-transform.js";

/** Where tensors are read from: a model, a delta's shards. */
export interface TensorReader {
  /** Each tensor, with the file of `files` that holds it. */
  readonly tensors: ReadonlyMap<string, { dtype: string; shape: number[]; file: string }>;
  readonly files: FileSet;
  readTensor(name: string, range?: ReadRange): AsyncIterable<Uint8Array>;
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
  fixups?: FixupSource;
  /** Elements restored by fix-ups, reported as each tensor finishes. */
  onFixed?(count: number): void;
  /** Every output byte of a tensor as it is written; `last` once the tensor is complete (integrity sums). */
  onTensorBytes?(recipe: TensorRecipe, chunk: Uint8Array, last: boolean): void;
  /** Where the expected output sha256 comes from, when known. */
  expected?: PlannedFile["expected"];
}

/**
 * A planned safetensors output file made tensor by tensor from recipes: the
 * header first, then each tensor in the header's order, through the one
 * streaming loop. Base checks run on the hash workers and are awaited
 * without stalling the pipeline (each one when the next tensor is done).
 */
export function tensorFile(spec: TensorFileSpec): PlannedFile {
  const headerBytes = encodeHeaderVerbatim(spec.header);
  return {
    path: spec.path,
    size: headerBytes.length + [...spec.recipes.values()].reduce((n, r) => n + numel(r.shape) * dtypeBytes(r.dtype), 0),
    reads: tensorReads(spec),
    ...(spec.expected === undefined ? {} : { expected: spec.expected }),
    async produce(sink, { pool, advance }) {
      const writer = OUTPUT_FORMAT.verbatim(sink, sink.finalPath, spec.header);
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
          const chunks = recoverTensor(recipe, {
            delta: recipe.op === "base" ? undefined : spec.delta.readTensor(t.name),
            base: recipe.base === undefined || spec.base === undefined ? undefined : spec.base.readTensor(recipe.base.name),
            meanRow: recipe.unpaired === "mean" && spec.meanRow !== undefined ? await spec.meanRow(recipe) : undefined,
          }, {
            onBase: baseHash === undefined ? undefined : (bytes) => baseHash.update(bytes),
            fixWindow: fixer === undefined ? undefined : (first, bytes) => fixer.fixWindow(first, bytes),
          });
          await writer.writeTensor(t.name, tap(prefetch(chunks), (chunk) => {
            spec.onTensorBytes?.(recipe, chunk, false);
            advance(chunk.length, t.name);
          }));
          spec.onTensorBytes?.(recipe, new Uint8Array(0), true);
          await checkBases();
          if (baseHash !== undefined) {
            const check = baseHash.digest().then((digest) => {
              if (digest !== expectedBase) throw spec.wrongBase?.(recipe.base!.name) ?? new DeltaError(`wrong base: tensor "${recipe.base!.name}" differs`);
            });
            check.catch(() => undefined); // awaited by checkBases(); this only stops an early rejection counting as unhandled
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
    },
  };
}

/** The files a tensor file reads its tensors from (the fix-ups, read by every file, are not declared: they are kept to the end). */
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
