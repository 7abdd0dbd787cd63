import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { HubError, ModelError } from "../errors.js";
import type { LocalSource } from "../model/types.js";
import type { OnProgress } from "../progress.js";
import type { DownloadOptions } from "./download-types.js";

export interface ResolveOptions {
  /** Hugging Face token (the CLI reads --token, HF_TOKEN, $HF_HOME/token). */
  token?: string;
  /** Hub endpoint (default https://huggingface.co; the CLI passes HF_ENDPOINT). */
  hubUrl?: string;
  fetch?: typeof fetch;
  /** The HF cache (the CLI passes HF_HUB_CACHE or $HF_HOME/hub); default ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Cache only, no network (the CLI passes HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Per-file download progress. */
  onProgress?: OnProgress;
  /** Download exactly these repo paths instead of the model's files (e.g. ["delta.json"]). */
  files?: readonly string[];
  /** Without `files`: a model's files, or every file of a delta repo. */
  select?: "model" | "delta";
  /** How downloads run (connections, timeouts, retries, notices): see DownloadOptions. */
  transfer?: Pick<DownloadOptions, "connections" | "rangeBytes" | "downloadTimeoutMs" | "etagTimeoutMs" | "retry" | "verifyCache" | "onEvent" | "signal" | "connectionBudget" | "hashPool" | "stream">;
}

export interface ResolvedSource extends LocalSource {
  /** For a Hub repo: which commit the snapshot directory holds. */
  hub?: { repo: string; revision: string; commit: string; files: string[]; downloaded: string[] };
}

export function defaultHubCacheDir(): string {
  return join(homedir(), ".cache", "huggingface", "hub");
}

/**
 * Turns a SRC (local path, `org/name[@rev]`, `hf://org/name@rev`) into a local
 * path. An existing local path always wins; a Hub repo is downloaded into the
 * HF cache (only the files a model needs) and its snapshot directory returned.
 * The Hub client is loaded only on that path.
 */
export async function resolveSource(src: string, options: ResolveOptions = {}): Promise<ResolvedSource> {
  if (!src.startsWith("hf://") && existsSync(src)) return { path: resolve(src), source: src };
  const { parseHubRef } = await import("./huggingface/repo-id.js");
  const ref = parseHubRef(src);
  if (ref === undefined) throw new ModelError(`Failed to open ${src}: no such file or directory`);
  const { downloadSnapshot } = await import("./huggingface/download.js");
  const snapshot = await downloadSnapshot(ref, downloadOptions(options)).catch((err: unknown) => notFoundLocally(src, err));
  return {
    path: snapshot.dir,
    source: src,
    hub: { repo: snapshot.repo, revision: snapshot.revision, commit: snapshot.commit, files: snapshot.files, downloaded: snapshot.downloaded },
  };
}

/** A source being resolved: its local directory now, its files as they arrive, and a way to stop the download. */
export interface ArrivingSource {
  source: LocalSource;
  /** Resolves once every file is complete and verified (at once for a local path or a cached snapshot). */
  settled: Promise<void>;
  /** Stops a download under way (the cache stays resumable). */
  cancel(): Promise<void>;
}

/**
 * Like resolveSource, but a Hub repo's files are not waited for: the
 * download starts and the source's files are read as they arrive (see
 * FileSet). Local paths and offline snapshots are returned as they are.
 */
export async function startSource(src: string, options: ResolveOptions = {}): Promise<ArrivingSource> {
  const ready = async (source: LocalSource): Promise<ArrivingSource> => ({ source, settled: Promise.resolve(), cancel: async () => undefined });
  if (!src.startsWith("hf://") && existsSync(src)) return ready({ path: resolve(src), source: src });
  if (options.offline === true || options.files !== undefined) return ready(await resolveSource(src, options));
  const { parseHubRef } = await import("./huggingface/repo-id.js");
  const ref = parseHubRef(src);
  if (ref === undefined) throw new ModelError(`Failed to open ${src}: no such file or directory`);
  const { startSnapshotDownload } = await import("./huggingface/download.js");
  const { downloadFileSet } = await import("./download-file-set.js");
  const download = await startSnapshotDownload(ref, downloadOptions(options)).catch((err: unknown) => notFoundLocally(src, err));
  const files = downloadFileSet(download);
  files.settled.catch(() => undefined); // observed by whoever reads the files
  return { source: { path: download.dir, source: src, files }, settled: files.settled, cancel: () => download.cancel() };
}

function downloadOptions(options: ResolveOptions): DownloadOptions {
  return {
    cacheDir: options.cacheDir ?? defaultHubCacheDir(),
    hubUrl: options.hubUrl,
    accessToken: options.token,
    fetch: options.fetch,
    offline: options.offline,
    onProgress: options.onProgress,
    files: options.files,
    select: options.select,
    ...options.transfer,
  };
}

/** `org/name` may have been meant as a local path: say that it was looked for. */
function notFoundLocally(src: string, err: unknown): never {
  if (!src.startsWith("hf://") && err instanceof HubError && /repository not found/.test(err.message)) {
    throw new HubError(`${err.message} (no local path ${src} exists either)`, { cause: err });
  }
  throw err;
}
