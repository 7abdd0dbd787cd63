import { createHash } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { dtypeBytes } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import { isTransformersSafetensorsName } from "../../formats/weight-files.js";
import { PYTORCH_CHECKPOINTS_FILE, formatCheckpoints, recordCheckpoints } from "../engine/pytorch-checkpoints.js";
import type { OutputFile, OutputLayout } from "../../formats/output-layout.js";
import { HashPool } from "../../hash/hash-pool.js";
import { AtomicFile, copyFileAtomic, removeStalePartials } from "../../io/atomic-file.js";
import { prefetch } from "../../io/chunk-streams.js";
import { lentToConsumer } from "../../io/chunk-pool.js";
import { releasedChunk } from "../../io/memory.js";
import { checkFreeSpace, inputOf, linkOnTheWay, OutputJob, refuseOverlap } from "../../io/output-guard.js";
import { withOutputLock } from "../../io/output-lock.js";
import { convertIntoLockedOutput } from "../../model/convert.js";
import type { ModelSource } from "../../model/types.js";
import type { OnProgress } from "../../progress.js";
import { MAX_MANIFEST_BYTES, MAX_TENSORS_PER_MODEL } from "../../limits.js";
import { formatBytes } from "../../text.js";
import { VERSION } from "../../version.js";
import { opFor } from "./delta-weights.js";
import { asLocalSource, type LocalSource } from "../../model/types.js";
import { checkTargetFitsBase } from "../engine/base-fit.js";
import { FixupCollector } from "./fixups.js";
import { FIXUPS_FILE, MANIFEST_FILE, MANIFEST_FORMAT, manifestPieces, type Codec, type FileEntry, type Manifest, type ManifestText, type TargetTensorEntry, type TensorEntry } from "./manifest.js";
import { openInputModel } from "../engine/open-input.js";
import { numel } from "../engine/pairing.js";
import { planTensor, type TensorRecipe } from "../engine/recipe.js";
import { readManifest } from "./read-manifest.js";
import { publicSourceName } from "./source-name.js";
import { layoutOf } from "./target-layout.js";
import { subtractTensor } from "../engine/tensor-transform.js";

export interface MakeDeltaOptions {
  /** The base model: a local file or directory (the library's Hub front end resolves repo ids to these). */
  base: string | LocalSource;
  /** The fine-tuned model, likewise. */
  target: string | LocalSource;
  /** Output directory for the delta. */
  delta: string;
  codec?: Codec;
  /** Shard the delta at this size instead of mirroring the target's layout. */
  maxShardBytes?: number;
  /** Write into a directory that holds other files (none of them is overwritten). */
  force?: boolean;
  /** Hashing threads (default: one per core, at most two). */
  threads?: number;
  onProgress?: OnProgress;
  /**
   * Called, and awaited, once per delta file as soon as it is final on disk
   * under its final name: each shard, the fix-ups, the resharded shards and
   * index, the companions, delta.json last. `make-delta --push-to-hub`
   * uploads each file while the next is made. A rejection stops the make.
   */
  onFileWritten?: (file: WrittenFile) => void | Promise<void>;
  /** Stops the make between tensors, failing with the signal's reason (an upload that failed need not wait for hours of work). */
  signal?: AbortSignal;
}

/** A delta file in its final place. */
export interface WrittenFile {
  /** Relative to the delta directory, with "/" separators. */
  path: string;
  absPath: string;
  size: number;
  sha256: string;
}

export interface MakeDeltaResult {
  delta: string;
  codec: Codec;
  tensors: number;
  /** Tensors only in the target, stored as they are. */
  added: string[];
  /** Tensors only in the base, not in the delta. */
  dropped: string[];
  /** Elements where round(base + delta) needed a fix-up to be exact. */
  fixups: number;
  files: Record<string, FileEntry>;
  bytes: number;
  /** Decisions worth a line in the summary (a PyTorch release's checkpoints recorded, or why not). */
  notes: string[];
}

/**
 * target - base, streamed tensor by tensor. The delta mirrors the target's
 * shard layout, each shard under the target file's own header (same names,
 * dtypes and shapes), and delta.json records everything apply-delta needs to
 * prove the recovery exact.
 */
export async function makeDelta(options: MakeDeltaOptions): Promise<MakeDeltaResult> {
  const codec = options.codec ?? "add";
  const baseSource = asLocalSource(options.base);
  const targetSource = asLocalSource(options.target);
  const base = await openInputModel(baseSource.path, baseSource.source, "base");
  try {
    const target = await openInputModel(targetSource.path, targetSource.source, "target");
    try {
      refuseDeltaAsModel("--base", base);
      refuseDeltaAsModel("--target", target);
      // Another model size or a different tensor: refused from the headers, before the output is touched.
      checkTargetFitsBase(target, base);
      refuseOverlap(options.delta, [inputOf("base", base), inputOf("target", target)]);
      return await withOutputLock(options.delta, "make-delta", async () => {
        await removeStalePartials(options.delta);
        const job = await OutputJob.claim(options.delta, "make-delta", { force: options.force, ours: await earlierDeltaFiles(options.delta) });
        const made = await make(base, target, codec, job, options);
        await job.finish();
        return made;
      });
    } finally {
      await target.close();
    }
  } finally {
    await base.close();
  }
}

/** A delta given as a model would make a delta of a delta: refuse it by name. */
function refuseDeltaAsModel(flag: string, model: ModelSource): void {
  if (existsSync(join(model.root, MANIFEST_FILE))) {
    throw new DeltaError(`${flag} ${model.source} holds ${MANIFEST_FILE}: it is a delta, not a model; recover the model with apply-delta first`);
  }
}

/** What every delta file of one make shares. */
interface MakeContext {
  base: ModelSource;
  target: ModelSource;
  recipes: Map<string, TensorRecipe>;
  fixups: FixupCollector;
  manifest: Manifest;
  pool: HashPool;
  progress: OnProgress | undefined;
  /** Where the delta's weight files are written (the delta directory, or a staging directory to reshard from). */
  weightsDir: string;
  signal: AbortSignal | undefined;
}

async function make(base: ModelSource, target: ModelSource, codec: Codec, job: OutputJob, options: MakeDeltaOptions): Promise<MakeDeltaResult> {
  const out = options.delta;
  const recipes = new Map<string, TensorRecipe>();
  for (const t of target.tensors.values()) {
    const paired = base.tensors.get(t.name);
    recipes.set(t.name, planTensor(t, paired, opFor(codec, t.dtype, paired !== undefined), { baseSource: base.source, role: "target" }));
  }
  const layout = await layoutOf(target);
  // layoutOf read every header again; what it decoded on the way is garbage now.
  releasedChunk(layout.files.reduce((n, f) => n + f.headerText.length * 2, 0));
  checkManifestSize(layout, recipes, base, target, options.delta);
  const totalBytes = layout.files.reduce((n, f) => n + f.size, 0);
  await checkFreeSpace(out, totalBytes);
  await claimOutputNames(job, layout, target, options.maxShardBytes !== undefined);
  await removeEarlierDelta(out);

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    codec,
    tool: `delta-weights ${VERSION}`,
    base: { source: await publicSourceName(base, asLocalSource(options.base)), tensors: new Map(), dropped: [...base.tensors.keys()].filter((n) => !target.tensors.has(n)) },
    target: { source: await publicSourceName(target, asLocalSource(options.target)), files: new Map(), tensors: new Map(), headers: new Map() },
    delta: { files: new Map(), weights: [] },
  };
  const fixups = await FixupCollector.create(out);
  const pool = new HashPool(options.threads);
  const progress = options.onProgress;
  progress?.({ kind: "start", phase: "make", totalBytes });
  // With --max-shard-size the shards are first written in the target's layout
  // (so the target's file hashes come out of the same pass), then resharded.
  const weightsDir = options.maxShardBytes === undefined ? out : AtomicFile.tempPathFor(join(out, "staging"));
  const context: MakeContext = { base, target, recipes, fixups, manifest, pool, progress, weightsDir, signal: options.signal };
  const written = async (rel: string, entry: FileEntry) => {
    options.signal?.throwIfAborted();
    await options.onFileWritten?.({ path: rel, absPath: join(out, ...rel.split("/")), size: entry.size, sha256: entry.sha256 });
  };
  try {
    for (const file of layout.files) {
      const { targetFile, deltaFile } = await writeDeltaFile(file, context);
      manifest.target.files.set(file.file, targetFile);
      manifest.target.headers.set(file.file, file.headerText);
      manifest.delta.files.set(file.file, deltaFile);
      manifest.delta.weights.push(file.file);
      // A staged shard is not a delta file yet: the resharded ones are reported as they are written.
      if (weightsDir === out) await written(file.file, deltaFile);
    }
    const fixupFile = await fixups.finish(join(out, FIXUPS_FILE));
    if (fixupFile !== undefined) {
      manifest.delta.files.set(FIXUPS_FILE, fixupFile);
      manifest.delta.fixups = FIXUPS_FILE;
      await written(FIXUPS_FILE, fixupFile);
    }
    if (options.maxShardBytes !== undefined) await reshard(weightsDir, layout, options.maxShardBytes, manifest, out, written);
  } catch (err) {
    await fixups.discard();
    throw err;
  } finally {
    progress?.({ kind: "end", phase: "make" });
    await pool.close();
    if (weightsDir !== out) await rm(weightsDir, { recursive: true, force: true });
  }
  await copyCompanions(target, layout, manifest, out, options.maxShardBytes === undefined, written);
  const notes = target.format === "pytorch" ? [await recordPytorchRelease(target, manifest, out, options.threads, written)] : [];
  await job.recordWritten(manifest.delta.files.keys());
  await written(MANIFEST_FILE, await writeManifest(join(out, MANIFEST_FILE), manifest));

  return {
    delta: out,
    codec,
    tensors: recipes.size,
    added: [...recipes.values()].filter((r) => r.op === "copy").map((r) => r.name),
    dropped: manifest.base.dropped,
    fixups: fixups.count,
    files: Object.fromEntries(manifest.delta.files),
    bytes: [...manifest.delta.files.values()].reduce((n, f) => n + f.size, 0),
    notes,
  };
}

/**
 * A PyTorch target's checkpoints, recorded so apply-delta --format pytorch
 * writes the release's own files byte for byte (delta/own/pytorch-checkpoints.ts);
 * returns the summary line saying so, or why they could not be.
 */
async function recordPytorchRelease(target: ModelSource, manifest: Manifest, out: string, threads: number | undefined, written: OnWritten): Promise<string> {
  const pool = new HashPool(threads);
  let result;
  try {
    result = await recordCheckpoints(target, pool);
  } finally {
    await pool.close();
  }
  if ("refused" in result) return `the target's PyTorch checkpoints cannot be rebuilt byte for byte (${result.refused}): apply-delta --format pytorch writes checkpoints of its own`;
  const bytes = new TextEncoder().encode(formatCheckpoints(result.recorded));
  const file = await AtomicFile.create(join(out, PYTORCH_CHECKPOINTS_FILE));
  await file.write(bytes);
  await file.commit();
  const entry: FileEntry = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
  manifest.delta.files.set(PYTORCH_CHECKPOINTS_FILE, entry);
  await written(PYTORCH_CHECKPOINTS_FILE, entry);
  return `recorded the target's PyTorch checkpoints (${result.recorded.files.map((f) => f.file).join(", ")}) in ${PYTORCH_CHECKPOINTS_FILE}: apply-delta --format pytorch writes them byte for byte`;
}

/** The files a delta made earlier in `dir` consists of (its delta.json lists them): ours to replace. */
async function earlierDeltaFiles(dir: string): Promise<string[]> {
  try {
    const manifest = await readManifest(join(dir, MANIFEST_FILE));
    return manifest === undefined ? [] : [MANIFEST_FILE, ...manifest.delta.files.keys()];
  } catch {
    return []; // a delta.json we cannot read names nothing of ours
  }
}

/**
 * Before anything is written: no file the delta will have may take the
 * place of a file in the directory that this tool did not write. Resharded
 * names are known only once written, so any shard-like name counts.
 */
async function claimOutputNames(job: OutputJob, layout: OutputLayout, target: ModelSource, resharded: boolean): Promise<void> {
  const names = [FIXUPS_FILE, MANIFEST_FILE, ...target.extraFiles, ...(target.format === "pytorch" ? [PYTORCH_CHECKPOINTS_FILE] : [])];
  if (!resharded) names.push(...layout.files.map((f) => f.file), ...(layout.index === undefined ? [] : [layout.index.file]));
  else names.push(...visibleFiles(job.dir).filter((n) => isTransformersSafetensorsName(n) || n === SAFETENSORS_OUTPUT.indexFile));
  // make-delta writes its files straight into place: a file of anyone else's under one of their names is refused up front.
  for (const name of names) job.checkMayWrite(name);
  await job.claimFiles(names);
}

function visibleFiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => !n.startsWith("."));
  } catch {
    return [];
  }
}

/**
 * A delta made earlier in the same directory is replaced, not merged with:
 * its files (those its delta.json lists) go, so that a new layout leaves no
 * stale shard for `push` to upload. Files it does not list are the user's and
 * stay. delta.json goes first and comes back last: until then the directory
 * never passes for a complete delta.
 */
async function removeEarlierDelta(out: string): Promise<void> {
  const manifestPath = join(out, MANIFEST_FILE);
  let earlier: string[] = [FIXUPS_FILE];
  try {
    earlier = [...earlier, ...((await readManifest(manifestPath))?.delta.files.keys() ?? [])];
  } catch {
    // not a manifest we can read: only our own fixed names are removed
  }
  await rm(manifestPath, { force: true });
  // Never through a link: a path from that delta.json may not reach outside the directory.
  const removable = earlier.filter((rel) => linkOnTheWay(out, rel) === undefined);
  await Promise.all(removable.map((rel) => rm(join(out, ...rel.split("/")), { force: true })));
}

/**
 * One delta shard, written under the target file's header; the target file's
 * own sha256 is computed in the same pass (header, then tensors in data order).
 */
async function writeDeltaFile(file: OutputFile, context: MakeContext): Promise<{ targetFile: FileEntry; deltaFile: FileEntry }> {
  const { base, target, recipes, fixups, manifest, pool, progress } = context;
  const digests: Promise<void>[] = [];
  // Awaited before the file is committed; the catch only keeps an early failure from counting as unhandled.
  const awaitLater = (p: Promise<void>) => {
    p.catch(() => undefined);
    digests.push(p);
  };
  const targetHash = pool.create();
  const path = join(context.weightsDir, file.file);
  const sink = await AtomicFile.create(path, pool.create());
  try {
    const writer = SAFETENSORS_OUTPUT.verbatim(sink, path, file.headerText);
    // The delta shard has the target file's header: the same bytes start the target's hash.
    await targetHash.update(writer.headerBytes);
    // Checking the header text parsed it again: a large header leaves tens of MB for the collector.
    releasedChunk(writer.headerBytes.length * 2);
    for (const t of writer.tensors) {
      context.signal?.throwIfAborted();
      const recipe = recipes.get(t.name);
      if (recipe === undefined) throw new DeltaError(`target ${target.source}: ${file.file} lists tensor "${t.name}" that the model does not`);
      const tensorHash = pool.create();
      const baseHash = pool.create();
      fixups.beginTensor(t.name, numel(t.shape), dtypeBytes(t.dtype));
      const chunks = subtractTensor(recipe, {
        target: target.readTensor(t.name),
        base: recipe.op === "copy" ? undefined : base.readTensor(t.name),
      }, {
        onTarget: async (bytes) => {
          // One message: both sums read the chunk where it is, on the hash worker.
          await pool.updateAll(bytes, [tensorHash, targetHash]);
          progress?.({ kind: "advance", phase: "make", bytes: bytes.length, label: t.name });
        },
        onBase: (bytes) => baseHash.update(bytes),
        onMismatches: recipe.op === "add" ? (first, indices, xors) => fixups.add(first, indices, xors) : undefined,
      });
      // The writer is each chunk's last user: it goes back to the pool when the next is asked for.
      await writer.writeTensor(t.name, lentToConsumer(prefetch(chunks)));
      fixups.endTensor();
      // Digests are collected without waiting, so the workers never stall the pipeline.
      // Entries are placed now (keeping delta.json's order deterministic) and their hashes filled in later.
      const targetEntry: TargetTensorEntry = { dtype: t.dtype, shape: t.shape, sha256: "", file: file.file };
      manifest.target.tensors.set(t.name, targetEntry);
      awaitLater(tensorHash.digest().then((sha256) => { targetEntry.sha256 = sha256; }));
      if (recipe.base !== undefined) {
        const baseEntry: TensorEntry = { dtype: t.dtype, shape: recipe.base.shape, sha256: "" };
        manifest.base.tensors.set(t.name, baseEntry);
        awaitLater(baseHash.digest().then((sha256) => { baseEntry.sha256 = sha256; }));
      } else {
        awaitLater(baseHash.digest().then(() => undefined));
      }
    }
    await writer.finish();
    const size = sink.size;
    const [sha256, targetSha256] = await Promise.all([sink.commit(), targetHash.digest(), Promise.all(digests)]);
    return { targetFile: { size: file.size, sha256: targetSha256 }, deltaFile: { size, sha256 } };
  } catch (err) {
    await Promise.allSettled(digests);
    await sink.abort();
    throw err;
  }
}

/** Config, tokenizer and the target's index travel in the delta and are recorded as target files. */
async function copyCompanions(target: ModelSource, layout: OutputLayout, manifest: Manifest, out: string, mirrored: boolean, written: OnWritten): Promise<void> {
  for (const rel of target.extraFiles) {
    const entry = await copyFileAtomic(join(target.root, rel), join(out, rel));
    manifest.target.files.set(rel, entry);
    manifest.delta.files.set(rel, entry);
    await written(rel, entry);
  }
  if (layout.index !== undefined) {
    const bytes = new TextEncoder().encode(layout.index.text);
    const entry: FileEntry = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
    manifest.target.files.set(layout.index.file, entry);
    manifest.target.index = layout.index;
    if (mirrored) {
      // The delta mirrors the target's layout, so the target's index describes the delta's shards too.
      const file = await AtomicFile.create(join(out, layout.index.file));
      await file.write(bytes);
      await file.commit();
      manifest.delta.files.set(layout.index.file, entry);
      await written(layout.index.file, entry);
    }
  }
}

/** Tells the caller a delta file is final (MakeDeltaOptions.onFileWritten). */
type OnWritten = (rel: string, entry: FileEntry) => Promise<void>;

/** Rewrites the staged delta shards at `maxShardBytes` each, with Hugging Face shard names and index. */
async function reshard(staging: string, layout: OutputLayout, maxShardBytes: number, manifest: Manifest, out: string, written: OnWritten): Promise<void> {
  if (layout.index !== undefined) await writeFile(join(staging, layout.index.file), layout.index.text);
  for (const rel of manifest.delta.weights) manifest.delta.files.delete(rel);
  const converted = await convertIntoLockedOutput(staging, out, { maxShardBytes, onFileWritten: (f) => written(f.path, f) });
  manifest.delta.weights = [];
  for (const f of converted.files) {
    manifest.delta.files.set(f.path, { size: f.size, sha256: f.sha256 });
    if (f.path.endsWith(".safetensors")) manifest.delta.weights.push(f.path);
  }
}

/** A digest of the right length, for measuring a manifest before its hashes exist. */
const PLACEHOLDER_SHA256 = "0".repeat(64);

/**
 * Before any work: the delta.json this make would write must be one that
 * apply-delta reads (MAX_MANIFEST_BYTES, MAX_TENSORS_PER_MODEL), or hours of
 * work would end in a delta nobody can apply. It is measured from the plan:
 * every name, header and index text is known now, only the hashes are not
 * (they have a fixed length), and sizes are counted at their widest.
 */
function checkManifestSize(layout: OutputLayout, recipes: ReadonlyMap<string, TensorRecipe>, base: ModelSource, target: ModelSource, out: string): void {
  const tensorCount = layout.files.reduce((n, f) => n + f.tensors.length, 0);
  if (tensorCount > MAX_TENSORS_PER_MODEL) {
    throw new DeltaError(`target ${target.source} has ${tensorCount} tensors, more than the ${MAX_TENSORS_PER_MODEL} a delta may describe; nothing was written to ${out}`);
  }
  const widest: FileEntry = { size: Number.MAX_SAFE_INTEGER, sha256: PLACEHOLDER_SHA256 };
  const lazy = <T>(entries: () => Generator<T>): Iterable<T> => ({ [Symbol.iterator]: entries });
  const fileEntries = lazy(function* () {
    for (const f of layout.files) yield [f.file, widest] as const;
    for (const rel of target.extraFiles) yield [rel, widest] as const;
    if (layout.index !== undefined) yield [layout.index.file, widest] as const;
  });
  const planned: ManifestText = {
    format: MANIFEST_FORMAT,
    codec: "add",
    tool: `delta-weights ${VERSION}`,
    base: {
      source: base.source,
      tensors: lazy(function* () {
        for (const f of layout.files) {
          for (const t of f.tensors) {
            const paired = recipes.get(t.name)?.base;
            if (paired !== undefined) yield [t.name, { dtype: t.dtype, shape: paired.shape, sha256: PLACEHOLDER_SHA256 }] as const;
          }
        }
      }),
      dropped: lazy(function* () {
        for (const name of base.tensors.keys()) if (!target.tensors.has(name)) yield name;
      }),
    },
    target: {
      source: target.source,
      files: fileEntries,
      tensors: lazy(function* () {
        for (const f of layout.files) for (const t of f.tensors) yield [t.name, { dtype: t.dtype, shape: t.shape, sha256: PLACEHOLDER_SHA256, file: f.file }] as const;
      }),
      headers: lazy(function* () {
        for (const f of layout.files) yield [f.file, f.headerText] as const;
      }),
      index: layout.index,
    },
    delta: {
      files: lazy(function* () {
        yield* fileEntries;
        yield [FIXUPS_FILE, widest] as const;
      }),
      weights: layout.files.map((f) => f.file),
      fixups: FIXUPS_FILE,
    },
  };
  let bytes = 0;
  // The source names are the public ones (chosen later, and short); a resharded delta lists its new shard names instead of the target's.
  const slack = 64 * 1024;
  for (const piece of manifestPieces(planned)) bytes += Buffer.byteLength(piece, "utf8");
  if (bytes + slack > MAX_MANIFEST_BYTES) {
    throw new DeltaError(
      `the delta.json for target ${target.source} would be about ${formatBytes(bytes)}, more than the ${formatBytes(MAX_MANIFEST_BYTES)} apply-delta reads ` +
        "(its tensor names and safetensors headers are recorded in it); nothing was written",
    );
  }
}

/** delta.json, written piece by piece through a temporary file: a large one is never one string in memory. */
async function writeManifest(path: string, manifest: Manifest): Promise<FileEntry> {
  const file = await AtomicFile.create(path);
  const encoder = new TextEncoder();
  try {
    let pending: string[] = [];
    let pendingLength = 0;
    const flush = async () => {
      await file.write(encoder.encode(pending.join("")));
      pending = [];
      pendingLength = 0;
    };
    for (const piece of manifestPieces(manifest)) {
      pending.push(piece);
      pendingLength += piece.length;
      if (pendingLength >= 1 << 20) await flush();
    }
    await flush();
    // checkManifestSize measured the plan; a resharded delta may list more files than that plan had.
    if (file.size > MAX_MANIFEST_BYTES) throw new DeltaError(`${path} would be ${formatBytes(file.size)}, more than the ${formatBytes(MAX_MANIFEST_BYTES)} apply-delta reads; the delta is incomplete`);
    const size = file.size;
    return { size, sha256: await file.commit() };
  } catch (err) {
    await file.abort();
    throw err;
  }
}
