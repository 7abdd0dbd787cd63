import { setMaxListeners } from "node:events";
import { open, realpath, rm, stat, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import { HubError, ioError } from "../../errors.js";
import { checkFreeSpace } from "../../io/output-guard.js";
import { acquireBlobLock, type BlobLock } from "../transport/blob-lock.js";
import { checkCachedBlob, moveAside, sameBlob, type BlobIdentity } from "./cache-check.js";
import type { RepoCache } from "./cache-layout.js";
import type { DownloadEvent, DownloadOptions, FileDownload, Snapshot, SnapshotDownload } from "../download-types.js";
import type { TransferSettingsResolved } from "../transport/transfer-settings.js";
import { httpFailure, type FailureContext } from "./hub-errors.js";
import { PartialBlob, blobHasher, blobPaths, type BlobPaths, type BlobSpec } from "../transport/partial-blob.js";
import type { HubRef } from "./repo-id.js";
import { formatSeconds } from "../transport/retry.js";
import type { RepoFile } from "../select-files.js";
import { fetchClient, nodeHttpClient } from "../transport/range-client.js";
import { BlobTransfer, Transfer, withinEdges } from "../transport/transfer.js";
import type { StreamedFiles } from "../../io/file-set.js";
import { makeDirectory } from "../../io/make-directory.js";
import { noticeEvent } from "../../progress.js";

/**
 * One snapshot download: which blobs are cached (and sound), which to fetch,
 * the lock around each blob it writes, and the handles its callers wait on.
 */

export interface ListedFile extends RepoFile {
  /** Blob name: LFS sha256, else git blob sha1. */
  etag: string;
  lfs: boolean;
}

/** Files up to this size are fetched first: configs and indexes are read before weights. */
const SMALL_FILE_BYTES = 8 * 1024 * 1024;
/** A streamed download fetches a read this small on its own; a larger one is the reader starting on the file. */
const FEW_BYTES = 64 * 1024;

interface Waiter {
  start: number;
  end: number;
  resolve(): void;
  reject(err: unknown): void;
}

/** One blob of the snapshot (files with equal content share it). */
class BlobJob {
  readonly paths: BlobPaths;
  readonly label: string;
  fetch = false;
  corrupt: { problem: string; identity: BlobIdentity } | undefined;
  partial: PartialBlob | undefined;
  complete = false;
  failure: unknown;
  /** Progress bytes reported for this blob so far. */
  advanced = 0;
  /** Streamed downloads: whether its bulk may be fetched, which of its paths readers let go, and whether it was let go unfetched. */
  admitted = true;
  readonly released = new Set<string>();
  dropped = false;
  task: BlobTransfer | undefined;
  /** Ranges readers asked for before its transfer existed (see Transfer.hurry). */
  readonly hurry: [number, number][] = [];
  /** Called when a reader waits for bytes not yet here (a streamed download admits the file then). */
  onWait: ((start: number, end: number) => void) | undefined;
  #waiters: Waiter[] = [];

  constructor(readonly spec: BlobSpec, readonly files: ListedFile[], readonly lockPath: string, blobPath: string, readonly priority: number) {
    this.paths = blobPaths(blobPath);
    this.label = files[0]!.path;
  }

  covers(start: number, end: number): boolean {
    if (this.failure !== undefined) return false; // its bytes were not what the Hub promised, or are gone
    return this.complete || (this.partial?.done.covers(start, end) ?? false);
  }

  waitFor(start: number, end: number): Promise<void> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > this.spec.size) {
      return Promise.reject(new RangeError(`bytes [${start}, ${end}) are not inside ${this.label} (${this.spec.size} bytes)`));
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.covers(start, end)) return Promise.resolve();
    this.onWait?.(start, end);
    return new Promise((resolve, reject) => this.#waiters.push({ start, end, resolve, reject }));
  }

  notify(): void {
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((w) => {
      if (!this.covers(w.start, w.end)) return true;
      w.resolve();
      return false;
    });
  }

  fail(err: unknown): void {
    this.failure ??= err;
    for (const w of this.#waiters.splice(0)) w.reject(this.failure);
  }
}

class FileDownloadHandle implements FileDownload {
  readonly path: string;
  readonly size: number;
  readonly blobPath: string;
  readonly partialPath: string;
  readonly complete: Promise<string>;
  settled = false;
  #resolve!: (path: string) => void;
  #reject!: (err: unknown) => void;

  constructor(readonly job: BlobJob, file: { path: string; size: number }, readonly snapshotPath: string) {
    this.path = file.path;
    this.size = file.size;
    this.blobPath = job.paths.blob;
    this.partialPath = job.paths.partial;
    this.complete = new Promise<string>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.complete.catch(() => undefined); // callers may watch `done` only
  }

  resolve(path: string): void {
    this.settled = true;
    this.#resolve(path);
  }

  reject(err: unknown): void {
    this.settled = true;
    this.#reject(err);
  }

  waitForRange(start: number, end: number): Promise<void> {
    return this.job.waitFor(start, end);
  }

  waitForPrefix(length: number): Promise<void> {
    return this.job.waitFor(0, length);
  }

  async open(): Promise<FileHandle> {
    if (!this.job.complete) {
      try {
        return await open(this.partialPath, "r");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("open", this.partialPath, err);
        // renamed to the blob since: fall through
      }
    }
    try {
      return await open(this.blobPath, "r");
    } catch (err) {
      throw ioError("open", this.blobPath, err);
    }
  }
}

export interface RunInit {
  ref: HubRef;
  commit: string;
  cache: RepoCache;
  hubUrl: string;
  ctx: FailureContext;
  options: DownloadOptions;
  settings: TransferSettingsResolved;
  files: ListedFile[];
  /** The caller's fetch, if any: then the data path uses it too. */
  fetch: typeof fetch | undefined;
}

export class SnapshotRun implements SnapshotDownload {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  readonly dir: string;
  readonly files: readonly string[];
  readonly done: Promise<Snapshot>;
  #resolveDone!: (s: Snapshot) => void;
  #rejectDone!: (err: unknown) => void;
  readonly #init: RunInit;
  readonly #jobs: BlobJob[] = [];
  readonly #handles = new Map<string, FileDownloadHandle>();
  readonly #stop = new AbortController();
  #transfer: Transfer | undefined;
  #failure: unknown;
  readonly #downloaded: string[] = [];
  /** Streamed: the large blobs in the order readers will read them. */
  #planned: BlobJob[] = [];
  readonly stream?: StreamedFiles;

  constructor(init: RunInit) {
    this.#init = init;
    this.repo = init.ref.repo;
    this.revision = init.ref.revision;
    this.commit = init.commit;
    this.dir = init.cache.snapshotDir(init.commit);
    this.files = init.files.map((f) => f.path);
    this.done = new Promise<Snapshot>((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    this.done.catch(() => undefined); // callers may watch the files only

    const byEtag = new Map<string, ListedFile[]>();
    for (const f of init.files) byEtag.set(f.etag, [...(byEtag.get(f.etag) ?? []), f]);
    const ordered = [...byEtag.values()].sort((a, b) => Number(a[0]!.size > SMALL_FILE_BYTES) - Number(b[0]!.size > SMALL_FILE_BYTES));
    ordered.forEach((group, priority) => {
      const { etag, size, lfs } = group[0]!;
      const job = new BlobJob({ etag, size, lfs }, group, init.cache.lockPath(etag), init.cache.blobPath(etag), priority);
      this.#jobs.push(job);
      for (const f of group) this.#handles.set(f.path, new FileDownloadHandle(job, f, init.cache.snapshotPath(init.commit, f.path)));
    });
    // Every blob's lock wait listens to it at once: no leak, a fan-out of one per blob.
    setMaxListeners(Math.max(10, 2 * this.#jobs.length + 2), this.#stop.signal);
    if (init.options.stream === true) {
      for (const job of this.#jobs) {
        if (job.spec.size <= SMALL_FILE_BYTES) continue;
        job.admitted = false;
        job.onWait = (start, end) => this.#demand(job, start, end);
      }
      this.stream = {
        plan: (paths) => this.#plan(paths),
        release: (path) => this.#release(path),
        finish: () => this.#finishReads(),
      };
    }
    const signal = init.options.signal;
    if (signal !== undefined) {
      const onAbort = () => this.#fail(this.#stopped());
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        void this.done.finally(() => signal.removeEventListener("abort", onAbort)).catch(() => undefined);
      }
    }
  }

  file(path: string): FileDownload {
    const handle = this.#handles.get(path);
    if (handle === undefined) throw new HubError(`Failed to download ${this.repo}: ${path} is not one of the files of this download`);
    return handle;
  }

  async cancel(): Promise<void> {
    this.#fail(this.#stopped());
    await this.done.catch(() => undefined);
  }

  #stopped(): HubError {
    return new HubError(`Failed to download ${this.repo}: stopped before the end; run again to resume`);
  }

  // Streamed downloads (no copy kept): one large file's bulk is fetched at a time, in
  // the readers' order, and the next one starts once the readers let it go. The apply
  // reads a file as it arrives, so it lets go soon after the last byte; the link
  // waits that long. A reader waiting for bytes of another file gets that file at
  // once (its bytes before any other's), so no order of reads can wait forever.
  // Peak disk: the largest file, plus the first and last MiB of the others, plus any
  // a reader jumps to.

  #plan(paths: readonly string[]): void {
    const jobs = paths.map((p) => this.#handles.get(p)?.job).filter((j): j is BlobJob => j !== undefined && !j.admitted);
    this.#planned = [...new Set([...this.#planned, ...jobs])];
    this.#admitNext();
  }

  #demand(job: BlobJob, start: number, end: number): void {
    if (job.admitted || job.dropped || withinEdges(job.spec.size, start, end, this.#init.settings.rangeBytes)) return;
    if (end - start > FEW_BYTES) {
      this.#admit(job, true);
      return;
    }
    // A few bytes (a PyTorch zip entry's local header, read while planning): fetched alone.
    const range: [number, number] = [start, Math.min(job.spec.size, Math.max(end, start + FEW_BYTES))];
    if (job.task !== undefined) this.#transfer?.hurry(job.task, ...range);
    else job.hurry.push(range);
  }

  #admit(job: BlobJob, first: boolean): void {
    job.admitted = true;
    if (job.task !== undefined) this.#transfer?.admit(job.task, first);
  }

  #admitNext(): void {
    const held = this.#planned.some((j) => j.admitted && j.released.size < j.files.length && j.failure === undefined);
    if (held) return;
    const next = this.#planned.find((j) => !j.admitted && !j.complete && !j.dropped);
    if (next !== undefined) this.#admit(next, false);
  }

  async #release(path: string): Promise<void> {
    const job = this.#handles.get(path)?.job;
    if (job === undefined) return;
    job.released.add(path);
    if (job.released.size < job.files.length) return;
    if (!job.admitted && !job.complete) {
      this.#drop(job);
    } else {
      // Its bytes were read: they are verified before they go (an output nothing else checks relies on that).
      const verified = await this.#handles.get(job.files[0]!.path)!.complete.then(() => true, () => false);
      if (verified) {
        await rm(job.paths.blob, { force: true }).catch(() => undefined);
        for (const f of job.files) await rm(this.#init.cache.snapshotPath(this.commit, f.path), { force: true }).catch(() => undefined);
      }
    }
    this.#admitNext();
  }

  /** Nobody needs this file's bulk: stop fetching it (what the run waits for, it no longer waits for). */
  #drop(job: BlobJob): void {
    job.dropped = true;
    // The download bar counted it: it ends full, not short by what was never needed.
    if (job.fetch) this.#advance(job, job.spec.size - job.advanced, `${job.label} (not needed)`);
    if (job.task !== undefined) this.#transfer?.drop(job.task);
    const err = new HubError(`Failed to read ${job.label}: it was not downloaded (no reader needed it)`);
    job.fail(err);
    for (const f of job.files) this.#handles.get(f.path)!.reject(err);
  }

  #finishReads(): void {
    for (const job of this.#jobs) if (!job.admitted && !job.complete && !job.dropped) this.#drop(job);
  }

  /** A notice goes to both subscriptions: the typed download events and the one progress stream. */
  #event(event: DownloadEvent): void {
    this.#init.options.onEvent?.(event);
    this.#init.options.onProgress?.(noticeEvent("download", event.message, event.kind));
  }

  /** Sorts blobs into sound cached ones and ones to fetch; checks the disk has room. */
  async prepare(): Promise<void> {
    const { options, cache } = this.#init;
    const blobs = cache.blobPath("");
    await makeDirectory(blobs).catch((err: unknown) => { throw ioError("create", blobs, err); });
    const digest = options.verifyCache === true;
    const present = digest ? await this.#presentBytes() : 0;
    if (present > 0) options.onProgress?.({ kind: "start", phase: "check cache", totalBytes: present });
    for (const job of this.#jobs) {
      const checked = await checkCachedBlob(job.paths.blob, job.spec.etag, job.spec.size, {
        digest,
        ...(options.hashPool !== undefined && job.spec.lfs ? { hashPool: options.hashPool } : {}),
        onBytes: (bytes) => options.onProgress?.({ kind: "advance", phase: "check cache", bytes, label: job.label }),
      });
      if (checked.state === "ok") {
        // A partial download of a blob that is complete (a run killed while cleaning up, or
        // fetched since by Python): no one can use it now. Whoever writes a blob holds its
        // lock and only ever does so while the blob is missing, so this races with nobody.
        for (const stale of [job.paths.partial, job.paths.sidecar]) await rm(stale, { force: true }).catch(() => undefined);
        continue;
      }
      job.fetch = true;
      if (checked.state === "corrupt") job.corrupt = { problem: checked.problem, identity: checked.identity };
    }
    if (present > 0) options.onProgress?.({ kind: "end", phase: "check cache" });
    const missing: number[] = [];
    for (const job of this.#jobs.filter((j) => j.fetch)) {
      const have = await stat(job.paths.partial).then((s) => s.blocks * 512, () => 0);
      missing.push(Math.max(0, job.spec.size - have));
    }
    // Streamed, about one large file is on disk at a time (see #admitNext).
    const held = options.stream === true ? missing.sort((a, b) => b - a).slice(0, 1) : missing;
    const needed = held.reduce((n, m) => n + m, 0);
    if (needed > 0) await checkFreeSpace(blobs, needed);
  }

  async #presentBytes(): Promise<number> {
    let n = 0;
    for (const job of this.#jobs) n += await stat(job.paths.blob).then((s) => (s.size === job.spec.size ? s.size : 0), () => 0);
    return n;
  }

  start(): void {
    this.#run().then(this.#resolveDone, (err: unknown) => {
      // Files already verified and linked stay usable; the rest fail with the run.
      for (const job of this.#jobs) if (!job.complete) job.fail(err);
      for (const h of this.#handles.values()) if (!h.settled) h.reject(err);
      this.#rejectDone(err);
    });
  }

  async #run(): Promise<Snapshot> {
    const { options, settings, ctx, hubUrl } = this.#init;
    for (const job of this.#jobs.filter((j) => !j.fetch)) {
      job.complete = true;
      job.notify(); // readers may already be waiting for its bytes
      await this.#link(job);
    }
    const fetching = this.#jobs.filter((j) => j.fetch);
    if (fetching.length > 0) {
      const total = fetching.reduce((n, j) => n + j.spec.size, 0);
      const byLabel = new Map(fetching.map((j) => [j.label, j]));
      options.onProgress?.({ kind: "start", phase: "download", totalBytes: total, label: `${this.repo}: ${fetching.length} file${fetching.length === 1 ? "" : "s"}` });
      this.#transfer = new Transfer({
        connections: settings.connections,
        ...(options.connectionBudget !== undefined ? { budget: options.connectionBudget } : {}),
        rangeBytes: settings.rangeBytes,
        readTimeoutMs: settings.downloadTimeoutMs,
        retry: settings.retry,
        client: this.#init.fetch !== undefined ? fetchClient(this.#init.fetch) : nodeHttpClient(settings.connections),
        hubUrl,
        ...(options.accessToken !== undefined ? { accessToken: options.accessToken } : {}),
        ctx: {
          repo: ctx.repo,
          refused: (status, header, file) => httpFailure(status, header("X-Error-Code") ?? undefined, { ...ctx, file }),
        },
        onBytes: (label, bytes) => this.#advance(byLabel.get(label), bytes, label),
        onRetry: (r) => this.#event({
          kind: "retry", ...r,
          message: `${r.file}: ${r.reason}; trying again in ${formatSeconds(Math.round(r.delayMs / 100) * 100)} (try ${r.attempt} of ${r.attempts})`,
        }),
      });
      if (this.#failure !== undefined) void this.#transfer.stop(this.#failure);
      await Promise.allSettled(fetching.map((job) => this.#fetchBlob(job)));
      await this.#transfer.stop(this.#failure);
      if (this.#failure !== undefined) throw this.#failure;
      options.onProgress?.({ kind: "end", phase: "download" });
    }
    return { repo: this.repo, revision: this.revision, commit: this.commit, dir: this.dir, files: [...this.files], downloaded: this.#downloaded.sort() };
  }

  #advance(job: BlobJob | undefined, bytes: number, label: string): void {
    // Never past the file's size: a dropped file was counted whole, and its ranges in flight still land.
    const counted = job === undefined ? 0 : Math.min(bytes, job.spec.size - job.advanced);
    if (job === undefined || counted <= 0) return;
    job.advanced += counted;
    this.#init.options.onProgress?.({ kind: "advance", phase: "download", bytes: counted, label });
  }

  #fail(err: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = err;
    this.#stop.abort(err);
    if (this.#transfer !== undefined) void this.#transfer.stop(err);
  }

  async #link(job: BlobJob): Promise<void> {
    for (const f of job.files) {
      const pointer = await this.#init.cache.linkSnapshotFile(this.commit, f.path, job.spec.etag);
      this.#handles.get(f.path)!.resolve(pointer);
    }
  }

  async #fetchBlob(job: BlobJob): Promise<void> {
    const { options } = this.#init;
    let lock: BlobLock | undefined;
    try {
      if (this.#failure !== undefined) throw this.#failure;
      lock = await acquireBlobLock(job.lockPath, {
        ...(options.lockMode !== undefined ? { mode: options.lockMode } : {}),
        signal: this.#stop.signal,
        onWaiting: (holder) => this.#event({ kind: "waiting-for-lock", file: job.label, message: `${job.label}: waiting: ${holder}` }),
        onFallback: (reason) => this.#event({ kind: "lock-fallback", message: reason }),
      });
      // Under the lock, look again: another process may have fetched (or repaired) the blob meanwhile.
      const now = await checkCachedBlob(job.paths.blob, job.spec.etag, job.spec.size, { digest: false });
      const stillCorrupt = job.corrupt !== undefined && now.state !== "missing" && (await sameBlob(job.paths.blob, job.corrupt.identity));
      if (now.state === "ok" && !stillCorrupt) {
        this.#advance(job, job.spec.size - job.advanced, `${job.label} (fetched by another process)`);
      } else {
        if (now.state === "corrupt" || stillCorrupt) {
          const problem = now.state === "corrupt" ? now.problem : job.corrupt!.problem;
          const movedTo = await moveAside(job.paths.blob);
          this.#event({
            kind: "corrupt-blob", file: job.label, movedTo,
            message: `${job.label}: the cached blob ${problem}: moved it to ${basename(movedTo)}, fetching it again`,
          });
        }
        await this.#download(job);
        if (job.dropped) return;
        for (const f of job.files) this.#downloaded.push(f.path);
      }
      job.complete = true;
      job.notify();
      await this.#link(job);
      if (this.stream !== undefined) this.#admitNext();
    } catch (err) {
      if (job.dropped) return; // its lock wait or fetch was cut short on purpose
      // Disk and lock failures too reach callers as one HubError line (the cause is kept).
      this.#fail(err instanceof HubError ? err : new HubError(`Failed to download ${this.repo}: ${lowerFirst(err instanceof Error ? err.message : String(err))}`, { cause: err }));
      job.fail(this.#failure);
      for (const f of job.files) this.#handles.get(f.path)!.reject(this.#failure);
    } finally {
      await job.partial?.suspend();
      await lock?.release();
    }
  }

  async #download(job: BlobJob): Promise<void> {
    const { options, hubUrl, ref } = this.#init;
    if (job.dropped) return;
    const hasher = blobHasher(job.spec, job.spec.lfs ? options.hashPool : undefined);
    const { blob, from } = await PartialBlob.open(job.spec, job.paths, hasher, () => job.notify(), { durable: options.stream !== true });
    job.partial = blob;
    if (from.resumed > 0) {
      this.#advance(job, from.resumed, `${job.label} (resumed)`);
      this.#event({
        kind: "resumed", file: job.label, bytes: from.resumed, fromPython: from.adoptedPython,
        message: `${job.label}: resuming with ${from.resumed} of ${job.spec.size} bytes already here${from.adoptedPython ? " (huggingface_hub's .incomplete file)" : ""}`,
      });
    }
    job.notify();
    const url = `${hubUrl}/${ref.repo}/resolve/${this.commit}/${job.label.split("/").map(encodeURIComponent).join("/")}`;
    const task = new BlobTransfer(job.label, url, blob, job.priority);
    task.admitted = job.admitted;
    job.task = task;
    this.#transfer!.add(task);
    for (const range of job.hurry.splice(0)) this.#transfer!.hurry(task, ...range);
    await task.written;
    if (job.dropped) return;
    await blob.finish((expected, actual) =>
      `Failed to download ${ref.repo}: ${job.label} does not match its ${job.spec.lfs ? "sha256" : "git oid"} ` +
        `(expected ${expected}, got ${actual}); the corrupt download was deleted: run again`);
  }
}

/** A SnapshotDownload over a snapshot that is already complete (offline, or the Hub unreachable). */
export async function completedDownload(snapshot: Snapshot, cache: RepoCache): Promise<SnapshotDownload> {
  const handles = new Map<string, FileDownload>();
  for (const path of snapshot.files) {
    const snapshotPath = cache.snapshotPath(snapshot.commit, path);
    const blob = await realpath(snapshotPath).catch(() => snapshotPath);
    const size = await stat(blob).then((s) => s.size, (err: unknown) => { throw ioError("read", snapshotPath, err); });
    const within = (start: number, end: number) =>
      Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start <= end && end <= size
        ? Promise.resolve()
        : Promise.reject(new RangeError(`bytes [${start}, ${end}) are not inside ${path} (${size} bytes)`));
    handles.set(path, {
      path,
      size,
      snapshotPath,
      blobPath: blob,
      partialPath: blobPaths(blob).partial,
      waitForRange: within,
      waitForPrefix: (n) => within(0, n),
      open: () => open(blob, "r").catch((err: unknown) => { throw ioError("open", blob, err); }),
      complete: Promise.resolve(snapshotPath),
    });
  }
  return {
    repo: snapshot.repo,
    revision: snapshot.revision,
    commit: snapshot.commit,
    dir: snapshot.dir,
    files: snapshot.files,
    file: (path) => {
      const h = handles.get(path);
      if (h === undefined) throw new HubError(`Failed to download ${snapshot.repo}: ${path} is not one of the files of this download`);
      return h;
    },
    done: Promise.resolve(snapshot),
    cancel: async () => undefined,
  };
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
