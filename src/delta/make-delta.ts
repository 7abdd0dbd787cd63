import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { dtypeBytes } from "../dtypes.js";
import { DeltaError } from "../errors.js";
import { HashPool } from "../hash/hash-pool.js";
import { AtomicFile, copyFileAtomic, removeStalePartials } from "../io/atomic-file.js";
import { withOutputLock } from "../io/output-lock.js";
import { prefetch } from "../io/chunk-streams.js";
import { checkFreeSpace, inputOf, refuseOverlap } from "../io/paths.js";
import { convertIntoLockedOutput } from "../model/convert.js";
import { openModel, type OpenModelOptions } from "../model/open-model.js";
import type { ModelSource } from "../model/types.js";
import type { OnProgress } from "../progress.js";
import { encodeHeaderVerbatim } from "../safetensors/header.js";
import { SafetensorsWriter } from "../safetensors/writer.js";
import { blockMismatch, numel } from "./block.js";
import { FixupCollector } from "./fixups.js";
import { FIXUPS_FILE, MANIFEST_FILE, MANIFEST_FORMAT, serializeManifest, type Codec, type FileEntry, type Manifest, type TensorEntry, type TargetTensorEntry } from "./manifest.js";
import { readManifest } from "./read-manifest.js";
import { layoutOf, type OutputLayout } from "./target-layout.js";
import { baseConversionProblem, chooseOp, transformTensor, type TensorPlan } from "./tensor-transform.js";
import { publicSourceName } from "./source-name.js";
import { TOOL } from "./version.js";

export interface MakeDeltaOptions extends OpenModelOptions {
  base: string;
  target: string;
  /** Output directory for the delta. */
  delta: string;
  codec?: Codec;
  /** Shard the delta at this size instead of mirroring the target's layout. */
  maxShardBytes?: number;
  /** Hashing threads (default: one per core but one). */
  threads?: number;
  onProgress?: OnProgress;
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
}

/**
 * target - base, streamed tensor by tensor. The delta mirrors the target's
 * shard layout, each shard under the target file's own header (same names,
 * dtypes and shapes), and delta.json records everything apply-delta needs to
 * prove the recovery exact.
 */
export async function makeDelta(options: MakeDeltaOptions): Promise<MakeDeltaResult> {
  const codec = options.codec ?? "add";
  const base = await openModel(options.base, options);
  try {
    const target = await openModel(options.target, options);
    try {
      refuseDeltaAsModel("--base", base);
      refuseDeltaAsModel("--target", target);
      refuseOverlap(options.delta, [inputOf("base", base), inputOf("target", target)]);
      return await withOutputLock(options.delta, "make-delta", async () => {
        await removeStalePartials(options.delta);
        return make(base, target, codec, options);
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
  if (model.extraFiles.includes(MANIFEST_FILE) || existsSync(join(model.root, MANIFEST_FILE))) {
    throw new DeltaError(`${flag} ${model.source} holds ${MANIFEST_FILE}: it is a delta, not a model; recover the model with apply-delta first`);
  }
}

async function make(base: ModelSource, target: ModelSource, codec: Codec, options: MakeDeltaOptions): Promise<MakeDeltaResult> {
  const out = options.delta;
  const plans = planTensors(base, target, codec);
  const layout = await layoutOf(target);
  const totalBytes = layout.files.reduce((n, f) => n + f.size, 0);
  await mkdir(out, { recursive: true });
  await checkFreeSpace(out, totalBytes);
  await removeEarlierDelta(out);

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    codec,
    tool: TOOL,
    base: { source: publicSourceName(base), tensors: {}, dropped: [...base.tensors.keys()].filter((n) => !target.tensors.has(n)) },
    target: { source: publicSourceName(target), files: {}, tensors: {}, headers: {} },
    delta: { files: {}, weights: [] },
  };
  const fixups = await FixupCollector.create(out);
  const pool = new HashPool(options.threads);
  const progress = options.onProgress;
  progress?.({ kind: "start", phase: "make", totalBytes });
  // With --max-shard-size the shards are first written in the target's layout
  // (so the target's file hashes come out of the same pass), then resharded.
  const weightsDir = options.maxShardBytes === undefined ? out : AtomicFile.tempPathFor(join(out, "staging"));
  try {
    for (const file of layout.files) {
      const { targetFile, deltaFile } = await writeDeltaFile(file, plans, base, target, fixups, manifest, weightsDir, progress, pool);
      manifest.target.files[file.file] = targetFile;
      manifest.target.headers[file.file] = file.headerText;
      manifest.delta.files[file.file] = deltaFile;
      manifest.delta.weights.push(file.file);
    }
    const fixupFile = await fixups.finish(join(out, FIXUPS_FILE));
    if (fixupFile !== undefined) {
      manifest.delta.files[FIXUPS_FILE] = fixupFile;
      manifest.delta.fixups = FIXUPS_FILE;
    }
    if (options.maxShardBytes !== undefined) await reshard(weightsDir, layout, options.maxShardBytes, manifest, out);
  } catch (err) {
    await fixups.discard();
    throw err;
  } finally {
    progress?.({ kind: "end", phase: "make" });
    await pool.close();
    if (weightsDir !== out) await rm(weightsDir, { recursive: true, force: true });
  }
  await copyCompanions(target, layout, manifest, out, options.maxShardBytes === undefined);
  const manifestFile = await AtomicFile.create(join(out, MANIFEST_FILE));
  await manifestFile.write(new TextEncoder().encode(serializeManifest(manifest)));
  await manifestFile.commit();

  return {
    delta: out,
    codec,
    tensors: plans.size,
    added: [...plans.values()].filter((p) => p.op === "copy").map((p) => p.name),
    dropped: manifest.base.dropped,
    fixups: fixups.count,
    files: manifest.delta.files,
    bytes: Object.values(manifest.delta.files).reduce((n, f) => n + f.size, 0),
  };
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
    earlier = [...earlier, ...Object.keys((await readManifest(manifestPath))?.delta.files ?? {})];
  } catch {
    // not a manifest we can read: only our own fixed names are removed
  }
  await rm(manifestPath, { force: true });
  await Promise.all(earlier.map((rel) => rm(join(out, rel), { force: true })));
}

/** Decides each target tensor's op; refuses a base that cannot pair with the target. */
function planTensors(base: ModelSource, target: ModelSource, codec: Codec): Map<string, TensorPlan> {
  const plans = new Map<string, TensorPlan>();
  for (const t of target.tensors.values()) {
    const b = base.tensors.get(t.name);
    const plan: TensorPlan = { name: t.name, dtype: t.dtype, shape: t.shape, op: chooseOp(codec, t.dtype, b !== undefined) };
    if (b !== undefined) {
      const problem = baseConversionProblem(t.dtype, b.dtype) ?? blockMismatch(t.shape, b.shape);
      if (problem !== undefined) {
        throw new DeltaError(`base ${base.source}: tensor "${t.name}" cannot pair with the target's ${t.dtype} [${t.shape}]: ${problem}`);
      }
      plan.base = { dtype: b.dtype, shape: b.shape };
    }
    plans.set(t.name, plan);
  }
  return plans;
}

/**
 * One delta shard, written under the target file's header; the target file's
 * own sha256 is computed in the same pass (header, then tensors in data order).
 */
async function writeDeltaFile(
  file: OutputLayout["files"][number],
  plans: Map<string, TensorPlan>,
  base: ModelSource,
  target: ModelSource,
  fixups: FixupCollector,
  manifest: Manifest,
  out: string,
  progress: OnProgress | undefined,
  pool: HashPool,
): Promise<{ targetFile: FileEntry; deltaFile: FileEntry }> {
  const digests: Promise<void>[] = [];
  // Awaited before the file is committed; the catch only keeps an early failure from counting as unhandled.
  const awaitLater = (p: Promise<void>) => {
    p.catch(() => undefined);
    digests.push(p);
  };
  const targetHash = pool.create();
  await targetHash.update(encodeHeaderVerbatim(file.headerText));
  const sink = await AtomicFile.create(join(out, file.file), pool.create());
  try {
    const writer = SafetensorsWriter.verbatim(sink, join(out, file.file), file.headerText);
    for (const t of writer.tensors) {
      const plan = plans.get(t.name);
      if (plan === undefined) throw new DeltaError(`target ${target.source}: ${file.file} lists tensor "${t.name}" that the model does not`);
      const tensorHash = pool.create();
      const baseHash = pool.create();
      fixups.beginTensor(t.name, numel(t.shape), dtypeBytes(t.dtype));
      const chunks = transformTensor("make", plan, {
        primary: target.readTensor(t.name),
        base: plan.op === "copy" ? undefined : base.readTensor(t.name),
      }, {
        onPrimary: async (bytes) => {
          await Promise.all([tensorHash.update(bytes), targetHash.update(bytes)]);
          progress?.({ kind: "advance", phase: "make", bytes: bytes.length, label: t.name });
        },
        onBase: (bytes) => baseHash.update(bytes),
        onMismatches: plan.op === "add" ? (first, indices, xors) => fixups.add(first, indices, xors) : undefined,
      });
      await writer.writeTensor(t.name, prefetch(chunks));
      fixups.endTensor();
      // Digests are collected without waiting, so the workers never stall the pipeline.
      // Entries are placed now (keeping delta.json's order deterministic) and their hashes filled in later.
      const targetEntry: TargetTensorEntry = { dtype: t.dtype, shape: t.shape, sha256: "", file: file.file };
      manifest.target.tensors[t.name] = targetEntry;
      awaitLater(tensorHash.digest().then((sha256) => { targetEntry.sha256 = sha256; }));
      if (plan.base !== undefined) {
        const baseEntry: TensorEntry = { dtype: t.dtype, shape: plan.base.shape, sha256: "" };
        manifest.base.tensors[t.name] = baseEntry;
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
async function copyCompanions(target: ModelSource, layout: OutputLayout, manifest: Manifest, out: string, mirrored: boolean): Promise<void> {
  for (const rel of target.extraFiles) {
    const entry = await copyFileAtomic(join(target.root, rel), join(out, rel));
    manifest.target.files[rel] = entry;
    manifest.delta.files[rel] = entry;
  }
  if (layout.index !== undefined) {
    const bytes = new TextEncoder().encode(layout.index.text);
    const entry: FileEntry = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
    manifest.target.files[layout.index.file] = entry;
    manifest.target.index = layout.index;
    if (mirrored) {
      // The delta mirrors the target's layout, so the target's index describes the delta's shards too.
      const file = await AtomicFile.create(join(out, layout.index.file));
      await file.write(bytes);
      await file.commit();
      manifest.delta.files[layout.index.file] = entry;
    }
  }
}

/** Rewrites the staged delta shards at `maxShardBytes` each, with Hugging Face shard names and index. */
async function reshard(staging: string, layout: OutputLayout, maxShardBytes: number, manifest: Manifest, out: string): Promise<void> {
  if (layout.index !== undefined) await writeFile(join(staging, layout.index.file), layout.index.text);
  for (const rel of manifest.delta.weights) delete manifest.delta.files[rel];
  const converted = await convertIntoLockedOutput(staging, out, { maxShardBytes });
  manifest.delta.weights = [];
  for (const f of converted.files) {
    manifest.delta.files[f.path] = { size: f.size, sha256: f.sha256 };
    if (f.path.endsWith(".safetensors")) manifest.delta.weights.push(f.path);
  }
}

