import type { HashPool } from "../hash/hash-pool.js";
import type { OnProgress } from "../progress.js";
import type { DownloadOptions, SnapshotDownload } from "./download-types.js";
import type { RetryPolicy } from "./transport/retry.js";

/**
 * The seam between what the hub does (resolve a source, push a folder) and
 * the host it does it with. The Hugging Face Hub is one implementation
 * (hub/huggingface/backend.ts); a mirror or another host is one module that
 * implements HubBackend, listed in hub/backends.ts. Generic transport
 * (hub/transport/) is there for a backend to use, not required by it.
 */
export interface HubBackend {
  /** The host, as messages name it ("the Hugging Face Hub"). */
  readonly name: string;
  /**
   * Whether `src` names this host whatever the disk holds (a scheme such as
   * `hf://`): such a source is never read as a local path.
   */
  isExplicit(src: string): boolean;
  /**
   * `src` as one of this host's repos, or undefined when it does not have the
   * shape of one (then it can only be a local path). Throws a UsageError for
   * an explicit source, or a repo-shaped id, that breaks the host's naming rules.
   */
  parseRef(src: string): RemoteRef | undefined;
  /**
   * Starts making the repo's files available in `options.cacheDir` (offline:
   * the cached snapshot) and returns once the host said which files there
   * are; each file's bytes can be read as they arrive. `options.accessToken`
   * and `options.hubUrl` are the ones given for the Hugging Face Hub
   * (--token, HF_TOKEN, HF_ENDPOINT): another host must never send them
   * anywhere, and takes its own credentials instead.
   */
  startDownload(ref: RemoteRef, options: DownloadOptions): Promise<SnapshotDownload>;
  /** Refuses a push that cannot happen (bad repo id, no token) before anything is read or sent. */
  checkPush(repo: string, accessToken: string | undefined): void;
  /** Opens one commit to `repo` (created if missing); files are uploaded as they are added. */
  beginUpload(repo: string, options: UploadOptions): Promise<RepoUpload>;
  /** The model card (README.md) pushed with a folder that has none, from the data the caller built. */
  modelCard(input: ModelCardInput): string;
}

/** A repo of some host and the revision asked for (HubRef is the Hugging Face one). */
export interface RemoteRef {
  /** `org/name`. */
  repo: string;
  /** Branch, tag or commit id. */
  revision: string;
}

export interface UploadOptions {
  /** A write token. Without one the session fails before any request. */
  accessToken?: string;
  hubUrl?: string;
  fetch?: typeof fetch;
  /** Create the repo private (a repo that already exists keeps its visibility). */
  private?: boolean;
  /** Branch to commit to (created from main if missing); default main. */
  revision?: string;
  /** Every byte the session will upload, when known up front; otherwise each file adds its size to the total as it is added. */
  totalBytes?: number;
  /** Hashes large files whose sha256 the caller does not know on worker threads. */
  hashPool?: HashPool;
  /** How often a transient failure (5xx, 429, a reset) of one upload request is tried again; default as downloads. */
  retry?: Partial<RetryPolicy>;
  /** One line per retried request ("... trying again in 2 s (try 2 of 5)"); the same lines also arrive on onProgress as notice events. */
  onNotice?: (message: string) => void;
  onProgress?: OnProgress;
}

/** One commit being built up, file by file. */
export interface RepoUpload {
  readonly repo: string;
  /** Aborted when the upload failed: work feeding it (a make-delta) stops. */
  readonly signal: AbortSignal;
  has(path: string): boolean;
  /** Starts uploading a file: a path on disk (streamed) or bytes in memory. */
  add(path: string, source: string | Uint8Array, known: { size: number; sha256?: string }): void;
  /** Waits for every upload, then makes the one commit. */
  commit(title: string): Promise<CommitResult>;
  /** Stops every upload; nothing is committed. */
  cancel(): Promise<void>;
}

export interface CommitResult {
  commitUrl?: string;
  commitId?: string;
  /** Repo paths committed, sorted. */
  files: string[];
  /** Whether the repo can be read by anyone (false: private). */
  public: boolean;
}

/**
 * The parts of a delta's manifest (delta.json) a model card shows. The
 * caller reads and checks it (the hub never reads delta.json); everything
 * else in it is ignored.
 */
export interface CardManifest {
  format?: unknown;
  /** "delta-weights 0.1.0": the tool that made the delta. */
  tool?: unknown;
  codec?: unknown;
  base?: { source?: unknown };
  target?: { source?: unknown; files?: Record<string, unknown> };
  delta?: { files?: Record<string, unknown> };
}

export interface ModelCardInput {
  /** The repo being pushed, `org/name`. */
  repo: string;
  /** Parsed delta.json, when the folder is a delta. */
  manifest?: CardManifest;
}
