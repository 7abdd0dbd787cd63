import { homedir } from "node:os";
import { join } from "node:path";
import { HubError, ModelError } from "../errors.js";
import type { LocalSource } from "../model/types.js";
import type { OnProgress } from "../progress.js";
import type { Runtime } from "../runtime.js";
import { locateSource, namesHostExplicitly } from "./backends.js";
import { downloadFileSet } from "./download-file-set.js";
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
 * What resolving one source takes, each part declared: how to reach the
 * host, how downloads run, and the run's shared resources. Built field by
 * field by the caller (api.ts), never a caller's own options spread in.
 */
export interface SourceRequest {
  access: HostAccess;
  transfer: TransferOptions;
  runtime: Runtime;
  /** Download exactly these repo paths instead of the model's files (e.g. ["delta.json"]). */
  files?: readonly string[];
  /** Without `files`: a model's files, or every file of a delta repo. */
  select?: "model" | "delta";
}

/** Who we are to the host, and where its files are kept. */
export interface HostAccess {
  token?: string;
  hubUrl?: string;
  fetch?: typeof fetch;
  /** The cache the files are kept in (the HF cache, or a scratch folder with `transfer.stream`). */
  cacheDir: string;
  /** Cache only, no network. */
  offline?: boolean;
}

/** How downloads run: see DownloadOptions. */
export type TransferOptions = Pick<DownloadOptions, "connections" | "rangeBytes" | "downloadTimeoutMs" | "etagTimeoutMs" | "retry" | "verifyCache" | "onEvent" | "stream">;

/**
 * Turns a SRC (local path, `org/name[@rev]`, `hf://org/name@rev`) into a local
 * path. An existing local path always wins; a Hub repo is downloaded into the
 * HF cache (only the files a model needs) and its snapshot directory returned.
 * The Hub client is loaded only on that path.
 */
export async function resolveSource(src: string, options: ResolveOptions = {}): Promise<ResolvedSource> {
  return resolveRequested(src, sourceRequest(options));
}

/** resolveSource, from the parts a composition root built. */
export async function resolveRequested(src: string, request: SourceRequest): Promise<ResolvedSource> {
  const at = locateSource(src);
  if (at.kind === "local") return { path: at.path, source: src };
  if (at.kind === "missing") throw new ModelError(`Failed to open ${src}: no such file or directory`);
  const snapshot = await at.backend.startDownload(at.ref, downloadOptions(request))
    .then((download) => download.done)
    .catch((err: unknown) => notFoundLocally(src, err));
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
export async function startSource(src: string, request: SourceRequest): Promise<ArrivingSource> {
  const ready = async (source: LocalSource): Promise<ArrivingSource> => ({ source, settled: Promise.resolve(), cancel: async () => undefined });
  const at = locateSource(src);
  if (at.kind === "local") return ready({ path: at.path, source: src });
  if (at.kind === "missing") throw new ModelError(`Failed to open ${src}: no such file or directory`);
  if (request.access.offline === true || request.files !== undefined) return ready(await resolveRequested(src, request));
  const download = await at.backend.startDownload(at.ref, downloadOptions(request)).catch((err: unknown) => notFoundLocally(src, err));
  const files = downloadFileSet(download);
  files.settled.catch(() => undefined); // observed by whoever reads the files
  return { source: { path: download.dir, source: src, files, hub: { repo: download.repo } }, settled: files.settled, cancel: () => download.cancel() };
}

/** The public ResolveOptions as a request: each part taken by name. */
export function sourceRequest(options: ResolveOptions): SourceRequest {
  const transfer = options.transfer ?? {};
  return {
    access: {
      token: options.token,
      hubUrl: options.hubUrl,
      fetch: options.fetch,
      cacheDir: options.cacheDir ?? defaultHubCacheDir(),
      offline: options.offline,
    },
    transfer: {
      connections: transfer.connections,
      rangeBytes: transfer.rangeBytes,
      downloadTimeoutMs: transfer.downloadTimeoutMs,
      etagTimeoutMs: transfer.etagTimeoutMs,
      retry: transfer.retry,
      verifyCache: transfer.verifyCache,
      onEvent: transfer.onEvent,
      stream: transfer.stream,
    },
    runtime: {
      hashPool: transfer.hashPool,
      connections: transfer.connectionBudget,
      signal: transfer.signal,
      onProgress: options.onProgress,
    },
    files: options.files,
    select: options.select,
  };
}

function downloadOptions({ access, transfer, runtime, files, select }: SourceRequest): DownloadOptions {
  return {
    cacheDir: access.cacheDir,
    hubUrl: access.hubUrl,
    accessToken: access.token,
    fetch: access.fetch,
    offline: access.offline,
    onProgress: runtime.onProgress,
    files,
    select,
    connections: transfer.connections,
    rangeBytes: transfer.rangeBytes,
    downloadTimeoutMs: transfer.downloadTimeoutMs,
    etagTimeoutMs: transfer.etagTimeoutMs,
    retry: transfer.retry,
    verifyCache: transfer.verifyCache,
    onEvent: transfer.onEvent,
    stream: transfer.stream,
    connectionBudget: runtime.connections,
    hashPool: runtime.hashPool,
    signal: runtime.signal,
  };
}

/** `org/name` may have been meant as a local path: say that it was looked for. */
function notFoundLocally(src: string, err: unknown): never {
  if (!namesHostExplicitly(src) && err instanceof HubError && /repository not found/.test(err.message)) {
    throw new HubError(`${err.message} (no local path ${src} exists either)`, { cause: err });
  }
  throw err;
}
