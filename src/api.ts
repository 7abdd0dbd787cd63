/**
 * The library's front door: every command of the CLI is one call here.
 * Sources may be local paths or Hugging Face Hub repo ids (`org/name[@rev]`,
 * `hf://org/name@rev`); these functions check the local paths first, resolve
 * repo ids into the Hub cache, and hand local paths to the layers below,
 * which never touch the network.
 */
import { existsSync } from "node:fs";
import { rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { HubError, UsageError, ioError } from "./errors.js";
import { applyDelta as applyLocalDelta, type ApplyDeltaOptions as LocalApplyOptions, type ApplyDeltaResult } from "./delta/apply-delta.js";
import { makeDelta as makeLocalDelta, type MakeDeltaOptions as LocalMakeOptions, type MakeDeltaResult as LocalMakeResult } from "./delta/own/make-delta.js";
import { verifyModel as verifyLocalModel, type VerifyOptions as LocalVerifyOptions, type VerifyResult } from "./delta/own/verify-model.js";
import { identifyModel as identifyLocalModel, type IdentifyResult } from "./delta/identify.js";
import { MANIFEST_FILE } from "./delta/own/manifest.js";
import { readChecksums } from "./hash/checksums.js";
import { HashPool } from "./hash/hash-pool.js";
import { ConnectionBudget } from "./hub/connection-budget.js";
import { commitDelta, type PushOptions, type PushResult } from "./hub/push.js";
import { parseHubRef } from "./hub/repo-id.js";
import { resolveSource, startSource, type ArrivingSource, type ResolveOptions } from "./hub/resolve-source.js";
import { UploadSession } from "./hub/upload-session.js";
import { JOB_FILE, checkInputExists, checkWritableOutput } from "./io/output-guard.js";
import { LOCK_FILE } from "./io/output-lock.js";
import { DEFAULT_DOWNLOAD_CONNECTIONS } from "./limits.js";
import { convertModel as convertLocalModel, type ConvertOptions as LocalConvertOptions, type ConvertResult } from "./model/convert.js";
import { inspectModel as inspectLocalModel, type InspectResult } from "./model/inspect.js";
import { makeDirectory } from "./io/make-directory.js";

/** How repo ids are resolved: token, endpoint, cache, offline mode, fetch (the CLI reads them from flags and HF_* variables). */
export type SourceOptions = Omit<ResolveOptions, "files" | "select">;

export type ApplyDeltaOptions = Omit<LocalApplyOptions, "base" | "delta" | "chained"> & SourceOptions & {
  base: string;
  /** The delta; several LoRA adapters (merged into the base in this order) as a list. */
  delta: string | readonly string[];
  /**
   * false: a delta from the Hub is not kept in the HF cache. It is fetched
   * into a scratch folder in the target (`.delta-weights-download`), a file
   * at a time as the apply reads it, each file deleted once the outputs made
   * from it are done; the folder goes when the apply succeeds. A rerun after
   * success downloads the delta again.
   */
  cacheDelta?: boolean;
};

/** Where apply-delta fetches a delta it keeps no copy of (see ApplyDeltaOptions.cacheDelta). */
export const STREAMED_DELTA_DIR = ".delta-weights-download";
export type MakeDeltaOptions = Omit<LocalMakeOptions, "base" | "target" | "signal"> & SourceOptions & { base: string; target: string; push?: PushTarget };

/** Where make-delta publishes the delta as it makes it (token, endpoint and fetch default to the source options'). */
export interface PushTarget {
  /** The Hub model repo, `org/name`; created if missing. */
  repo: string;
  private?: boolean;
  /** Branch to commit to (created from main if missing); default main. */
  revision?: string;
  /** Commit title; default "Upload delta weights". */
  message?: string;
  accessToken?: string;
  hubUrl?: string;
  fetch?: typeof fetch;
  /** How often a transient failure of one upload request is tried again (default: 5 tries, 1 s to 8 s apart). */
  retry?: PushOptions["retry"];
  /** One line per retried request. */
  onNotice?: (message: string) => void;
}

export type MakeDeltaResult = LocalMakeResult & { pushed?: PushResult };
export type VerifyOptions = LocalVerifyOptions & SourceOptions;
export type ConvertOptions = Omit<LocalConvertOptions, "createHasher"> & SourceOptions;

export type { ApplyDeltaResult, VerifyResult, ConvertResult, InspectResult, IdentifyResult };

/** base + delta -> target (see delta/apply-delta.ts). */
export async function applyDelta(given: ApplyDeltaOptions): Promise<ApplyDeltaResult> {
  const [first, ...chained] = typeof given.delta === "string" ? [given.delta] : given.delta;
  if (first === undefined) throw new UsageError("no delta given");
  if (chained.length > 0 && given.cacheDelta === false) throw new UsageError("--no-cache-delta takes one --delta; several adapters are kept in the cache");
  const options = { ...given, delta: first };
  preflight([options.base, options.delta, ...chained], options.target);
  // A checksum list that cannot be used should not cost a download first.
  if (options.checksums !== undefined) await readChecksums(options.checksums);
  // Both downloads start at once and the apply reads their bytes as they arrive: the
  // time to a verified model is the download's, not the download's plus the apply's.
  // They share the connections (--connections N is N in all) and one set of hash workers.
  // A refused --no-cache-delta stops before the workers start: nothing is left running.
  const scratch = options.cacheDelta === false ? await streamedDeltaDir(options) : undefined;
  const givenPool = options.hashPool ?? options.transfer?.hashPool;
  const ownPool = givenPool === undefined && [options.base, options.delta, ...chained].some(isHubRef) ? new HashPool(options.threads) : undefined;
  const hashPool = givenPool ?? ownPool;
  const sources = {
    ...options,
    transfer: {
      ...options.transfer,
      connectionBudget: options.transfer?.connectionBudget ?? new ConnectionBudget(options.transfer?.connections ?? DEFAULT_DOWNLOAD_CONNECTIONS),
      ...(hashPool !== undefined ? { hashPool } : {}),
    },
  };
  let delta: ArrivingSource | undefined;
  let base: ArrivingSource | undefined;
  const more: ArrivingSource[] = [];
  try {
    delta = await startSource(options.delta, {
      ...sources,
      select: "delta",
      ...(scratch === undefined ? {} : { cacheDir: scratch.dir, transfer: { ...sources.transfer, stream: true } }),
    });
    for (const src of chained) more.push(await startSource(src, { ...sources, select: "delta" }));
    base = await startSource(options.base, sources);
    const result = await applyLocalDelta({
      ...options,
      base: base.source,
      delta: delta.source,
      ...(more.length === 0 ? {} : { chained: more.map((m) => m.source) }),
      ...(hashPool !== undefined ? { hashPool } : {}),
    });
    await Promise.all([delta.settled, base.settled, ...more.map((m) => m.settled)]);
    await scratch?.remove();
    return result;
  } catch (err) {
    await Promise.all([delta?.cancel(), base?.cancel(), ...more.map((m) => m.cancel())]);
    await scratch?.discardUnlessClaimed();
    throw err;
  } finally {
    await ownPool?.close();
  }
}

/**
 * The scratch folder a delta kept nowhere is fetched into. Left behind by a
 * run that failed after it took the target, it lets the next run resume; a
 * run refused before that (a target of someone else's files) leaves nothing
 * in the target, nor a target it created. Only a delta from the Hub can be
 * fetched so: the flag is refused, not ignored, for a local one.
 */
async function streamedDeltaDir(options: ApplyDeltaOptions & { delta: string }): Promise<{ dir: string; remove(): Promise<void>; discardUnlessClaimed(): Promise<void> }> {
  if (!isHubRef(options.delta)) {
    throw new UsageError(`--no-cache-delta: the delta ${options.delta} is a local path, not a Hub repo; it is read where it is (drop the flag)`);
  }
  if (options.offline === true) {
    throw new HubError(`--no-cache-delta: the delta ${options.delta} must be downloaded, and HF_HUB_OFFLINE is set; unset it, or drop the flag to use a cached copy`);
  }
  const dir = join(options.target, STREAMED_DELTA_DIR);
  const createdTarget = !existsSync(options.target);
  const createdDir = !existsSync(dir);
  await makeDirectory(dir).catch((err: unknown) => { throw ioError("create", dir, err); });
  const remove = () => rm(dir, { recursive: true, force: true }).catch(() => undefined);
  return {
    dir,
    remove,
    async discardUnlessClaimed() {
      // Another run's record or lock: the folder may be theirs now.
      if (!createdDir || existsSync(join(options.target, JOB_FILE)) || existsSync(join(options.target, LOCK_FILE))) return;
      await remove();
      if (createdTarget) await rmdir(options.target).catch(() => undefined); // only if nothing else is in it
    },
  };
}

/**
 * target - base -> a delta directory (see delta/own/make-delta.ts). With `push`,
 * the repo is created first (a bad token fails in seconds, not after the
 * make), each delta file is uploaded while the next is made, and one commit
 * follows the make. A failed upload stops the make; a failed make commits
 * nothing.
 */
export async function makeDelta(options: MakeDeltaOptions): Promise<MakeDeltaResult> {
  preflight([options.base, options.target], options.delta);
  const push = options.push;
  const session = push === undefined ? undefined : await UploadSession.begin(push.repo, {
    accessToken: push.accessToken ?? options.token,
    hubUrl: push.hubUrl ?? options.hubUrl,
    fetch: push.fetch ?? options.fetch,
    private: push.private,
    revision: push.revision,
    retry: push.retry,
    onNotice: push.onNotice,
    onProgress: options.onProgress,
  });
  try {
    const base = await resolveSource(options.base, options);
    const target = await resolveSource(options.target, options);
    const made = await makeLocalDelta({
      ...options,
      base,
      target,
      ...(session === undefined ? {} : {
        signal: session.signal,
        onFileWritten: async (file) => {
          session.add(file.path, file.absPath, { size: file.size, sha256: file.sha256 });
          await options.onFileWritten?.(file);
        },
      }),
    });
    if (session === undefined) return made;
    return { ...made, pushed: await commitDelta(session, made.delta, push?.message) };
  } catch (err) {
    await session?.cancel();
    throw err;
  }
}

/** Re-checks a recovered model against delta.json (a file, a delta directory or a Hub repo) or a checksum list. */
export async function verifyModel(dir: string, options: VerifyOptions): Promise<VerifyResult> {
  checkInputExists(dir);
  const manifest = options.manifest === undefined ? undefined : (await resolveSource(options.manifest, { ...options, files: [MANIFEST_FILE] })).path;
  return verifyLocalModel(dir, { ...options, manifest });
}

/** A model's tensors, dtypes, shapes, files and metadata. */
export async function inspectModel(src: string, options: SourceOptions = {}): Promise<InspectResult> {
  preflight([src], undefined);
  return inspectLocalModel(await resolveSource(src, options));
}

/** Which known base conversion a model is, by its files' SHA-256 (see delta/identify.ts). */
export async function identifyModel(src: string, options: SourceOptions & { threads?: number } = {}): Promise<IdentifyResult> {
  preflight([src], undefined);
  return identifyLocalModel((await resolveSource(src, options)).path, options);
}

/** Any model to safetensors or PyTorch checkpoints (see model/convert.ts). */
export async function convertModel(src: string, out: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  preflight([src], out);
  // Started only if the output asks for one (GGUF hashes its file on a worker).
  let pool: HashPool | undefined;
  try {
    return await convertLocalModel(await resolveSource(src, options), out, { ...options, createHasher: () => (pool ??= new HashPool()).create() });
  } finally {
    await pool?.close();
  }
}

/**
 * Local paths are checked before any download: a misspelt directory or an
 * unwritable target should not cost a 26 GB download first.
 */
function preflight(sources: string[], output: string | undefined): void {
  for (const src of sources) {
    if (!src.startsWith("hf://") && parseHubRef(src) === undefined) checkInputExists(src);
  }
  if (output !== undefined) checkWritableOutput(output);
}

/** Will this source be downloaded? (An existing local path wins over a repo id, as in resolveSource.) */
function isHubRef(src: string): boolean {
  return src.startsWith("hf://") || (!existsSync(src) && parseHubRef(src) !== undefined);
}
