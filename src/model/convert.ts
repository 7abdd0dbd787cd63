/**
 * Converts any model source to an output format (model/output-formats.ts).
 * A tensor-file format (safetensors, the default; PyTorch checkpoints, each
 * byte-identical to torch.save of a dict of its tensors in the source's
 * order) writes one file (OUT ends in its extension) or a model directory
 * with save_pretrained's shard names in that format, an index when there is
 * more than one shard, and the files that travel with the model. A
 * whole-model format (GGUF) writes one file. Streaming: memory is bounded by
 * the chunk size. Every output file appears under its final name only when
 * complete.
 */
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { DeltaWeightsError, ModelError, UsageError } from "../errors.js";
import type { OutputOptions, TensorFileFormat } from "../formats/output-format.js";
import { AtomicFile, copyInto, removeStalePartials, type StreamHasher } from "../io/atomic-file.js";
import { withOutputLock } from "../io/output-lock.js";
import { prefetch, tap } from "../io/chunk-streams.js";
import { lentToConsumer } from "../io/chunk-pool.js";
import { checkFreeSpace, inputOf, OutputJob, refuseOverlap } from "../io/output-guard.js";
import { CHUNK_BYTES } from "../limits.js";
import type { OnProgress } from "../progress.js";
import type { MetadataInput } from "../safetensors/header.js";
import { openSafetensorsFile } from "../formats/registry.js";
import { openModel } from "./open-model.js";
import { formatIndex, planShards } from "../formats/shard-plan.js";
import { asLocalSource, type LocalSource, type ModelSource } from "./types.js";
import type { PreparedModelFile } from "./model-file-format.js";
import { chooseOutputFormat, refuseUnacceptedOutputOptions, type OutputFormatName } from "./output-formats.js";

/**
 * The output options (maxShardBytes: largest shard in bytes, directory
 * output only, default one file; byteorderRecord: PyTorch; outtype and
 * modelName: GGUF, by default f16 and the model directory's or repo's name),
 * each refused by a format that does not take it.
 */
export interface ConvertOptions extends OutputOptions {
  /** Write into a directory that holds other files (none of them is overwritten). */
  force?: boolean;
  onProgress?: OnProgress;
  /** Called, and awaited, as each file of a directory output is in its final place (make-delta uploads resharded shards as they come). */
  onFileWritten?: (file: ConvertedFile) => void | Promise<void>;
  /** An output format's name (see model/output-formats.ts; default safetensors); by default, the one whose extension OUT has (.bin, .pt, .pth: pytorch; .gguf: gguf). */
  format?: OutputFormatName;
  /** A whole-model file's SHA-256 is computed by these (hash workers), not on the calling thread, so that it overlaps converting and writing. */
  createHasher?: () => StreamHasher;
}

export interface ConvertedFile {
  /** Relative to the output directory (or the file name for one-file output). */
  path: string;
  size: number;
  sha256: string;
}

export interface ConvertResult {
  out: string;
  files: ConvertedFile[];
  tensors: number;
  /** Tensor bytes written (without headers). */
  bytes: number;
  /** The output format written, by its registry name (model/output-formats.ts): the one asked for, or the one OUT's name claims. */
  format: string;
  /** GGUF output: the tensor type chosen (f32, f16, bf16, q8_0). */
  outtype?: string;
}

/** What transformers' save_pretrained writes into every shard. */
const TRANSFORMERS_METADATA: [string, string][] = [["format", "pt"]];

export async function convertModel(src: string | LocalSource, out: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  return convert(src, out, options, true);
}

/** convertModel for a caller that already holds the output's lock (make-delta resharding into its own directory). */
export async function convertIntoLockedOutput(src: string, out: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  return convert(src, out, options, false);
}

async function convert(src: string | LocalSource, out: string, options: ConvertOptions, lock: boolean): Promise<ConvertResult> {
  const format = chooseOutputFormat(out, options.format);
  refuseUnacceptedOutputOptions(format, options);
  const singleFile = format.kind === "model file" ? format.directory !== true : format.claimsFile(out);
  if (!singleFile && options.maxShardBytes !== undefined && options.maxShardBytes < 1) {
    throw new UsageError("--max-shard-size must be at least 1 byte");
  }
  if (singleFile && options.maxShardBytes !== undefined) {
    throw new UsageError(`--max-shard-size needs a directory as OUT, not the single file ${out}`);
  }
  if (format.kind === "model file") format.warmUp?.(options);
  const input = asLocalSource(src);
  const model = await openModel(input.path, { source: input.source });
  try {
    refuseOverlap(out, [inputOf("input", model)]);
    // A whole-model file: every refusal (architecture, tokenizer, tensors) before any output.
    const prepared = format.kind === "model file" ? await format.prepare(model, options) : undefined;
    // Tensor bytes, headers and companions: an estimate from above is enough to fail early.
    const needed = prepared?.fileSize ?? [...model.tensors.values()].reduce((n, t) => n + t.byteLength + 1024 + 3 * t.name.length, 0);
    await checkFreeSpace(singleFile ? dirname(resolve(out)) : out, needed);
    const write = async (job?: OutputJob): Promise<ConvertResult> => ({
      ...(prepared?.files !== undefined
        ? await writeModelDirectory(out, prepared, options, job)
        : format.kind === "model file"
          ? await writeModelFile(out, prepared!, options)
          : await writeTensorFiles(model, out, singleFile, format, options, job)),
      format: format.name,
    });
    if (!lock) return await write();
    // One writer per output: the directory's lock, or for one file a lock of that file's own.
    const [lockDir, lockName] = singleFile ? [dirname(resolve(out)), `.${basename(out)}.lock`] : [out, undefined];
    return await withOutputLock(lockDir, "convert", async () => {
      if (singleFile) {
        // One file: never one that is there already (convert writes no record beside a single file).
        if (existsSync(out)) throw new DeltaWeightsError("E_IO", `${out} already exists: it is not overwritten; move it away or choose another name`);
        return write();
      }
      await removeStalePartials(out);
      const job = await OutputJob.claim(out, "convert", { force: options.force });
      const converted = await write(job);
      await job.finish();
      return converted;
    }, lockName);
  } finally {
    await model.close();
  }
}

/** The generic part of a tensor-file format's output: its files (one, or shards with an index) and the companions. */
async function writeTensorFiles(model: ModelSource, out: string, singleFile: boolean, format: TensorFileFormat, options: ConvertOptions, job?: OutputJob): Promise<Omit<ConvertResult, "format">> {
  const output: ShardOutput = {
    format,
    ...(format.carriesMetadata ? { metadata: await outputMetadata(model, singleFile) } : {}),
    ...(options.byteorderRecord === undefined ? {} : { byteorderRecord: options.byteorderRecord }),
  };
  // Every format's shards are laid out as safetensors' are (the same split), under save_pretrained's names in that format.
  const fileName = (name: string) => format.shardName(name);
  const indexFile = format.indexFile;
  const tensors = [...model.tensors.values()];
  const totalBytes = tensors.reduce((sum, t) => sum + t.byteLength, 0);
  const onProgress = options.onProgress;
  onProgress?.({ kind: "start", phase: "convert", totalBytes, label: basename(out) });

  const files: ConvertedFile[] = [];
  if (singleFile) {
    files.push(await writeShard(model, resolve(out), basename(out), tensors.map((t) => t.name), output, onProgress));
  } else {
    const outDir = resolve(out);
    const plan = planShards(tensors, options.maxShardBytes ?? model.convertShardBytes);
    const assignment = new Map([...plan.assignment].map(([tensor, file]) => [tensor, fileName(file)]));
    const shardFiles = plan.files.map(fileName);
    const names = [...shardFiles, ...(shardFiles.length > 1 ? [indexFile] : []), ...model.extraFiles];
    await job?.claimFiles(names);
    const done = async (file: ConvertedFile) => {
      files.push(file);
      await options.onFileWritten?.(file);
    };
    for (const file of shardFiles) {
      const names = tensors.filter((t) => assignment.get(t.name) === file).map((t) => t.name);
      await done(await writeShard(model, join(outDir, file), file, names, output, onProgress, job));
    }
    if (shardFiles.length > 1) {
      const text = new TextEncoder().encode(formatIndex(totalBytes, assignment));
      await done(await writeOutput(join(outDir, indexFile), indexFile, job, (sink) => sink.write(text)));
    }
    for (const extra of model.extraFiles) {
      await done(await writeOutput(join(outDir, extra), extra, job, async (sink) => copyInto(await model.files.whole(extra), sink)));
    }
  }
  onProgress?.({ kind: "end", phase: "convert" });
  return { out, files, tensors: tensors.length, bytes: totalBytes };
}

/** One whole-model file, written under a temporary name and put in place once complete. */
async function writeModelFile(out: string, prepared: PreparedModelFile, options: ConvertOptions): Promise<Omit<ConvertResult, "format">> {
  options.onProgress?.({ kind: "start", phase: "convert", totalBytes: prepared.sourceBytes, label: basename(out) });
  const file = await writeOutput(resolve(out), basename(out), undefined, (sink) => prepared.write(sink, out, options.onProgress), options.createHasher?.());
  options.onProgress?.({ kind: "end", phase: "convert" });
  return { out, files: [file], tensors: prepared.tensors, bytes: prepared.fileSize - prepared.headerBytes, ...(prepared.outtype === undefined ? {} : { outtype: prepared.outtype }) };
}

/** A directory format's files (Meta's layout), each under a temporary name until complete, through the job. */
async function writeModelDirectory(out: string, prepared: PreparedModelFile, options: ConvertOptions, job?: OutputJob): Promise<Omit<ConvertResult, "format">> {
  const outDir = resolve(out);
  const planned = prepared.files ?? [];
  await job?.claimFiles(planned.map((f) => f.name));
  options.onProgress?.({ kind: "start", phase: "convert", totalBytes: prepared.sourceBytes, label: basename(out) });
  const files: ConvertedFile[] = [];
  for (const planned1 of planned) {
    const file = await writeOutput(join(outDir, planned1.name), planned1.name, job, (sink) => planned1.write(sink, planned1.name, options.onProgress));
    files.push(file);
    await options.onFileWritten?.(file);
  }
  options.onProgress?.({ kind: "end", phase: "convert" });
  return { out, files, tensors: prepared.tensors, bytes: prepared.fileSize - prepared.headerBytes };
}

/**
 * The `__metadata__` of the output. The source's own metadata is carried
 * over (a single file keeps it exactly, key order included, so one file
 * converts to the identical file). When the source has none, a directory
 * output gets {"format":"pt"} in every shard, as transformers'
 * save_pretrained writes (and its loader checks "format"); so does any output
 * from a PyTorch checkpoint, as Hugging Face's conversion script does. A
 * single safetensors file without metadata stays without.
 * Several source files: their metadata merged in file order, the first value
 * of a key winning (shards of one model normally carry the same metadata).
 */
async function outputMetadata(model: ModelSource, singleFile: boolean): Promise<MetadataInput> {
  const merged = new Map<string, string>();
  let sourceHasMetadata = false;
  if (model.format === "safetensors") {
    for (const rel of model.weightFiles) {
      // Reopened for the exact key order (a Record reorders integer-like keys).
      const file = await openSafetensorsFile(join(model.root, rel));
      try {
        const entries = file.header.metadataEntries;
        if (entries !== null) sourceHasMetadata = true;
        for (const [k, v] of entries ?? []) if (!merged.has(k)) merged.set(k, v);
      } finally {
        await file.close();
      }
    }
  }
  if (sourceHasMetadata) return [...merged];
  return !singleFile || model.format === "pytorch" ? TRANSFORMERS_METADATA : null;
}

/** How a shard is written: its format, with the metadata of formats that carry it and the options given. */
interface ShardOutput {
  format: TensorFileFormat;
  metadata?: MetadataInput;
  byteorderRecord?: boolean;
}

async function writeShard(
  model: ModelSource,
  path: string,
  label: string,
  names: string[],
  output: ShardOutput,
  onProgress: OnProgress | undefined,
  job?: OutputJob,
): Promise<ConvertedFile> {
  return writeOutput(path, label, job, async (file) => {
    const specs = names.map((name) => {
      const t = model.tensors.get(name);
      if (t === undefined) throw new ModelError(`${model.source} has no tensor "${name}"`);
      return { name, dtype: t.dtype, shape: t.shape };
    });
    const writer = output.format.create(file, path, specs, output);
    for (const t of writer.tensors) {
      // The writer is each chunk's last user (TensorFileWriter's contract): it goes back to the pool when the next is asked for.
      await writer.writeTensor(t.name, lentToConsumer(tap(prefetch(model.readTensor(t.name, { chunkBytes: CHUNK_BYTES })), (chunk) => {
        onProgress?.({ kind: "advance", phase: "convert", bytes: chunk.length, label: t.name });
      })));
    }
    await writer.finish();
  });
}

/**
 * One output file, written by `write` under a temporary name and put in
 * place: through the job, which never overwrites another's file with other
 * bytes, when the output is a directory.
 */
async function writeOutput(path: string, label: string, job: OutputJob | undefined, write: (sink: AtomicFile) => Promise<void>, hasher?: StreamHasher): Promise<ConvertedFile> {
  const file = await AtomicFile.create(path, hasher);
  try {
    await write(file);
    const size = file.size;
    const sha256 = await file.close();
    if (job === undefined) await file.publish();
    else await job.publish(label, file, sha256);
    return { path: label, size, sha256 };
  } catch (err) {
    await file.abort();
    throw err;
  }
}

