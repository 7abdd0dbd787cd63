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
import { DeltaError, HubError, UsageError, ioError } from "./errors.js";
import { applyDelta as applyLocalDelta, type ApplyRequest, type ApplyDeltaResult } from "./delta/apply-delta.js";
import { makeDelta as makeLocalDelta, type MakeDeltaOptions as LocalMakeOptions, type MakeDeltaResult as LocalMakeResult } from "./delta/own/make-delta.js";
import { verifyModel as verifyLocalModel, type VerifyOptions as LocalVerifyOptions, type VerifyResult } from "./delta/own/verify-model.js";
import { identifyModel as identifyLocalModel, type IdentifyResult } from "./delta/identify.js";
import { MANIFEST_FILE } from "./delta/own/manifest.js";
import { readChecksums } from "./hash/checksums.js";
import { HashPool } from "./hash/hash-pool.js";
import { ConnectionBudget } from "./hub/transport/connection-budget.js";
import type { CardManifest, UploadOptions } from "./hub/backend.js";
import { commitWithCard, listUploadableFiles, uploadFolder, type FolderUploadOptions, type PushResult } from "./hub/push.js";
import { PUSH_BACKEND, locateSource } from "./hub/backends.js";
import { resolveRequested, sourceRequest, startSource, type ArrivingSource, type ResolveOptions, type SourceRequest } from "./hub/resolve-source.js";
import { readJsonFile } from "./io/files.js";
import { JOB_FILE, checkInputExists, checkWritableOutput } from "./io/output-guard.js";
import { LOCK_FILE } from "./io/output-lock.js";
import { DEFAULT_DOWNLOAD_CONNECTIONS, MAX_MANIFEST_BYTES } from "./limits.js";
import { isWeightFileName } from "./model/extra-files.js";
import { convertModel as convertLocalModel, type ConvertOptions as LocalConvertOptions, type ConvertResult } from "./model/convert.js";
import { inspectModel as inspectLocalModel, type InspectResult } from "./model/inspect.js";
import { makeDirectory } from "./io/make-directory.js";
import { OUTPUT_OPTION_FLAGS, type OutputOption, type OutputOptions } from "./formats/output-format.js";

/** How repo ids are resolved: token, endpoint, cache, offline mode, fetch (the CLI reads them from flags and HF_* variables). */
export type SourceOptions = Omit<ResolveOptions, "files" | "select">;

/**
 * A layer's request with every one of its parameters named (undefined when
 * the caller gave none): a parameter added to a layer and not passed on here
 * fails to compile, so the composition root never drops a flag.
 */
type EveryParameter<T> = T & Record<keyof T, unknown>;

export type ApplyDeltaOptions = Omit<ApplyRequest, "base" | "delta" | "chained"> & SourceOptions & {
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
  /** Hash workers to use instead of starting `threads` of our own (shared with downloads; not closed here). */
  hashPool?: HashPool;
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
  retry?: UploadOptions["retry"];
  /** One line per retried request. */
  onNotice?: (message: string) => void;
}

export type MakeDeltaResult = LocalMakeResult & { pushed?: PushResult };
export type VerifyOptions = LocalVerifyOptions & SourceOptions;
export type ConvertOptions = Omit<LocalConvertOptions, "createHasher"> & SourceOptions;

export type { PushResult };
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
  const request = sourceRequest(options);
  const shared: SourceRequest = {
    ...request,
    runtime: {
      ...request.runtime,
      connections: request.runtime.connections ?? new ConnectionBudget(request.transfer.connections ?? DEFAULT_DOWNLOAD_CONNECTIONS),
      hashPool,
    },
  };
  let delta: ArrivingSource | undefined;
  let base: ArrivingSource | undefined;
  const more: ArrivingSource[] = [];
  try {
    delta = await startSource(options.delta, {
      ...shared,
      select: "delta",
      ...(scratch === undefined ? {} : { access: { ...shared.access, cacheDir: scratch.dir }, transfer: { ...shared.transfer, stream: true } }),
    });
    for (const src of chained) more.push(await startSource(src, { ...shared, select: "delta" }));
    base = await startSource(options.base, shared);
    const request: EveryParameter<ApplyRequest> = {
      base: base.source,
      delta: delta.source,
      chained: more.length === 0 ? undefined : more.map((m) => m.source),
      target: options.target,
      checksums: options.checksums,
      convention: options.convention,
      force: options.force,
      expectSum: options.expectSum,
      threads: options.threads,
      outtype: options.outtype,
      format: options.format,
      byteorderRecord: options.byteorderRecord,
      numShards: options.numShards,
    };
    const result = await applyLocalDelta(request, { hashPool, onProgress: options.onProgress });
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
  const session = push === undefined ? undefined : await PUSH_BACKEND.beginUpload(push.repo, {
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
    const request = sourceRequest(options);
    const base = await resolveRequested(options.base, request);
    const target = await resolveRequested(options.target, request);
    const makeRequest: EveryParameter<LocalMakeOptions> = {
      base,
      target,
      delta: options.delta,
      codec: options.codec,
      maxShardBytes: options.maxShardBytes,
      force: options.force,
      threads: options.threads,
      onProgress: options.onProgress,
      onFileWritten: session === undefined
        ? options.onFileWritten
        : async (file) => {
          session.add(file.path, file.absPath, { size: file.size, sha256: file.sha256 });
          await options.onFileWritten?.(file);
        },
      signal: session?.signal,
    };
    const made = await makeLocalDelta(makeRequest);
    if (session === undefined) return made;
    // The card is made from the delta.json just written.
    const card = await readCardManifest(join(made.delta, MANIFEST_FILE));
    return { ...made, pushed: await commitWithCard(PUSH_BACKEND, session, card, push?.message ?? "Upload delta weights") };
  } catch (err) {
    await session?.cancel();
    throw err;
  }
}

/** What a push takes: the hub's upload options, but the card is api.ts's to make (from delta.json). */
export interface PushOptions extends Omit<FolderUploadOptions, "card"> {
  /**
   * Upload a directory that is not a delta (no delta.json, or weight files
   * delta.json does not list). Off by default: pushing a base or a full
   * fine-tune by mistake publishes exactly what deltas exist to keep private.
   */
  allowNonDelta?: boolean;
}

/**
 * Uploads every file of `dir` to the Hub model repo `repo` in ONE commit,
 * creating the repo if it does not exist (see hub/push.ts). What is a delta
 * is decided here, not in the hub: the folder's delta.json makes the model
 * card, and a folder that is not a delta is refused unless `allowNonDelta`.
 * Hidden files and folders (`.git`, `.cache`, temporary `.partial` files)
 * are not uploaded.
 */
export async function pushToHub(dir: string, repo: string, options: PushOptions): Promise<PushResult> {
  // The repo id and token are checked before the folder is read: nothing is read or sent for a push that cannot happen.
  PUSH_BACKEND.checkPush(repo, options.accessToken);
  const files = await listUploadableFiles(dir);
  const manifest = files.includes(MANIFEST_FILE) ? await readCardManifest(join(dir, MANIFEST_FILE)) : undefined;
  if (options.allowNonDelta !== true) refuseNonDelta(dir, files, manifest);
  const upload: EveryParameter<FolderUploadOptions> = {
    accessToken: options.accessToken,
    hubUrl: options.hubUrl,
    fetch: options.fetch,
    private: options.private,
    revision: options.revision,
    message: options.message ?? (manifest !== undefined ? "Upload delta weights" : undefined),
    card: manifest,
    retry: options.retry,
    onNotice: options.onNotice,
    onProgress: options.onProgress,
  };
  return uploadFolder(PUSH_BACKEND, dir, files, repo, upload);
}

/** delta.json as the model card reads it: strict JSON, bounded; only the fields the card shows are used. */
async function readCardManifest(path: string): Promise<CardManifest> {
  const value = await readJsonFile(path, MAX_MANIFEST_BYTES, "a manifest", "E_DELTA");
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new DeltaError(`Failed to read ${path}: not a JSON object`);
  return value as CardManifest;
}

/**
 * A push publishes: a directory without delta.json, or with weight files
 * delta.json does not list, holds weights that are not a delta (a base, a
 * full fine-tune) and is refused unless the caller says so.
 */
function refuseNonDelta(dir: string, files: readonly string[], manifest: CardManifest | undefined): void {
  if (manifest === undefined) {
    throw new HubError(`Failed to push ${dir}: it holds no ${MANIFEST_FILE}, so it is not a delta; a push makes its weights downloadable (by anyone, unless the repo is private): pass --allow-non-delta to upload it anyway`);
  }
  const listed = manifest.delta?.files ?? {};
  const unlisted = files.find((f) => isWeightFileName(f) && !Object.hasOwn(listed, f));
  if (unlisted !== undefined) {
    throw new HubError(`Failed to push ${dir}: ${unlisted} is a weight file that ${MANIFEST_FILE} does not list, so it is not part of the delta (a base or a full model?); remove it, or pass --allow-non-delta to upload it anyway`);
  }
}

/** Re-checks a recovered model against delta.json (a file, a delta directory or a Hub repo) or a checksum list. */
export async function verifyModel(dir: string, options: VerifyOptions): Promise<VerifyResult> {
  checkInputExists(dir);
  const manifest = options.manifest === undefined ? undefined : (await resolveRequested(options.manifest, { ...sourceRequest(options), files: [MANIFEST_FILE] })).path;
  return verifyLocalModel(dir, { manifest, checksums: options.checksums, threads: options.threads, onProgress: options.onProgress });
}

/** A model's tensors, dtypes, shapes, files and metadata. */
export async function inspectModel(src: string, options: SourceOptions = {}): Promise<InspectResult> {
  preflight([src], undefined);
  return inspectLocalModel(await resolveRequested(src, sourceRequest(options)));
}

/** Which known base conversion a model is, by its files' SHA-256 (see delta/identify.ts). */
export async function identifyModel(src: string, options: SourceOptions & { threads?: number } = {}): Promise<IdentifyResult> {
  preflight([src], undefined);
  return identifyLocalModel((await resolveRequested(src, sourceRequest(options))).path, { threads: options.threads, onProgress: options.onProgress });
}

/** Any model to safetensors or PyTorch checkpoints (see model/convert.ts). */
export async function convertModel(src: string, out: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  preflight([src], out);
  // Started only if the output asks for one (GGUF hashes its file on a worker).
  let pool: HashPool | undefined;
  try {
    return await convertLocalModel(await resolveRequested(src, sourceRequest(options)), out, {
      ...outputOptionsOf(options),
      force: options.force,
      format: options.format,
      onProgress: options.onProgress,
      onFileWritten: options.onFileWritten,
      createHasher: () => (pool ??= new HashPool()).create(),
    });
  } finally {
    await pool?.close();
  }
}

/** The output options the caller gave, each taken by name from the list the output formats own. */
function outputOptionsOf(options: OutputOptions): OutputOptions {
  const picked: Record<string, unknown> = {};
  for (const option of Object.keys(OUTPUT_OPTION_FLAGS) as OutputOption[]) {
    if (options[option] !== undefined) picked[option] = options[option];
  }
  return picked as OutputOptions;
}

/**
 * Local paths are checked before any download: a misspelt directory or an
 * unwritable target should not cost a 26 GB download first.
 */
function preflight(sources: string[], output: string | undefined): void {
  for (const src of sources) {
    if (locateSource(src).kind !== "remote") checkInputExists(src);
  }
  if (output !== undefined) checkWritableOutput(output);
}

/** Will this source be downloaded? (hub/backends.ts decides, for resolveSource too.) */
function isHubRef(src: string): boolean {
  return locateSource(src).kind === "remote";
}
