import type { FileHandle } from "node:fs/promises";
import type { StreamedFiles } from "../io/file-set.js";
import type { HashPool } from "../hash/hash-pool.js";
import type { ConnectionBudget } from "./transport/connection-budget.js";
import type { OnProgress } from "../progress.js";
import type { LockMode } from "./transport/blob-lock.js";
import type { RetryPolicy } from "./transport/retry.js";

/**
 * The download API's types, apart from download.ts so that its parts
 * (snapshot-run.ts, transfer.ts) can name them without importing it.
 */

export interface DownloadOptions {
  /** The Hub cache (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub: the CLI decides). */
  cacheDir: string;
  hubUrl?: string;
  accessToken?: string;
  fetch?: typeof fetch;
  /** Cache only (HF_HUB_OFFLINE=1): never touch the network. */
  offline?: boolean;
  /** One `start` (total bytes to fetch), `advance` as bytes land (label: the file), one `end`: phase "download". */
  onProgress?: OnProgress;
  /** Exact repo paths wanted, instead of the model's files (e.g. ["delta.json"]). */
  files?: readonly string[];
  /** Without `files`: a model's files (one weight format and what travels with it), or every file of a delta repo. */
  select?: "model" | "delta";
  /** Simultaneous HTTP connections over all files (default DEFAULT_DOWNLOAD_CONNECTIONS, at most MAX_DOWNLOAD_CONNECTIONS). */
  connections?: number;
  /** Connections shared with downloads running beside this one (apply-delta's base and delta): at most its size in all. */
  connectionBudget?: ConnectionBudget;
  /** The longest byte range one request asks for (default 32 MiB; ranges shrink near the end). */
  rangeBytes?: number;
  /** A download request with no byte for this long is abandoned and retried (HF_HUB_DOWNLOAD_TIMEOUT; default 10 s). */
  downloadTimeoutMs?: number;
  /** Each metadata call (model info, file listing) may take this long (HF_HUB_ETAG_TIMEOUT; default 10 s). */
  etagTimeoutMs?: number;
  /** Tries without progress per byte range (and per metadata call), and the backoff between them. */
  retry?: Partial<RetryPolicy>;
  /**
   * Hash blobs found in the cache before using them (LFS: sha256; others: git
   * blob id). Their size is always checked. A wrong blob is moved aside and
   * fetched again (offline: refused).
   */
  verifyCache?: boolean;
  /** Hash LFS blobs on these workers instead of the main thread. */
  hashPool?: HashPool;
  /** One-line notices: retries, waits for a lock, corrupt blobs moved aside, resumed downloads (each also arrives on onProgress as a notice event). */
  onEvent?: (event: DownloadEvent) => void;
  /** How blobs are locked against other writers (default "auto": huggingface_hub's flock, see blob-lock.ts). */
  lockMode?: LockMode;
  /** Aborting stops the download, leaving the cache consistent and resumable. */
  signal?: AbortSignal;
  /**
   * Keep no copy (apply-delta --no-cache-delta): `cacheDir` is a scratch
   * directory, large files are fetched as readers plan and ask for them, and
   * deleted once released (see StreamedFiles).
   */
  stream?: boolean;
}

/** Things worth one line to the user; `message` is that line. */
export type DownloadEvent =
  | { kind: "retry"; file: string; attempt: number; attempts: number; delayMs: number; reason: string; message: string }
  | { kind: "waiting-for-lock"; file: string; message: string }
  | { kind: "lock-fallback"; message: string }
  | { kind: "corrupt-blob"; file: string; movedTo: string; message: string }
  | { kind: "resumed"; file: string; bytes: number; fromPython: boolean; message: string };

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

/**
 * A download under way, for code that starts using files before all of them
 * (or all of one) are there: see `startSnapshotDownload`.
 */
export interface SnapshotDownload {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  /** `<cache>/models--org--name/snapshots/<commit>`: each file appears there once complete and verified. */
  readonly dir: string;
  /** Repo paths, sorted. */
  readonly files: readonly string[];
  /** The handle of one file; throws for a path not in `files`. */
  file(path: string): FileDownload;
  /** Resolves when every file is verified and linked; rejects with a one-line HubError (the cache stays resumable). */
  readonly done: Promise<Snapshot>;
  /** Stops, keeping every byte fetched for the next run; resolves once the cache is consistent. */
  cancel(): Promise<void>;
  /** With DownloadOptions.stream: how readers steer the download. */
  readonly stream?: StreamedFiles;
}

/** One file of a SnapshotDownload. */
export interface FileDownload {
  /** Repo path. */
  readonly path: string;
  readonly size: number;
  /** `snapshots/<commit>/<path>`: a link to the blob once `complete` resolves. */
  readonly snapshotPath: string;
  /** `blobs/<etag>`: the verified bytes, once complete. */
  readonly blobPath: string;
  /**
   * `blobs/<etag>.dw.incomplete`: where the bytes are written while the file
   * downloads, each at its offset. Bytes read from it after `waitForRange`
   * resolved are what the Hub sent but are NOT YET VERIFIED: only `complete`
   * says that the whole file matched its sha256. When verified, this file is
   * renamed to `blobPath` (a descriptor opened before keeps working). Use
   * `open()` rather than opening this path yourself.
   */
  readonly partialPath: string;
  /** Resolves when bytes [start, end) are on disk; rejects if the file fails. */
  waitForRange(start: number, end: number): Promise<void>;
  /** waitForRange(0, length). */
  waitForPrefix(length: number): Promise<void>;
  /** Opens the file's bytes for reading wherever they are now (partial file, else blob). */
  open(): Promise<FileHandle>;
  /** Resolves with `snapshotPath` once the file is verified and linked; rejects with a one-line HubError. */
  readonly complete: Promise<string>;
}
