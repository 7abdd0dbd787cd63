import { readdir, readFile, realpath, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { HubError, ioError } from "../../errors.js";
import { MAX_HUB_LISTING_ENTRIES, MAX_INDEX_BYTES } from "../../limits.js";
import { HashPool } from "../../hash/hash-pool.js";
import { checkCachedBlob } from "./cache-check.js";
import { RepoCache } from "./cache-layout.js";
import { HubFetch, HubUnreachableError, TOKEN_HOWTO, httpFailure, hubFailure, type FailureContext } from "./hub-errors.js";
import { checkHubRef, isCommitId, type HubRef } from "./repo-id.js";
import { backoffMs, formatSeconds, isTransientStatus, parseRetryAfter, retryAfterTooLong, sleep, type RetryPolicy } from "../transport/retry.js";
import { repoPathProblem, selectDeltaFiles, selectModelFiles } from "../select-files.js";
import { isEncName, isIndexName, isPytorchWeightName, isSafetensorsWeightName } from "../../formats/weight-files.js";
import { SnapshotRun, completedDownload, type ListedFile } from "./snapshot-run.js";
import { transferSettings } from "../transport/transfer-settings.js";

export type { DownloadEvent, DownloadOptions, FileDownload, Snapshot, SnapshotDownload } from "../download-types.js";
import type { DownloadOptions, Snapshot, SnapshotDownload } from "../download-types.js";

export const DEFAULT_HUB_URL = "https://huggingface.co";

export { DOWNLOAD_DEFAULTS } from "../transport/transfer-settings.js";

/**
 * Makes a Hub repo's model files available in the HF cache and returns the
 * snapshot directory. Files already cached (by us or by Python) are reused
 * without a request once their size checks out; the rest are fetched in
 * parallel byte ranges (see transfer.ts, partial-blob.ts), checked (LFS:
 * sha256; regular: git blob sha1; both: size), renamed and linked. An
 * interrupted download resumes on the next run, keeping every finished range.
 */
export async function downloadSnapshot(ref: HubRef, options: DownloadOptions): Promise<Snapshot> {
  // LFS files are hashed as they arrive: on a worker, not on the thread that reads the sockets
  // (on two cores, SHA-256 there was a third of that thread's CPU and slowed the download).
  const ownPool = options.hashPool === undefined && (options.offline !== true || options.verifyCache === true) ? new HashPool() : undefined;
  try {
    const download = await startSnapshotDownload(ref, ownPool === undefined ? options : { ...options, hashPool: ownPool });
    return await download.done;
  } finally {
    await ownPool?.close();
  }
}

/**
 * Starts downloading a snapshot and returns as soon as the Hub said which
 * files it has (one metadata round trip), with a handle per file to wait for
 * byte ranges, read them while the rest arrives, and learn when the file is
 * verified. Killed at any moment, the cache stays consistent: a rerun
 * resumes.
 */
export async function startSnapshotDownload(ref: HubRef, options: DownloadOptions): Promise<SnapshotDownload> {
  // Repo and revision become cache paths: refuse anything that could climb out.
  checkHubRef(ref);
  const settings = transferSettings(options);
  const cache = new RepoCache(options.cacheDir, ref.repo);
  if (options.offline === true) return completedDownload(await cachedSnapshot(ref, options), cache);
  const hubUrl = (options.hubUrl ?? DEFAULT_HUB_URL).replace(/\/+$/, "");
  const fetcher = new HubFetch(metadataFetch(options.fetch ?? globalThis.fetch, settings.etagTimeoutMs, settings.retry));
  const ctx: FailureContext = { action: "download", repo: ref.repo, revision: ref.revision, hubUrl, hasToken: options.accessToken !== undefined };
  checkToken(options.accessToken, ctx);

  let commit: string;
  let listing: ListedFile[];
  try {
    const hub = await import("@huggingface/hub");
    const common = { hubUrl, fetch: fetcher.fetch, ...(options.accessToken !== undefined ? { accessToken: options.accessToken } : {}) };
    commit = isCommitId(ref.revision)
      ? ref.revision
      : await resolveCommit(await hub.modelInfo({ name: ref.repo, revision: ref.revision, additionalFields: ["sha"], ...common }), ctx);
    listing = [];
    for await (const entry of hub.listFiles({ repo: { type: "model", name: ref.repo }, revision: commit, recursive: true, ...common })) {
      if (listing.length >= MAX_HUB_LISTING_ENTRIES) throw new HubError(`Failed to download ${ref.repo}: the repo lists more than ${MAX_HUB_LISTING_ENTRIES} files`);
      if (entry.type === "file") listing.push(toListedFile(entry, ctx));
    }
  } catch (err) {
    const failure = hubFailure(err, ctx, fetcher);
    // Like Python: when the Hub cannot be reached, a cached snapshot still serves.
    if (failure instanceof HubUnreachableError) {
      const cached = await cachedSnapshot(ref, options).catch(() => undefined);
      if (cached !== undefined) return completedDownload(cached, cache);
    }
    throw failure;
  }

  const byPath = new Map(listing.map((f) => [f.path, f]));
  const wanted = options.files !== undefined ? [...options.files].sort() : options.select === "delta" ? selectDeltaFiles(listing) : selectModelFiles(listing);
  for (const path of wanted) {
    if (!byPath.has(path)) throw httpFailure(404, "EntryNotFound", { ...ctx, file: path });
  }
  if (ref.revision !== commit) await cache.writeRef(ref.revision, commit);

  const run = new SnapshotRun({
    ref, commit, cache, hubUrl, ctx, options, settings,
    files: wanted.map((path) => byPath.get(path)!),
    fetch: options.fetch,
  });
  await run.prepare();
  run.start();
  return run;
}

/** No answer to a metadata call within HF_HUB_ETAG_TIMEOUT: the Hub counts as unreachable (the cache may serve). */
class MetadataTimeoutError extends Error {
  constructor(ms: number) {
    super(`no answer within ${formatSeconds(ms)}`);
    this.name = "TimeoutError";
  }
}

/**
 * The fetch the Hub client uses for metadata: each call bounded by the etag
 * timeout, and 429 / 5xx answers to GETs retried with backoff (Retry-After
 * honoured), as huggingface_hub's http_backoff does. A Hub that cannot be
 * reached is not retried: the cache may serve instead.
 */
function metadataFetch(base: typeof fetch, timeoutMs: number, retry: RetryPolicy): typeof fetch {
  return async (input, init) => {
    const method = (init?.method ?? "GET").toUpperCase();
    for (let attempt = 1; ; attempt++) {
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(new MetadataTimeoutError(timeoutMs)), timeoutMs);
      timer.unref();
      const signal = init?.signal != null ? AbortSignal.any([init.signal, timeout.signal]) : timeout.signal;
      let res: Response;
      try {
        res = await base(input, { ...init, signal });
      } catch (err) {
        clearTimeout(timer);
        throw timeout.signal.aborted ? timeout.signal.reason : err;
      }
      const wait = parseRetryAfter(res.headers.get("retry-after")) ?? backoffMs(retry, attempt);
      if ((method !== "GET" && method !== "HEAD") || !isTransientStatus(res.status) || attempt >= retry.attempts || retryAfterTooLong(wait)) {
        // The body is read after we return: the timer keeps bounding it.
        return res;
      }
      clearTimeout(timer);
      await res.body?.cancel().catch(() => undefined);
      await sleep(wait);
    }
  };
}

function checkToken(token: string | undefined, ctx: FailureContext): void {
  // The client refuses other tokens with a TypeError; say it in our words first.
  if (token !== undefined && !token.startsWith("hf_")) {
    throw new HubError(`Failed to ${ctx.action} ${ctx.repo}: the token does not look like a Hugging Face token (they start with "hf_"): check ${TOKEN_HOWTO}`);
  }
}

async function resolveCommit(info: { sha?: unknown }, ctx: FailureContext): Promise<string> {
  if (typeof info.sha !== "string" || !isCommitId(info.sha)) {
    throw new HubError(`Failed to download ${ctx.repo}: the Hub did not say which commit "${ctx.revision}" is`);
  }
  return info.sha;
}

function toListedFile(entry: { path: string; size: number; oid?: string; lfs?: { oid: string; size: number } }, ctx: FailureContext): ListedFile {
  const problem = repoPathProblem(entry.path);
  if (problem !== undefined) throw new HubError(`Failed to download ${ctx.repo}: the Hub listed a file "${entry.path.slice(0, 200)}" that ${problem}`);
  const lfs = entry.lfs !== undefined;
  const etag = lfs ? entry.lfs!.oid : entry.oid;
  const size = lfs ? entry.lfs!.size : entry.size;
  // The etag becomes a file name in the cache: only a hash may.
  if (typeof etag !== "string" || !(lfs ? /^[0-9a-f]{64}$/ : /^[0-9a-f]{40}$/).test(etag) || !Number.isSafeInteger(size) || size < 0) {
    throw new HubError(`Failed to download ${ctx.repo}: the Hub listed ${entry.path} without a valid ${lfs ? "sha256" : "git oid"} and size`);
  }
  return { path: entry.path, size, etag, lfs };
}

/**
 * The cached snapshot of a repo, without the network (HF_HUB_OFFLINE=1):
 * refs/<revision> gives the commit, snapshots/<commit> the files. Refuses a
 * snapshot whose model files are missing (e.g. a shard never downloaded),
 * and, with `verifyCache`, one whose blobs do not match their names: offline
 * there is no listing to check sizes against, and no way to fetch again.
 */
export async function cachedSnapshot(ref: HubRef, options: DownloadOptions): Promise<Snapshot> {
  const cache = new RepoCache(options.cacheDir, ref.repo);
  const name = `${ref.repo}${ref.revision === "main" ? "" : `@${ref.revision}`}`;
  const notCached = (what: string) =>
    new HubError(`Failed to open ${name} offline: ${what} in the cache ${options.cacheDir}: download it once with network access (unset HF_HUB_OFFLINE)`);
  const commit = isCommitId(ref.revision) ? ref.revision : await cache.readRef(ref.revision);
  if (commit === undefined) throw notCached("the repo is not");
  const dir = cache.snapshotDir(commit);
  const present = await listSnapshot(dir);
  if (present === undefined) throw notCached("the repo is not");

  let files: string[];
  if (options.files !== undefined) {
    files = [...options.files].sort();
    const missing = files.find((f) => !present.includes(f));
    if (missing !== undefined) throw notCached(`${missing} is not`);
  } else {
    const listing = present.map((path) => ({ path, size: 0 }));
    files = options.select === "delta" ? selectDeltaFiles(listing) : selectModelFiles(listing);
    // .enc files are point-alpaca-style releases' weights.
    const weights = files.filter((f) => isSafetensorsWeightName(f) || isPytorchWeightName(f) || isEncName(f));
    if (files.length === 0 || (options.select !== "delta" && weights.length === 0)) throw notCached("no weight file is");
    // Top-level indexes only: an XOR release's index (in its payload folder) is XORed data, not JSON.
    for (const index of files.filter((f) => isIndexName(f) && !f.includes("/"))) {
      for (const shard of await indexShards(cache.snapshotPath(commit, index), index)) {
        if (!present.includes(shard)) throw notCached(`${shard} (listed in ${index}) is not`);
      }
    }
  }
  if (options.verifyCache === true) {
    for (const file of files) {
      const blob = await realpath(cache.snapshotPath(commit, file)).catch((err: unknown) => { throw ioError("read", cache.snapshotPath(commit, file), err); });
      const etag = basename(blob);
      if (!/^([0-9a-f]{64}|[0-9a-f]{40})$/.test(etag)) continue; // not a blob of the cache layout: nothing to compare with
      const checked = await checkCachedBlob(blob, etag, undefined, { digest: true, ...(options.hashPool !== undefined ? { hashPool: options.hashPool } : {}) });
      if (checked.state === "corrupt") {
        throw new HubError(`Failed to open ${name} offline: ${file} in the cache is corrupt (its blob ${checked.problem}): unset HF_HUB_OFFLINE and run again to fetch it again`);
      }
    }
  }
  return { repo: ref.repo, revision: ref.revision, commit, dir, files, downloaded: [] };
}

/** Files of a snapshot (repo paths) whose links resolve: a dangling link is a missing file. */
async function listSnapshot(dir: string): Promise<string[] | undefined> {
  if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) return undefined;
  const files: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const names = await readdir(rel === "" ? dir : join(dir, rel)).catch(() => [] as string[]);
    for (const name of names.sort()) {
      const relPath = rel === "" ? name : `${rel}/${name}`;
      const info = await stat(join(dir, relPath)).catch(() => undefined);
      if (info?.isDirectory() === true) await walk(relPath);
      else if (info?.isFile() === true && files.length < MAX_HUB_LISTING_ENTRIES) files.push(relPath);
    }
  };
  await walk("");
  return files;
}

async function indexShards(path: string, name: string): Promise<string[]> {
  const size = await stat(path).then((s) => s.size, (err) => { throw ioError("read", path, err); });
  if (size > MAX_INDEX_BYTES) throw new HubError(`Failed to read ${name}: larger than ${MAX_INDEX_BYTES} bytes`);
  try {
    const index = JSON.parse(await readFile(path, "utf8")) as { weight_map?: Record<string, unknown> };
    return [...new Set(Object.values(index.weight_map ?? {}).filter((v): v is string => typeof v === "string"))];
  } catch (err) {
    throw new HubError(`Failed to read ${name}: not a JSON index (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
}

