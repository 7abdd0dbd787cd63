import { existsSync } from "node:fs";
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { dtypeBytes } from "../dtypes.js";
import { DeltaError, VerifyError } from "../errors.js";
import { readChecksums } from "../hash/checksums.js";
import { HashPool } from "../hash/hash-pool.js";
import { AtomicFile, copyFileAtomic, removeStalePartials } from "../io/atomic-file.js";
import { withOutputLock } from "../io/output-lock.js";
import { prefetch, tap } from "../io/chunk-streams.js";
import { firstDifferentTensor } from "./diagnose.js";
import { checkFreeSpace, inputOf, refuseOverlap } from "../io/paths.js";
import { openModel, type OpenModelOptions } from "../model/open-model.js";
import { resolveSource } from "../model/resolve-source.js";
import type { ModelSource } from "../model/types.js";
import type { OnProgress } from "../progress.js";
import { openSafetensorsFile, type SafetensorsFile } from "../safetensors/reader.js";
import { SafetensorsWriter } from "../safetensors/writer.js";
import { sameShape, numel } from "./block.js";
import { FixupSource } from "./fixups.js";
import { MANIFEST_FILE, type Manifest } from "./manifest.js";
import { readManifest } from "./read-manifest.js";
import { baseConversionProblem, chooseOp, transformTensor, type TensorPlan } from "./tensor-transform.js";

export interface ApplyDeltaOptions extends OpenModelOptions {
  base: string;
  /** The delta: a directory (with delta.json, or a legacy FastChat delta) or a Hub repo id. */
  delta: string;
  /** Output directory. */
  target: string;
  /** A sha256sum list to check the outputs against (legacy deltas). */
  checksums?: string;
  /** Hashing threads (default: one per core but one). */
  threads?: number;
  onProgress?: OnProgress;
}

export interface ApplyDeltaResult {
  target: string;
  /**
   * true only when every output file was checked against something the
   * publisher gave: delta.json, or a checksums list that covers every file.
   */
  verified: boolean;
  /** Output files nothing checked (a checksums list that leaves them out; every file of an unchecked legacy delta). */
  unchecked: string[];
  /** "manifest" for a delta-weights delta, "legacy" for a FastChat-style one. */
  kind: "manifest" | "legacy";
  files: Record<string, { size: number; sha256: string; status: "written" | "kept" }>;
  tensors: number;
  /** Base tensors the delta does not use. */
  dropped: string[];
  /** Elements restored by the fix-ups. */
  fixups: number;
  bytes: number;
}

/** base + delta -> target, verified against delta.json (or run as a legacy FastChat delta when it has none). */
export async function applyDelta(options: ApplyDeltaOptions): Promise<ApplyDeltaResult> {
  const delta = await resolveSource(options.delta, options);
  const manifest = await readManifest(join(delta.path, MANIFEST_FILE));
  const checksums = options.checksums === undefined ? undefined : await readChecksums(options.checksums);
  if (manifest === undefined) {
    await refuseSwapped(options, delta.path);
    const { applyLegacyDelta } = await import("./apply-legacy.js");
    return applyLegacyDelta(options, checksums);
  }
  await checkDeltaSizes(delta.path, manifest);
  const base = await openModel(options.base, options);
  try {
    refuseOverlap(options.target, [inputOf("base", base), { label: "delta", root: delta.path }]);
    checkBaseShapes(base, manifest);
    if (checksums !== undefined) checkListAgainstManifest(checksums, options.checksums!, manifest);
    return await withOutputLock(options.target, "apply-delta", async () => {
      await removeStalePartials(options.target);
      return apply(base, delta.path, manifest, options);
    });
  } finally {
    await base.close();
  }
}

/**
 * A delta without delta.json given as --delta while --base holds one: the
 * two were swapped. Applying would add a delta to the base's own weights and
 * write garbage that no check could catch.
 */
async function refuseSwapped(options: ApplyDeltaOptions, deltaDir: string): Promise<void> {
  if (!existsSync(options.base) || !(await stat(options.base)).isDirectory()) return;
  if (!existsSync(join(options.base, MANIFEST_FILE))) return;
  throw new DeltaError(
    `--base ${options.base} holds ${MANIFEST_FILE}, so it is a delta, and --delta ${deltaDir} has none: --base and --delta look swapped; ` +
      "pass the model you hold as --base and the published delta as --delta",
  );
}

/**
 * Every delta file the manifest lists must be there and whole: a truncated
 * download is named before any work.
 */
async function checkDeltaSizes(dir: string, manifest: Manifest): Promise<void> {
  for (const [rel, entry] of Object.entries(manifest.delta.files)) {
    const path = join(dir, rel);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (err) {
      throw new DeltaError(`delta file ${path} is missing; download the delta again`, { cause: err });
    }
    if (size !== entry.size) {
      throw new DeltaError(`delta file ${path} is ${size} bytes, delta.json says ${entry.size}: it is truncated or corrupted; download it again`);
    }
  }
}

/**
 * Why an output did not match: names the first delta file whose sha256
 * differs from delta.json, or returns undefined when all match.
 *
 * Delta files are hashed only when an output fails. Every byte of a delta
 * file (its header, every tensor, the fix-ups, the copied files) goes into
 * an output whose sha256 is checked, so outputs that match prove the delta
 * intact; hashing it up front as well would cost a whole extra pass.
 */
async function corruptedDeltaFile(pool: HashPool, dir: string, manifest: Manifest): Promise<DeltaError | undefined> {
  for (const [rel, entry] of Object.entries(manifest.delta.files)) {
    const path = join(dir, rel);
    const { sha256 } = await pool.hashFile(path);
    if (sha256 !== entry.sha256) {
      return new DeltaError(`delta file ${path} has sha256 ${sha256.slice(0, 16)}..., delta.json says ${entry.sha256.slice(0, 16)}...: it is corrupted; download it again`);
    }
  }
  return undefined;
}

/** Cheap checks first: every base tensor the delta needs exists, with the recorded shape and a convertible dtype. */
function checkBaseShapes(base: ModelSource, manifest: Manifest): void {
  for (const [name, expected] of Object.entries(manifest.base.tensors)) {
    const actual = base.tensors.get(name);
    const problem =
      actual === undefined ? "is missing"
      : !sameShape(actual.shape, expected.shape) ? `has shape [${actual.shape}]`
      : baseConversionProblem(expected.dtype, actual.dtype);
    if (problem !== undefined) throw wrongBase(base, manifest, name, problem);
  }
}

function wrongBase(base: ModelSource, manifest: Manifest, name: string, problem: string): DeltaError {
  const e = manifest.base.tensors[name]!;
  return new DeltaError(
    `wrong base: tensor "${name}" of ${base.source} ${problem}; the delta expects ${e.dtype} [${e.shape}] with sha256 ${e.sha256.slice(0, 12)}... (the base it was made from: ${manifest.base.source})`,
  );
}

async function apply(base: ModelSource, deltaDir: string, manifest: Manifest, options: ApplyDeltaOptions): Promise<ApplyDeltaResult> {
  const out = options.target;
  await mkdir(out, { recursive: true });
  const result: ApplyDeltaResult = {
    target: out, verified: false, unchecked: [], kind: "manifest", files: {}, tensors: 0, dropped: [], fixups: 0, bytes: 0,
  };
  const pool = new HashPool(options.threads);
  // Resume: files already in place and matching the manifest are kept.
  const todo: string[] = [];
  let needed = 0;
  try {
    for (const [rel, entry] of Object.entries(manifest.target.files)) {
      if (await matches(pool, join(out, rel), entry.size, entry.sha256)) result.files[rel] = { ...entry, status: "kept" };
      else todo.push(rel);
    }
    needed = todo.reduce((n, rel) => n + manifest.target.files[rel]!.size, 0);
    await checkFreeSpace(out, needed);
  } catch (err) {
    await pool.close();
    throw err;
  }
  const explain = (err: unknown) => explainFailure(err, pool, deltaDir, manifest);
  const deltaFiles = new Map<string, SafetensorsFile>();
  const commits: Promise<void>[] = [];
  const fixups = await FixupSource.open(manifest.delta.fixups === undefined ? undefined : join(deltaDir, manifest.delta.fixups));
  const progress = options.onProgress;
  progress?.({ kind: "start", phase: "apply", totalBytes: needed });
  try {
    const deltaTensors = new Map<string, SafetensorsFile>();
    for (const rel of manifest.delta.weights) {
      const f = await openSafetensorsFile(join(deltaDir, rel));
      deltaFiles.set(rel, f);
      for (const t of f.tensors) deltaTensors.set(t.name, f);
    }
    for (const rel of todo) {
      const entry = manifest.target.files[rel]!;
      const header = manifest.target.headers[rel];
      const dest = join(out, rel);
      if (header !== undefined) {
        const written = await writeTargetFile(dest, header, entry.sha256, base, deltaTensors, fixups, manifest, pool, progress);
        result.fixups += written.fixed;
        commits.push(written.committed);
      } else if (manifest.target.index?.file === rel) {
        const file = await AtomicFile.create(dest);
        await file.write(new TextEncoder().encode(manifest.target.index.text));
        await file.commit(entry.sha256);
      } else {
        await copyFileAtomic(join(deltaDir, rel), dest, entry.sha256).catch(explain);
      }
      progress?.({ kind: "advance", phase: "apply", bytes: header === undefined ? entry.size : 0, label: rel });
      result.files[rel] = { ...entry, status: "written" };
    }
    await Promise.all(commits).catch(explain);
  } finally {
    await Promise.allSettled(commits);
    progress?.({ kind: "end", phase: "apply" });
    await pool.close();
    await fixups.close();
    await Promise.all([...deltaFiles.values()].map((f) => f.close()));
  }
  result.verified = true;
  result.tensors = Object.keys(manifest.target.tensors).length;
  result.dropped = [...base.tensors.keys()].filter((n) => !(n in manifest.base.tensors));
  result.bytes = Object.values(manifest.target.files).reduce((n, f) => n + f.size, 0);
  return result;
}

/**
 * --checksums with a delta.json delta: the list is checked against the
 * manifest before anything is written. Every file it names must be a target
 * file with the sha256 delta.json records for it, since every output is then
 * checked against delta.json.
 */
function checkListAgainstManifest(checksums: Map<string, string>, listPath: string, manifest: Manifest): void {
  for (const [rel, sha256] of checksums) {
    const entry = Object.hasOwn(manifest.target.files, rel) ? manifest.target.files[rel] : undefined;
    if (entry === undefined) throw new VerifyError(`${listPath} lists ${rel}, which this delta does not produce; nothing was written`);
    if (entry.sha256 !== sha256) {
      throw new VerifyError(`${listPath} says ${rel} has sha256 ${sha256.slice(0, 16)}..., delta.json says ${entry.sha256.slice(0, 16)}...: the list and the delta disagree; nothing was written`);
    }
  }
}

async function matches(pool: HashPool, path: string, size: number, sha256: string): Promise<boolean> {
  try {
    if ((await stat(path)).size !== size) return false;
  } catch {
    return false;
  }
  return (await pool.hashFile(path)).sha256 === sha256;
}

/** An output that failed its check: blame a corrupted delta file when there is one. */
async function explainFailure(err: unknown, pool: HashPool, deltaDir: string, manifest: Manifest): Promise<never> {
  if (err instanceof VerifyError) throw (await corruptedDeltaFile(pool, deltaDir, manifest)) ?? err;
  throw err;
}

/**
 * One target weight file, from its recorded header. Each base tensor is
 * checked against delta.json as soon as its hash is ready; the file's own
 * hash decides whether it gets its final name. Returns once the bytes are
 * written, with the fix-ups used and the promise of the file's commit.
 */
async function writeTargetFile(
  dest: string,
  headerText: string,
  sha256: string,
  base: ModelSource,
  deltaTensors: Map<string, SafetensorsFile>,
  fixups: FixupSource,
  manifest: Manifest,
  pool: HashPool,
  progress: OnProgress | undefined,
): Promise<{ fixed: number; committed: Promise<void> }> {
  const sink = await AtomicFile.create(dest, pool.create());
  let fixed = 0;
  // Base hashes are checked without stalling the pipeline: each one when the next tensor is done.
  const baseChecks: Promise<void>[] = [];
  const checkBases = () => Promise.all(baseChecks.splice(0));
  try {
    const writer = SafetensorsWriter.verbatim(sink, dest, headerText);
    for (const t of writer.tensors) {
      const deltaFile = deltaTensors.get(t.name);
      const deltaInfo = deltaFile?.tensors.find((d) => d.name === t.name);
      if (!(t.name in manifest.target.tensors) || deltaFile === undefined || deltaInfo === undefined) {
        throw new DeltaError(`the delta has no tensor "${t.name}" for ${dest}; download the delta again`);
      }
      if (deltaInfo.dtype !== t.dtype || !sameShape(deltaInfo.shape, t.shape)) {
        throw new DeltaError(`${deltaFile.path}: tensor "${t.name}" is ${deltaInfo.dtype} [${deltaInfo.shape}], the target needs ${t.dtype} [${t.shape}]`);
      }
      const baseEntry = manifest.base.tensors[t.name];
      const baseInfo = base.tensors.get(t.name);
      const plan: TensorPlan = {
        name: t.name, dtype: t.dtype, shape: t.shape,
        op: chooseOp(manifest.codec, t.dtype, baseEntry !== undefined),
        base: baseEntry !== undefined && baseInfo !== undefined ? { dtype: baseInfo.dtype, shape: baseInfo.shape } : undefined,
      };
      const fixer = fixups.forTensor(t.name, numel(t.shape), dtypeBytes(t.dtype));
      const baseHash = baseEntry === undefined ? undefined : pool.create();
      const chunks = transformTensor("apply", plan, {
        primary: deltaFile.readTensor(t.name),
        base: plan.op === "copy" ? undefined : base.readTensor(t.name),
      }, {
        onBase: baseHash === undefined ? undefined : (bytes) => baseHash.update(bytes),
        fixWindow: fixer === undefined ? undefined : (first, bytes) => fixer.fixWindow(first, bytes),
      });
      await writer.writeTensor(t.name, tap(prefetch(chunks), (chunk) => {
        progress?.({ kind: "advance", phase: "apply", bytes: chunk.length, label: t.name });
      }));
      await checkBases();
      if (baseHash !== undefined && baseEntry !== undefined) {
        const check = baseHash.digest().then((digest) => {
          if (digest !== baseEntry.sha256) {
            throw wrongBase(base, manifest, t.name, `has different values (the sha256 of its ${baseEntry.dtype} bytes differs)`);
          }
        });
        check.catch(() => undefined); // awaited by checkBases(); this only stops an early rejection counting as unhandled
        baseChecks.push(check);
      }
      if (fixer !== undefined) {
        await fixer.finish();
        fixed += fixer.count;
      }
    }
    await writer.finish();
    await checkBases();
  } catch (err) {
    await Promise.allSettled(baseChecks);
    await sink.abort();
    throw err;
  }
  // The last flush to disk, and the checks, go on while the next file is computed.
  const committed = (async () => {
    try {
      const digest = await sink.close();
      if (digest !== sha256) {
        const tensor = await firstDifferentTensor(sink.tempPath, manifest);
        throw new VerifyError(`recovered ${dest} has sha256 ${digest.slice(0, 12)}..., delta.json says ${sha256.slice(0, 12)}...${tensor === undefined ? "" : ` (tensor "${tensor}" differs)`}; the delta or the base is damaged`);
      }
      await sink.publish();
    } catch (err) {
      await sink.abort();
      throw err;
    }
  })();
  committed.catch(() => undefined); // awaited by the caller; this only stops an early rejection counting as unhandled
  return { fixed, committed };
}
