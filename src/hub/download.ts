import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { HubError, ioError } from "../errors.js";
import { MAX_HUB_LISTING_ENTRIES, MAX_INDEX_BYTES } from "../limits.js";
import type { OnProgress } from "../progress.js";
import { RepoCache, isCachedFile } from "./cache-layout.js";
import { HubFetch, HubUnreachableError, TOKEN_HOWTO, httpFailure, hubFailure, type FailureContext } from "./hub-errors.js";
import { checkHubRef, isCommitId, type HubRef } from "./repo-id.js";
import { repoPathProblem, selectModelFiles, type RepoFile } from "./select-files.js";

export const DEFAULT_HUB_URL = "https://huggingface.co";

export interface DownloadOptions {
  /** The Hub cache (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub: the CLI decides). */
  cacheDir: string;
  hubUrl?: string;
  accessToken?: string;
  fetch?: typeof fetch;
  /** Cache only (HF_HUB_OFFLINE=1): never touch the network. */
  offline?: boolean;
  onProgress?: OnProgress;
  /** Exact repo paths wanted, instead of the model's files (e.g. ["delta.json"]). */
  files?: readonly string[];
}

export interface Snapshot {
  repo: string;
  revision: string;
  commit: string;
  /** `<cache>/models--org--name/snapshots/<commit>`. */
  dir: string;
  /** Repo paths made available in `dir`, sorted. */
  files: string[];
  /** Of those, the ones fetched now (the rest were already cached). */
  downloaded: string[];
}

interface ListedFile extends RepoFile {
  /** Blob name: LFS sha256, else git blob sha1. */
  etag: string;
  lfs: boolean;
}

/**
 * Makes a Hub repo's model files available in the HF cache and returns the
 * snapshot directory. Files already cached (by us or by Python) are reused
 * without a request; the rest are streamed to `blobs/<etag>.incomplete`,
 * checked (LFS: sha256; regular: git blob sha1; both: size), renamed and linked.
 * An interrupted download resumes from its `.incomplete` file on the next run.
 */
export async function downloadSnapshot(ref: HubRef, options: DownloadOptions): Promise<Snapshot> {
  // Repo and revision become cache paths: refuse anything that could climb out.
  checkHubRef(ref);
  if (options.offline === true) return cachedSnapshot(ref, options);
  const hubUrl = (options.hubUrl ?? DEFAULT_HUB_URL).replace(/\/+$/, "");
  const fetcher = new HubFetch(options.fetch);
  const ctx: FailureContext = { action: "download", repo: ref.repo, revision: ref.revision, hubUrl, hasToken: options.accessToken !== undefined };
  checkToken(options.accessToken, ctx);
  const cache = new RepoCache(options.cacheDir, ref.repo);

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
      if (cached !== undefined) return cached;
    }
    throw failure;
  }

  const byPath = new Map(listing.map((f) => [f.path, f]));
  const wanted = options.files !== undefined ? [...options.files].sort() : selectModelFiles(listing);
  for (const path of wanted) {
    if (!byPath.has(path)) throw httpFailure(404, "EntryNotFound", { ...ctx, file: path });
  }
  if (ref.revision !== commit) await cache.writeRef(ref.revision, commit);

  const downloaded: string[] = [];
  for (const path of wanted) {
    const file = byPath.get(path)!;
    const pointer = cache.snapshotPath(commit, path);
    if (await isCachedFile(pointer)) continue;
    const blob = cache.blobPath(file.etag);
    if (!(await isCachedFile(blob))) {
      const url = `${hubUrl}/${ref.repo}/resolve/${commit}/${path.split("/").map(encodeURIComponent).join("/")}`;
      await downloadBlob(url, file, cache, { ...options, ctx: { ...ctx, file: path }, fetcher });
      downloaded.push(path);
    }
    await cache.linkSnapshotFile(commit, path, file.etag);
  }
  return { repo: ref.repo, revision: ref.revision, commit, dir: cache.snapshotDir(commit), files: wanted, downloaded };
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

/** Hashes a file's first `length` bytes into `hash` (resuming a download), chunk by chunk. */
async function hashPrefix(path: string, length: number, hash: Hash): Promise<void> {
  if (length === 0) return;
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1 })) hash.update(chunk as Buffer);
}

/** LFS files are checked against their sha256; regular files against their git blob sha1. */
function newDigest(file: ListedFile): Hash {
  if (file.lfs) return createHash("sha256");
  return createHash("sha1").update(`blob ${file.size}\0`);
}

async function downloadBlob(
  url: string,
  file: ListedFile,
  cache: RepoCache,
  options: DownloadOptions & { ctx: FailureContext; fetcher: HubFetch },
): Promise<void> {
  const { ctx, onProgress } = options;
  const incomplete = cache.incompletePath(file.etag);
  const blob = cache.blobPath(file.etag);
  await mkdir(cache.blobPath(""), { recursive: true }).catch((err) => { throw ioError("create", cache.blobPath(""), err); });

  let have = await stat(incomplete).then((s) => s.size, () => 0);
  if (have > file.size) {
    await rm(incomplete, { force: true });
    have = 0;
  }
  let digest = newDigest(file);
  await hashPrefix(incomplete, have, digest);
  onProgress?.({ kind: "start", phase: "download", totalBytes: file.size, label: file.path });
  if (have > 0) onProgress?.({ kind: "advance", phase: "download", bytes: have, label: file.path });

  const handle = await open(incomplete, have > 0 ? "r+" : "w").catch((err) => { throw ioError("create", incomplete, err); });
  let position = have;
  try {
    if (have < file.size) {
      const headers: Record<string, string> = { "Accept-Encoding": "identity" };
      if (options.accessToken !== undefined) headers.Authorization = `Bearer ${options.accessToken}`;
      if (have > 0) headers.Range = `bytes=${have}-`;
      let res: Response;
      try {
        res = await options.fetcher.fetch(url, { headers, redirect: "follow" });
      } catch (err) {
        throw hubFailure(err, ctx, options.fetcher);
      }
      if (res.status === 200 && have > 0) {
        // The server ignored the Range: start over.
        position = 0;
        digest = newDigest(file);
      } else if (res.status === 206) {
        const start = /^bytes (\d+)-/.exec(res.headers.get("Content-Range") ?? "")?.[1];
        if (start === undefined || Number(start) !== have) throw new HubError(`Failed to download ${ctx.repo}: the Hub answered a resumed download of ${file.path} with the wrong range`);
      } else if (!res.ok) {
        await res.body?.cancel();
        throw httpFailure(res.status, res.headers.get("X-Error-Code") ?? undefined, ctx);
      }
      if (res.body === null) throw new HubError(`Failed to download ${ctx.repo}: empty answer for ${file.path}`);
      try {
        for await (const chunk of res.body) {
          if (position + chunk.byteLength > file.size) {
            throw new HubError(`Failed to download ${ctx.repo}: ${file.path} is larger than the ${file.size} bytes the Hub listed`);
          }
          await handle.write(chunk, 0, chunk.byteLength, position);
          position += chunk.byteLength;
          digest.update(chunk);
          onProgress?.({ kind: "advance", phase: "download", bytes: chunk.byteLength, label: file.path });
        }
      } catch (err) {
        if (err instanceof HubError) throw err;
        throw interrupted(ctx, file, position, err);
      }
      if (position < file.size) throw interrupted(ctx, file, position);
      await handle.truncate(position);
      await handle.sync();
    }
  } finally {
    await handle.close();
  }

  const actual = digest.digest("hex");
  if (actual !== file.etag) {
    await rm(incomplete, { force: true });
    throw new HubError(
      `Failed to download ${ctx.repo}: ${file.path} does not match its ${file.lfs ? "sha256" : "git oid"} ` +
        `(expected ${file.etag}, got ${actual}); the corrupt download was deleted: run again`,
    );
  }
  try {
    await rename(incomplete, blob);
  } catch (err) {
    throw ioError("rename", incomplete, err);
  }
  onProgress?.({ kind: "end", phase: "download" });
}

function interrupted(ctx: FailureContext, file: ListedFile, position: number, cause?: unknown): HubError {
  return new HubError(
    `Failed to download ${ctx.repo}: ${file.path} was interrupted after ${position} of ${file.size} bytes: run again to resume`,
    { cause },
  );
}

/**
 * The cached snapshot of a repo, without the network (HF_HUB_OFFLINE=1):
 * refs/<revision> gives the commit, snapshots/<commit> the files. Refuses a
 * snapshot whose model files are missing (e.g. a shard never downloaded).
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
    files = selectModelFiles(present.map((path) => ({ path, size: 0 })));
    // .enc files are point-alpaca-style releases' weights.
    const weights = files.filter((f) => /\.(safetensors|bin|enc)$/.test(f) && f !== "delta-fixups.safetensors");
    if (weights.length === 0) throw notCached("no weight file is");
    // Top-level indexes only: an XOR release's index (in its payload folder) is XORed data, not JSON.
    for (const index of files.filter((f) => f.endsWith(".index.json") && !f.includes("/"))) {
      for (const shard of await indexShards(cache.snapshotPath(commit, index), index)) {
        if (!present.includes(shard)) throw notCached(`${shard} (listed in ${index}) is not`);
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
