/**
 * One commit to a Hub model repo, built up file by file: each file is
 * uploaded as soon as it is added (several at once), and `commit` sends the
 * single commit that references them all. This is huggingface_hub's
 * `preupload_lfs_files` + `create_commit`; `@huggingface/hub`'s commitIter
 * cannot do it (it wants every file before it hashes any, and hashes every
 * file again), so the Hub's commit protocol is spoken here, the way that
 * library speaks it:
 *
 *   POST /api/models/{repo}/preupload/{rev}   is this file LFS or inline?
 *   POST /{repo}.git/info/lfs/objects/batch   where to upload an LFS object (none: stored already)
 *   PUT  href | PUT part URLs + POST href     basic or multipart transfer, from disk
 *   POST /api/models/{repo}/commit/{rev}      NDJSON: header, inline files, LFS pointers
 *
 * An LFS object the Hub already holds is not sent again: a push rerun after a
 * failure uploads only what is missing. Objects uploaded by a session that
 * never commits stay unreferenced on the Hub (as in Python), which is harmless.
 */
import { createHash } from "node:crypto";
import { setMaxListeners } from "node:events";
import { createReadStream, openAsBlob } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { HubError, ioError } from "../../errors.js";
import type { CommitResult, RepoUpload, UploadOptions } from "../backend.js";
import { UPLOAD_FILES_AT_ONCE, UPLOAD_HASH_ON_WORKERS_BYTES, UPLOAD_INLINE_MAX_BYTES, UPLOAD_PARTS_AT_ONCE } from "../../limits.js";
import { noticeEvent, type OnProgress } from "../../progress.js";
import { ConnectionBudget } from "../transport/connection-budget.js";
import { DEFAULT_HUB_URL } from "./download.js";
import { HubFetch, TOKEN_HOWTO, hubFailure, type FailureContext } from "./hub-errors.js";
import { validateRepoId } from "./repo-id.js";
import { DEFAULT_RETRY, backoffMs, formatSeconds, isTransientStatus, networkFailure, parseRetryAfter, retryAfterTooLong, sleep } from "../transport/retry.js";

export type UploadSessionOptions = UploadOptions;
export type { CommitResult } from "../backend.js";

/** A file's bytes: a path on disk (streamed) or bytes in memory (a generated model card). */
type UploadSource = string | Uint8Array;

interface Entry {
  path: string;
  source: UploadSource;
  size: number;
  sha256?: string;
  /** Set once the Hub said LFS and the object is stored. */
  lfs?: { oid: string };
  /** Settles when the file is uploaded or has failed (failures go to the session, never reject here). */
  done: Promise<void>;
  /** Bytes reported to progress so far. */
  advanced: number;
}

interface LfsAction {
  href: string;
  header?: Record<string, string>;
}

interface LfsBatchAnswer {
  objects?: { oid: string; size: number; error?: { code: number; message: string }; actions?: { upload?: LfsAction } }[];
}

const LFS_JSON = "application/vnd.git-lfs+json";

/** A failed answer to one of our own requests, shaped as hubFailure reads `@huggingface/hub`'s errors. */
class HttpFailure extends Error {
  constructor(readonly statusCode: number, readonly url: string, message: string, readonly retryAfterMs?: number, readonly fromStorage = false) {
    super(message);
  }
}

/** Requests to the LFS storage the Hub's answer pointed at (presigned links), not to the Hub itself. */
const STORAGE = { storage: true };

/**
 * A Blob over the same bytes (no copy: a file-backed Blob stays on disk)
 * that counts them as fetch streams them: upload progress as bytes leave.
 */
class CountedBlob extends Blob {
  readonly #inner: Blob;
  readonly #onBytes: (bytes: number) => void;

  constructor(inner: Blob, onBytes: (bytes: number) => void) {
    super([inner]);
    this.#inner = inner;
    this.#onBytes = onBytes;
  }

  override stream(): ReadableStream<Uint8Array<ArrayBuffer>> {
    const onBytes = this.#onBytes;
    return this.#inner.stream().pipeThrough(new TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>>({
      transform(chunk, controller) {
        onBytes(chunk.length);
        controller.enqueue(chunk);
      },
    }));
  }
}

export class UploadSession implements RepoUpload {
  readonly repo: string;
  readonly #hubUrl: string;
  readonly #token: string;
  readonly #branch: string;
  readonly #fetcher: HubFetch;
  readonly #ctx: FailureContext;
  readonly #options: UploadSessionOptions;
  readonly #files = new Map<string, Entry>();
  readonly #fileSlots = new ConnectionBudget(UPLOAD_FILES_AT_ONCE);
  readonly #abort = new AbortController();
  #failure: Error | undefined;
  #closed = false;

  private constructor(repo: string, hubUrl: string, token: string, fetcher: HubFetch, ctx: FailureContext, options: UploadSessionOptions) {
    this.repo = repo;
    this.#hubUrl = hubUrl;
    this.#token = token;
    this.#branch = options.revision ?? "main";
    this.#fetcher = fetcher;
    this.#ctx = ctx;
    this.#options = options;
    // Each queued file and each request in flight listens to it: a fan-out, not a leak.
    setMaxListeners(0, this.#abort.signal);
  }

  /**
   * Checks the repo id and token, creates the repo if needed (and the
   * branch): before any work is done, so that a bad token or repo id fails
   * in seconds, not after hours of making a delta.
   */
  static async begin(repo: string, options: UploadSessionOptions): Promise<UploadSession> {
    const token = checkPushRequest(repo, options.accessToken);
    const hubUrl = (options.hubUrl ?? DEFAULT_HUB_URL).replace(/\/+$/, "");
    const fetcher = new HubFetch(options.fetch);
    const ctx: FailureContext = { action: "push", repo, revision: options.revision, hubUrl, hasToken: true };
    const common = { hubUrl, accessToken: token, fetch: fetcher.fetch };
    try {
      const hub = await import("@huggingface/hub");
      try {
        await hub.createRepo({ repo: { type: "model", name: repo }, ...(options.private === true ? { private: true } : {}), ...common });
      } catch (err) {
        const status = (err as { statusCode?: unknown }).statusCode;
        // 409: it exists. 403: a token scoped to one repo may write to it but not create repos (huggingface_hub checks the same way).
        const exists = status === 409 || (status === 403 && (await hub.modelInfo({ name: repo, ...common }).then(() => true, () => false)));
        if (!exists) throw err;
      }
      const branch = options.revision ?? "main";
      if (branch !== "main") await tolerateConflict(hub.createBranch({ repo: { type: "model", name: repo }, branch, ...common }));
    } catch (err) {
      throw hubFailure(err, ctx, fetcher);
    }
    const session = new UploadSession(repo, hubUrl, token, fetcher, ctx, options);
    // One upload bar, open until the commit; files added later grow its total.
    options.onProgress?.({ kind: "start", phase: "upload", totalBytes: options.totalBytes ?? 0, label: repo });
    return session;
  }

  /** Aborted, with the failure as its reason, once an upload has failed: long work feeding this session can stop early. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  has(path: string): boolean {
    return this.#files.has(path);
  }

  /**
   * Queues `path` (its repo path) for upload from `source`, starting at once
   * if fewer than UPLOAD_FILES_AT_ONCE files are in flight. Throws the
   * failure of an earlier upload, if one failed.
   */
  add(path: string, source: UploadSource, known: { size: number; sha256?: string }): void {
    this.#throwIfFailed();
    if (this.#closed) throw new HubError(`Failed to push to ${this.repo}: ${path} was added after the commit`);
    if (this.#files.has(path)) throw new HubError(`Failed to push to ${this.repo}: ${path} was added twice`);
    if (this.#options.totalBytes === undefined) {
      // A start while the session's own start is open adds to the same bar's total.
      this.#progress({ kind: "start", phase: "upload", totalBytes: known.size, label: path });
      this.#progress({ kind: "end", phase: "upload" });
    }
    const entry: Entry = { path, source, size: known.size, sha256: known.sha256, done: Promise.resolve(), advanced: 0 };
    this.#files.set(path, entry);
    entry.done = this.#upload(entry);
  }

  /**
   * Waits for every upload, then makes ONE commit of every file added. On a
   * failed upload, throws its one-line error and commits nothing.
   */
  async commit(title: string, description?: string): Promise<CommitResult> {
    this.#closed = true;
    try {
      await Promise.all([...this.#files.values()].map((e) => e.done));
      this.#throwIfFailed();
      const entries = [...this.#files.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
      const lines: unknown[] = [{ key: "header", value: { summary: title, ...(description !== undefined ? { description } : {}) } }];
      for (const e of entries) {
        if (e.lfs !== undefined) {
          lines.push({ key: "lfsFile", value: { path: e.path, algo: "sha256", size: e.size, oid: e.lfs.oid } });
        } else {
          const content = typeof e.source === "string" ? await readFile(e.source).catch((err) => { throw ioError("read", e.source as string, err); }) : e.source;
          lines.push({ key: "file", value: { content: Buffer.from(content.buffer, content.byteOffset, content.byteLength).toString("base64"), path: e.path, encoding: "base64" } });
        }
      }
      const res = await this.#request(`${this.#hubUrl}/api/models/${this.repo}/commit/${encodeURIComponent(this.#branch)}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.#token}`, "Content-Type": "application/x-ndjson" },
        body: lines.map((l) => JSON.stringify(l)).join("\n"),
      });
      const answer = (await res.json()) as { commitOid?: string; commitUrl?: string };
      // Inline files went inside the commit request itself: done when it is.
      for (const e of entries) if (e.lfs === undefined) this.#advance(e.path, e.size);
      const hub = await import("@huggingface/hub");
      const info = await hub.modelInfo({ name: this.repo, hubUrl: this.#hubUrl, accessToken: this.#token, fetch: this.#fetcher.fetch }).catch(() => undefined);
      return { commitUrl: answer.commitUrl, commitId: answer.commitOid, files: entries.map((e) => e.path), public: info?.private !== true };
    } catch (err) {
      throw hubFailure(err, this.#ctx, this.#fetcher);
    } finally {
      this.#progress({ kind: "end", phase: "upload" });
    }
  }

  /** Stops every upload in flight and commits nothing (the work feeding the session failed). */
  async cancel(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#failure ??= new HubError(`Failed to push to ${this.repo}: cancelled`);
    this.#abort.abort(this.#failure);
    await Promise.all([...this.#files.values()].map((e) => e.done));
    this.#progress({ kind: "end", phase: "upload" });
  }

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** The first failure wins; the uploads it aborts fail too, but say nothing new. */
  #fail(err: unknown, file: string): void {
    if (this.#failure !== undefined) return;
    this.#failure = this.#describe(err, file);
    this.#abort.abort(this.#failure);
  }

  /** One line for a failed upload, naming the file. */
  #describe(err: unknown, file: string): Error {
    const rerun = "run again: objects the Hub already holds are not sent twice";
    // The storage's presigned link is not the token: a 403 there means the link was refused or expired.
    if (err instanceof HttpFailure && err.fromStorage && [401, 403, 404].includes(err.statusCode)) {
      return new HubError(`Failed to push ${this.repo}: the LFS storage refused ${file} (${err.statusCode}; its upload link may have expired): ${rerun}`, { cause: err });
    }
    const network = err instanceof HttpFailure || this.#abort.signal.aborted ? undefined : networkFailure(err);
    if (network !== undefined) return new HubError(`Failed to push ${this.repo}: ${file}: ${network}, every try: ${rerun}`, { cause: err });
    return hubFailure(err, { ...this.#ctx, file }, this.#fetcher);
  }

  #progress(event: Parameters<OnProgress>[0]): void {
    this.#options.onProgress?.(event);
  }

  /** Progress, never past a file's size: a retried upload sends some bytes twice. */
  #advance(path: string, bytes: number): void {
    const entry = this.#files.get(path);
    const room = entry === undefined ? bytes : entry.size - entry.advanced;
    const counted = Math.min(bytes, room);
    if (entry !== undefined) entry.advanced += counted;
    if (counted > 0) this.#progress({ kind: "advance", phase: "upload", bytes: counted, label: path });
  }

  async #upload(entry: Entry): Promise<void> {
    if (!(await this.#fileSlots.acquire(this.#abort.signal))) return;
    try {
      if ((await this.#uploadMode(entry)) === "lfs") await this.#uploadLfs(entry);
      else if (entry.size > UPLOAD_INLINE_MAX_BYTES) {
        throw new HubError(`Failed to push to ${this.repo}: the Hub wants ${entry.path} (${entry.size} bytes) inside the commit, more than the ${UPLOAD_INLINE_MAX_BYTES} bytes sent that way`);
      }
    } catch (err) {
      this.#fail(err, entry.path);
    } finally {
      this.#fileSlots.release();
    }
  }

  /** The Hub decides from the path, size and first 512 bytes whether a file goes through LFS. */
  async #uploadMode(entry: Entry): Promise<"lfs" | "regular"> {
    const sample = await readSample(entry.source);
    const res = await this.#retried(`the upload check of ${entry.path}`, () => this.#request(`${this.#hubUrl}/api/models/${this.repo}/preupload/${encodeURIComponent(this.#branch)}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.#token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ files: [{ path: entry.path, size: entry.size, sample: Buffer.from(sample).toString("base64") }] }),
    }));
    const answer = (await res.json()) as { files?: { path?: string; uploadMode?: string }[] };
    return answer.files?.find((f) => f.path === entry.path)?.uploadMode === "lfs" ? "lfs" : "regular";
  }

  async #uploadLfs(entry: Entry): Promise<void> {
    const oid = entry.sha256 ?? (await this.#sha256(entry));
    const res = await this.#retried(`the LFS request for ${entry.path}`, () => this.#request(`${this.#hubUrl}/${this.repo}.git/info/lfs/objects/batch`, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.#token}`, Accept: LFS_JSON, "Content-Type": LFS_JSON },
      body: JSON.stringify({ operation: "upload", transfers: ["basic", "multipart"], hash_algo: "sha_256", ref: { name: this.#branch }, objects: [{ oid, size: entry.size }] }),
    }));
    const requestId = res.headers.get("X-Request-Id") ?? undefined;
    const object = ((await res.json()) as LfsBatchAnswer).objects?.find((o) => o.oid === oid);
    if (object === undefined) throw new HubError(`Failed to push to ${this.repo}: the Hub's LFS answer for ${entry.path} does not name its object`);
    if (object.error !== undefined) throw new HttpFailure(object.error.code, res.url, `LFS upload of ${entry.path}: ${object.error.message}`);
    const action = object.actions?.upload;
    if (action === undefined) {
      this.#advance(entry.path, entry.size); // the Hub holds this object already
    } else if (action.header?.chunk_size !== undefined) {
      await this.#multipart(entry, oid, action);
    } else {
      await this.#retried(entry.path, async () => this.#request(action.href, { method: "PUT", headers: requestId !== undefined ? { "X-Request-Id": requestId } : {}, body: await this.#body(entry, 0, entry.size) }, entry.path, STORAGE));
    }
    entry.lfs = { oid };
  }

  /** The parts the Hub named, a few at once, each streamed from disk; then the completion with their ETags. */
  async #multipart(entry: Entry, oid: string, action: LfsAction): Promise<void> {
    const header = action.header ?? {};
    const chunkSize = Number(header.chunk_size);
    const parts = Object.keys(header).filter((k) => /^[0-9]+$/.test(k)).sort((a, b) => Number(a) - Number(b));
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 1 || parts.length !== Math.ceil(entry.size / chunkSize)) {
      throw new HubError(`Failed to push to ${this.repo}: the Hub asked for ${parts.length} parts of ${header.chunk_size} bytes for ${entry.path} (${entry.size} bytes)`);
    }
    const etags: string[] = [];
    let next = 0;
    const sendParts = async () => {
      while (next < parts.length) {
        const i = next++;
        const what = `part ${parts[i]} of ${entry.path}`;
        const res = await this.#retried(what, async () => this.#request(header[parts[i]!]!, { method: "PUT", body: await this.#body(entry, i * chunkSize, Math.min(entry.size, (i + 1) * chunkSize)) }, what, STORAGE));
        const etag = res.headers.get("ETag");
        if (etag === null) throw new HubError(`Failed to push to ${this.repo}: the LFS storage gave no ETag for part ${parts[i]} of ${entry.path}`);
        etags[i] = etag;
      }
    };
    await Promise.all(Array.from({ length: Math.min(UPLOAD_PARTS_AT_ONCE, parts.length) }, sendParts));
    await this.#request(action.href, {
      method: "POST",
      headers: { Accept: LFS_JSON, "Content-Type": LFS_JSON },
      body: JSON.stringify({ oid, parts: parts.map((p, i) => ({ partNumber: Number(p), etag: etags[i] })) }),
    }, `completion of ${entry.path}`, STORAGE);
  }

  /** Bytes [start, end) of the file, streamed from disk as fetch sends them, counted for progress. */
  async #body(entry: Entry, start: number, end: number): Promise<Blob> {
    const whole = typeof entry.source === "string"
      ? await openAsBlob(entry.source).catch((err) => { throw ioError("read", entry.source as string, err); })
      : new Blob([entry.source]);
    return new CountedBlob(whole.slice(start, end), (bytes) => this.#advance(entry.path, bytes));
  }

  async #sha256(entry: Entry): Promise<string> {
    const source = entry.source;
    if (typeof source !== "string") return createHash("sha256").update(source).digest("hex");
    const pool = this.#options.hashPool;
    if (pool !== undefined && entry.size >= UPLOAD_HASH_ON_WORKERS_BYTES) {
      const { sha256, size } = await pool.hashFile(source);
      if (size !== entry.size) throw new HubError(`Failed to push to ${this.repo}: ${source} changed while it was being uploaded (${size} bytes, not ${entry.size})`);
      return sha256;
    }
    const hash = createHash("sha256");
    try {
      for await (const chunk of createReadStream(source, { signal: this.#abort.signal })) hash.update(chunk as Buffer);
    } catch (err) {
      if (this.#abort.signal.aborted) throw err;
      throw ioError("read", source, err);
    }
    return hash.digest("hex");
  }

  /**
   * `send` again after a transient failure (a reset, a timeout, 5xx, 429 with
   * its Retry-After), with backoff, as downloads are; a body is streamed from
   * disk afresh each time. Requests that change the repo (the commit, a
   * multipart completion) are not retried: a second one may not mean the same.
   */
  async #retried(what: string, send: () => Promise<Response>): Promise<Response> {
    const policy = { ...DEFAULT_RETRY, ...this.#options.retry };
    for (let failures = 1; ; failures++) {
      try {
        return await send();
      } catch (err) {
        if (this.#abort.signal.aborted) throw err;
        const status = err instanceof HttpFailure ? err.statusCode : undefined;
        const transient = status !== undefined ? isTransientStatus(status) : networkFailure(err) !== undefined;
        const retryAfterMs = err instanceof HttpFailure ? err.retryAfterMs : undefined;
        if (!transient || failures >= policy.attempts || retryAfterTooLong(retryAfterMs)) throw err;
        const delayMs = retryAfterMs ?? backoffMs(policy, failures);
        const reason = status !== undefined ? `the Hub failed (${status})` : networkFailure(err)!;
        const notice = `${what}: ${reason}; trying again in ${formatSeconds(Math.round(delayMs / 100) * 100)} (try ${failures + 1} of ${policy.attempts})`;
        this.#options.onNotice?.(notice);
        this.#options.onProgress?.(noticeEvent("upload", notice, "retry"));
        await sleep(delayMs, this.#abort.signal);
      }
    }
  }

  /** fetch through the session's abort signal; an answer that is not 2xx throws (its body read, so the connection is free). */
  async #request(url: string, init: RequestInit, what?: string, to: { storage?: boolean } = {}): Promise<Response> {
    const res = await this.#fetcher.fetch(url, { ...init, signal: this.#abort.signal });
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      throw new HttpFailure(res.status, res.url, `${what ?? "request"} failed with ${res.status}: ${text.slice(0, 200)}`, parseRetryAfter(res.headers.get("retry-after")), to.storage === true);
    }
    return res;
  }
}

/** The repo id and token, checked without a request; returns the token. */
export function checkPushRequest(repo: string, accessToken: string | undefined): string {
  validateRepoId(repo, { requireNamespace: true });
  if (accessToken === undefined || accessToken === "") {
    throw new HubError(`Failed to push to ${repo}: no Hugging Face token: pass --token, set HF_TOKEN, or save one in $HF_HOME/token`);
  }
  if (!accessToken.startsWith("hf_")) {
    throw new HubError(`Failed to push to ${repo}: the token does not look like a Hugging Face token (they start with "hf_"): check ${TOKEN_HOWTO}`);
  }
  return accessToken;
}

/** The first 512 bytes, which the Hub looks at (with the path) to decide LFS or not. */
async function readSample(source: UploadSource): Promise<Uint8Array> {
  if (typeof source !== "string") return source.subarray(0, 512);
  try {
    const handle = await open(source, "r");
    try {
      const buffer = new Uint8Array(512);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      return buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw ioError("read", source, err);
  }
}

/** "Already exists" (409) is success for repo and branch creation. */
async function tolerateConflict(request: Promise<unknown>): Promise<void> {
  try {
    await request;
  } catch (err) {
    if ((err as { statusCode?: unknown }).statusCode !== 409) throw err;
  }
}
