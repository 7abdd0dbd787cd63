import { setMaxListeners } from "node:events";
import { DeltaWeightsError, HubError } from "../../errors.js";
import { MAX_DOWNLOAD_REDIRECTS } from "../../limits.js";
import { ConnectionBudget } from "./connection-budget.js";
import type { PartialBlob } from "./partial-blob.js";
import type { RangeClient, RangeResponse } from "./range-client.js";
import {
  ReadTimeoutError, TransientError, backoffMs, formatSeconds, isTransientStatus, networkFailure, parseRetryAfter, retryAfterTooLong,
  type RetryPolicy,
} from "./retry.js";

/**
 * Moves bytes from the Hub into partial blobs over a fixed number of HTTP
 * connections shared by every file: each connection takes the next byte
 * range (of the first file that has one left, so files complete in order
 * and each one's verified prefix grows), fetches it with a Range request and
 * writes it at its offset. Ranges shrink as the end nears (a share of what
 * is left per connection), so no connection sits idle while one finishes a
 * long range. A failed range goes back to the queue, from the first byte not
 * yet written, after a backoff; a Retry-After pauses every connection.
 */

/** Bytes gathered from the socket before one positioned write (writev, no copy)... */
const WRITE_BYTES = 1024 * 1024;
/** ...or fewer, once the first of them has waited this long: readers of a slow download see bytes soon. */
const WRITE_DELAY_MS = 50;
/** The shortest range requested near the end of the download. */
const TAIL_RANGE_BYTES = 1024 * 1024;
/**
 * Every file's first and last bytes are fetched before the bulk of any:
 * readers open all headers (safetensors) and zip directories (PyTorch, at
 * the end) before they read a tensor, so an apply can plan at once instead
 * of waiting for every file before the last to arrive.
 */
const EDGE_BYTES = 1024 * 1024;
/**
 * Ranges start this small and grow with their offset up to `rangeBytes`:
 * a reader's first bytes come sooner, and connections turn over quickly at
 * the start, when another download sharing them still needs its headers.
 */
const RAMP_BYTES = 4 * 1024 * 1024;

export interface TransferSettings {
  /** Simultaneous HTTP requests, over all files. */
  connections: number;
  /** Shared with other downloads running at once (else this transfer's own `connections`). */
  budget?: ConnectionBudget;
  /** The longest byte range one request asks for. */
  rangeBytes: number;
  /** Abort a request when no byte arrives for this long (HF_HUB_DOWNLOAD_TIMEOUT). */
  readTimeoutMs: number;
  retry: RetryPolicy;
  /** The data path (closed when the transfer stops). */
  client: RangeClient;
  hubUrl: string;
  accessToken?: string;
  ctx: TransferContext;
  onBytes(label: string, bytes: number): void;
  onRetry(info: { file: string; attempt: number; attempts: number; delayMs: number; reason: string }): void;
}

/**
 * What the host's protocol tells the transport: the name its failures
 * carry ("Failed to download <repo>: ...") and how a refusal (an HTTP status
 * that is not worth trying again) reads in the host's words.
 */
export interface TransferContext {
  repo: string;
  refused(status: number, header: (name: string) => string | null, file: string): Error;
}

interface Gap {
  start: number;
  end: number;
  /** Failed tries of this range that brought no byte. */
  failures: number;
  notBefore: number;
  /** A reader waits for these few bytes of a file not admitted (see `hurry`). */
  urgent?: boolean;
}

interface Piece {
  task: BlobTransfer;
  start: number;
  end: number;
  failures: number;
  urgent?: boolean;
}

/** One blob to fetch: where from, where to, and what is left. */
export class BlobTransfer {
  readonly gaps: Gap[];
  inflight = 0;
  /**
   * Whether the bulk of the file may be fetched (its edges always may): a
   * streamed download admits a file when a reader asks for its bytes or it
   * is next in the readers' order (see SnapshotRun).
   */
  admitted = true;
  /** Nothing more of it is wanted (see Transfer.drop): a range in flight that fails is not asked again. */
  dropped = false;
  /** Where the Hub redirected us (its CDN): later ranges go straight there. */
  downloadUrl: string | undefined;
  readonly written: Promise<void>;
  #resolve!: () => void;
  #reject!: (err: unknown) => void;
  settled = false;

  constructor(readonly label: string, readonly resolveUrl: string, readonly partial: PartialBlob, readonly priority: number) {
    this.gaps = partial.missing().map(([start, end]) => ({ start, end, failures: 0, notBefore: 0 }));
    this.written = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.written.catch(() => undefined); // observed by the caller; never an unhandled rejection
  }

  get size(): number {
    return this.partial.spec.size;
  }

  settle(err?: unknown): void {
    if (this.settled) return;
    this.settled = true;
    if (err === undefined) this.#resolve();
    else this.#reject(err);
  }
}

export class Transfer {
  readonly #settings: TransferSettings;
  readonly #tasks: BlobTransfer[] = [];
  readonly #controllers = new Set<AbortController>();
  readonly #budget: ConnectionBudget;
  /** Aborted by stop(): wakes workers waiting for a connection. */
  readonly #stopping = new AbortController();
  readonly #workers: Promise<void>[];
  #wakers: (() => void)[] = [];
  #stopped = false;
  #failure: unknown;
  #pauseUntil = 0;

  constructor(settings: TransferSettings) {
    this.#settings = settings;
    this.#budget = settings.budget ?? new ConnectionBudget(settings.connections);
    setMaxListeners(settings.connections + 1, this.#stopping.signal); // each worker may wait on it for a connection
    this.#workers = Array.from({ length: settings.connections }, () => this.#worker());
  }

  /** The first failure that stopped the transfer, if any. */
  get failure(): unknown {
    return this.#failure;
  }

  add(task: BlobTransfer): void {
    if (this.#stopped) {
      task.settle(this.#failure ?? new HubError("the download was stopped"));
      return;
    }
    if (task.gaps.length === 0) {
      task.settle();
      return;
    }
    const at = this.#tasks.findIndex((t) => t.priority > task.priority);
    this.#tasks.splice(at === -1 ? this.#tasks.length : at, 0, task);
    this.#wake();
  }

  /** Lets the bulk of `task` be fetched: before every other file's when `first` (a reader waits for it), else after those admitted before it. */
  admit(task: BlobTransfer, first: boolean): void {
    if (task.admitted && !first) return;
    task.admitted = true;
    const at = this.#tasks.indexOf(task);
    if (at === -1) return;
    this.#tasks.splice(at, 1);
    const after = first ? -1 : this.#tasks.findLastIndex((t) => t.admitted);
    this.#tasks.splice(after + 1, 0, task);
    this.#wake();
  }

  /**
   * Fetches bytes [start, end) of `task` before any bulk, admitted or not: a
   * reader planning from a file waits for a few of its bytes (a zip entry's
   * local header), not for the file.
   */
  hurry(task: BlobTransfer, start: number, end: number): void {
    for (let i = 0; i < task.gaps.length; i++) {
      const gap = task.gaps[i]!;
      if (gap.end <= start || gap.start >= end || gap.urgent === true) continue;
      const from = Math.max(gap.start, start);
      const to = Math.min(gap.end, end);
      const parts = [{ ...gap, end: from }, { ...gap, start: from, end: to, urgent: true }, { ...gap, start: to }].filter((g) => g.end > g.start);
      task.gaps.splice(i, 1, ...parts);
      i += parts.length - 1;
    }
    this.#wake();
  }

  /** Fetches nothing more of `task` (no reader needs it); settles it once its ranges in flight are written. */
  drop(task: BlobTransfer): void {
    task.dropped = true;
    task.gaps.splice(0);
    if (task.inflight === 0) task.settle();
  }

  /** Stops every connection (`failure`: why, or undefined when all is done) and waits for them. */
  async stop(failure?: unknown): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#failure = failure;
      for (const c of this.#controllers) c.abort(new HubError("stopped"));
      this.#stopping.abort();
      this.#wake();
    }
    await Promise.all(this.#workers);
    this.#settings.client.close();
    for (const task of this.#tasks) task.settle(this.#failure ?? new HubError("the download was stopped"));
  }

  #wake(): void {
    for (const w of this.#wakers.splice(0)) w();
  }

  async #worker(): Promise<void> {
    for (;;) {
      // Work first, then a connection, then the range: a range is picked when it can be
      // fetched at once, so a download sharing the budget gets its headers without
      // waiting for ranges another reserved, and a worker with nothing to do holds no
      // place in the budget's queue.
      const due = this.#due();
      if (due === undefined) return;
      if (due > Date.now()) {
        await this.#idle(due);
        continue;
      }
      if (!(await this.#budget.acquire(this.#stopping.signal))) return;
      const next = this.#stopped ? undefined : this.#take();
      if (typeof next === "object") {
        try {
          await this.#fetch(next);
        } finally {
          this.#budget.release();
        }
        continue;
      }
      this.#budget.release();
      if (next === undefined) return;
      await this.#idle(next);
    }
  }

  /** When a range will be due (now or earlier: one is; Infinity: none queued); undefined once stopped. */
  #due(): number | undefined {
    if (this.#stopped) return undefined;
    if (Date.now() < this.#pauseUntil) return this.#pauseUntil;
    let due = Infinity;
    const edge = this.#edgeBytes();
    for (const task of this.#tasks) {
      if (task.settled) continue;
      for (const gap of task.admitted ? task.gaps : [...edgeGaps(task, edge), ...task.gaps.filter((g) => g.urgent === true)]) due = Math.min(due, gap.notBefore);
    }
    return due;
  }

  /** The next range due now, else when one will be (Infinity: none queued); undefined once stopped. */
  #take(): Piece | number | undefined {
    if (this.#stopped) return undefined;
    const now = Date.now();
    if (now < this.#pauseUntil) return this.#pauseUntil;
    for (const task of this.#tasks) {
      const urgent = task.settled ? -1 : task.gaps.findIndex((g) => g.urgent === true && g.notBefore <= now);
      if (urgent === -1) continue;
      const [gap] = task.gaps.splice(urgent, 1);
      task.inflight++;
      return { task, start: gap!.start, end: gap!.end, failures: gap!.failures, urgent: true };
    }
    for (const task of this.#tasks) {
      const edge = task.settled ? undefined : takeEdge(task, now, this.#edgeBytes());
      if (edge !== undefined) return edge;
    }
    let due = Infinity;
    for (const task of this.#tasks) {
      if (task.settled || !task.admitted) continue;
      for (let i = 0; i < task.gaps.length; i++) {
        const gap = task.gaps[i]!;
        if (gap.notBefore > now) {
          due = Math.min(due, gap.notBefore);
          continue;
        }
        const size = Math.min(this.#rangeBytes(), Math.max(RAMP_BYTES, gap.start / 2));
        let end = Math.min(gap.end, gap.start + size);
        if (gap.end - end < size / 4) end = gap.end; // no sliver left behind for a request of its own
        const piece: Piece = { task, start: gap.start, end, failures: gap.failures };
        gap.start = end;
        if (gap.start >= gap.end) task.gaps.splice(i, 1);
        task.inflight++;
        return piece;
      }
    }
    return due;
  }

  /** Waits until `due` (a time), or until woken: a range was added, requeued or finished, or the transfer stopped. */
  async #idle(due: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = due === Infinity ? undefined : setTimeout(resolve, Math.max(1, due - Date.now()));
      this.#wakers.push(() => {
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      });
    });
  }

  #edgeBytes(): number {
    return Math.min(EDGE_BYTES, this.#settings.rangeBytes);
  }

  /** A share of what is left per connection, between the tail size and `rangeBytes`. */
  #rangeBytes(): number {
    let left = 0;
    for (const task of this.#tasks) for (const gap of task.gaps) left += gap.end - gap.start;
    const share = Math.ceil(left / (2 * this.#settings.connections));
    return Math.max(Math.min(TAIL_RANGE_BYTES, this.#settings.rangeBytes), Math.min(this.#settings.rangeBytes, share));
  }

  async #fetch(piece: Piece): Promise<void> {
    const { task } = piece;
    const { readTimeoutMs } = this.#settings;
    const controller = new AbortController();
    this.#controllers.add(controller);
    // One timer per request, not one per chunk: it looks at when the last byte came.
    let lastData = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const watch = () => {
      const idle = Date.now() - lastData;
      if (idle >= readTimeoutMs) controller.abort(new ReadTimeoutError(readTimeoutMs));
      else timer = setTimeout(watch, readTimeoutMs - idle);
    };
    let position = piece.start;
    let end = piece.end;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let pendingSince = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const chunks = pending;
      const n = pendingBytes;
      pending = [];
      pendingBytes = 0;
      await task.partial.write(chunks, position);
      position += n;
      this.#settings.onBytes(task.label, n);
    };
    let res: RangeResponse | undefined;
    try {
      timer = setTimeout(watch, readTimeoutMs);
      res = await this.#request(task, piece, controller.signal);
      let skip = 0;
      if (res.status === 206) end = this.#checkContentRange(task, piece, res.header("content-range"));
      else {
        const length = res.header("content-length");
        if (length !== null && Number(length) !== task.size) throw this.#sizeMismatch(task, Number(length));
        skip = piece.start; // a 200 is the whole file, whatever range we asked for
      }
      let received = 0;
      for (;;) {
        const value = await res.read();
        if (value === undefined) break;
        lastData = Date.now();
        let chunk = value;
        received += chunk.byteLength;
        if (res.status === 200 && received > task.size) throw this.#sizeMismatch(task, received);
        if (skip > 0) {
          const drop = Math.min(skip, chunk.byteLength);
          skip -= drop;
          chunk = chunk.subarray(drop);
        }
        const room = end - position - pendingBytes;
        if (chunk.byteLength > room) {
          if (res.status === 206) throw new HubError(`Failed to download ${this.#settings.ctx.repo}: the Hub sent more bytes of ${task.label} than the range asked for`);
          chunk = chunk.subarray(0, room);
        }
        if (chunk.byteLength > 0) {
          if (pendingBytes === 0) pendingSince = Date.now();
          pending.push(chunk);
          pendingBytes += chunk.byteLength;
        }
        if (res.status === 200 && end < task.size && position + pendingBytes >= end) {
          // Everything this range needs is here; the rest of a 200 is other ranges' bytes.
          // (A 206 is read to its end instead, so its connection can be reused.)
          res.cancel();
          break;
        }
        if (pendingBytes >= WRITE_BYTES || (pendingBytes > 0 && Date.now() - pendingSince >= WRITE_DELAY_MS)) await flush();
      }
      await flush();
      if (position < end) throw new TransientError("the connection closed early");
      if (end < piece.end) this.#requeue(task, { start: end, end: piece.end, failures: 0, notBefore: 0, ...(piece.urgent === true ? { urgent: true } : {}) });
    } catch (caught) {
      clearTimeout(timer);
      res?.cancel();
      let err = caught;
      try {
        await flush(); // bytes that arrived before the failure are as good as any
      } catch (writeErr) {
        err = writeErr;
      }
      this.#failed(piece, position, controller.signal.aborted ? controller.signal.reason : undefined, err);
    } finally {
      clearTimeout(timer);
      this.#controllers.delete(controller);
      task.inflight--;
      if (!this.#stopped && task.gaps.length === 0 && task.inflight === 0) task.settle();
      this.#wake();
    }
  }

  async #request(task: BlobTransfer, piece: Piece, signal: AbortSignal): Promise<RangeResponse> {
    const { ctx, hubUrl, accessToken } = this.#settings;
    let url = task.downloadUrl ?? task.resolveUrl;
    for (let hop = 0; hop <= MAX_DOWNLOAD_REDIRECTS; hop++) {
      const headers: Record<string, string> = { "Accept-Encoding": "identity" };
      if (piece.start > 0 || piece.end < task.size) {
        headers.Range = piece.end === task.size ? `bytes=${piece.start}-` : `bytes=${piece.start}-${piece.end - 1}`;
      }
      // The token goes to the Hub only, never to the CDN it redirects to.
      if (accessToken !== undefined && sameOrigin(url, hubUrl)) headers.Authorization = `Bearer ${accessToken}`;
      const res = await this.#settings.client.get(url, headers, signal);
      const location = res.header("location");
      if (res.status >= 300 && res.status < 400 && location !== null) {
        await res.discard();
        url = new URL(location, url).href;
        continue;
      }
      if (res.status === 200 || res.status === 206) {
        if (url !== task.resolveUrl) task.downloadUrl = url;
        return res;
      }
      await res.discard();
      if (url === task.downloadUrl && !sameOrigin(url, hubUrl) && [401, 403, 404, 410].includes(res.status)) {
        // A presigned CDN link expires: ask the Hub for a fresh one.
        task.downloadUrl = undefined;
        throw new TransientError(`the download link expired (${res.status})`);
      }
      if (isTransientStatus(res.status)) {
        const reason = res.status === 429 ? "rate limited by the Hub (429)" : `the Hub failed (${res.status})`;
        throw new TransientError(reason, parseRetryAfter(res.header("retry-after")));
      }
      throw ctx.refused(res.status, (name) => res.header(name), task.label);
    }
    throw new HubError(`Failed to download ${ctx.repo}: ${task.label}: more than ${MAX_DOWNLOAD_REDIRECTS} redirects`);
  }

  /** The end (exclusive) of the bytes a 206 carries; refuses an answer for other bytes. */
  #checkContentRange(task: BlobTransfer, piece: Piece, header: string | null): number {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? "");
    if (m !== null && m[3] !== "*" && Number(m[3]) !== task.size) throw this.#sizeMismatch(task, Number(m[3]));
    const first = Number(m?.[1]);
    const last = Number(m?.[2]);
    if (m === null || first !== piece.start || last < first || last >= piece.end) {
      throw new HubError(
        `Failed to download ${this.#settings.ctx.repo}: the Hub answered a request for bytes ${piece.start}-${piece.end - 1} of ${task.label} ` +
          `with ${header === null ? "no Content-Range" : `Content-Range "${header.slice(0, 80)}"`}`,
      );
    }
    return last + 1; // a server may send less than asked: the rest is asked again
  }

  #sizeMismatch(task: BlobTransfer, actual: number): HubError {
    return new HubError(`Failed to download ${this.#settings.ctx.repo}: ${task.label} is ${actual > task.size ? "larger" : "smaller"} than the ${task.size} bytes the Hub listed`);
  }

  #requeue(task: BlobTransfer, gap: Gap): void {
    if (gap.end <= gap.start || task.dropped) return;
    const at = task.gaps.findIndex((g) => g.start > gap.start);
    task.gaps.splice(at === -1 ? task.gaps.length : at, 0, gap);
  }

  #failed(piece: Piece, position: number, abortReason: unknown, err: unknown): void {
    if (this.#stopped) return; // the bytes written are recorded; nothing else to do
    const { task } = piece;
    if (task.dropped) return; // nobody needs its bytes any more
    const { retry, ctx } = this.#settings;
    let transient: TransientError | undefined;
    if (abortReason instanceof ReadTimeoutError) transient = abortReason;
    else if (err instanceof TransientError) transient = err;
    else if (!(err instanceof DeltaWeightsError)) {
      const why = networkFailure(err);
      if (why !== undefined) transient = new TransientError(why, undefined, { cause: err });
    }
    if (transient === undefined) {
      void this.stop(err instanceof DeltaWeightsError ? err : new HubError(`Failed to download ${ctx.repo}: ${task.label}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      return;
    }
    const failures = position > piece.start ? 1 : piece.failures + 1;
    const kept = task.partial.done.size();
    const gaveUp = (why: string) =>
      new HubError(`Failed to download ${ctx.repo}: ${task.label} was interrupted (${why}) with ${kept} of ${task.size} bytes kept: run again to resume`, { cause: transient });
    if (retryAfterTooLong(transient.retryAfterMs)) {
      void this.stop(gaveUp(`${transient.reason}, asked to wait ${formatSeconds(transient.retryAfterMs!)}`));
      return;
    }
    if (failures >= retry.attempts) {
      void this.stop(gaveUp(`${transient.reason}; ${failures} tries`));
      return;
    }
    const delayMs = transient.retryAfterMs ?? backoffMs(retry, failures);
    const notBefore = Date.now() + delayMs;
    if (transient.retryAfterMs !== undefined) this.#pauseUntil = Math.max(this.#pauseUntil, notBefore);
    this.#requeue(task, { start: position, end: piece.end, failures, notBefore, ...(piece.urgent === true ? { urgent: true } : {}) });
    this.#settings.onRetry({ file: task.label, attempt: failures + 1, attempts: retry.attempts, delayMs, reason: transient.reason });
  }
}

/** Whether bytes [start, end) of a file of `size` bytes lie in its edges (fetched whether or not the file is admitted). */
export function withinEdges(size: number, start: number, end: number, rangeBytes: number): boolean {
  const edge = Math.min(EDGE_BYTES, rangeBytes);
  return size > 4 * edge && (end <= edge || start >= size - edge);
}

/** The gaps that still hold a large file's first or last `edge` bytes. */
function edgeGaps(task: BlobTransfer, edge: number): Gap[] {
  if (task.size <= 4 * edge) return [];
  const gaps: Gap[] = [];
  const first = task.gaps[0];
  const last = task.gaps[task.gaps.length - 1];
  if (first !== undefined && first.start === 0) gaps.push(first);
  if (last !== undefined && last !== first && last.end === task.size && last.end - last.start > edge) gaps.push(last);
  return gaps;
}

/** The first or last `edge` bytes of a large file, if still to fetch and due. */
function takeEdge(task: BlobTransfer, now: number, edge: number): Piece | undefined {
  if (task.size <= 4 * edge) return undefined;
  const first = task.gaps[0];
  if (first !== undefined && first.start === 0 && first.notBefore <= now) {
    const end = Math.min(first.end, edge);
    first.start = end;
    if (first.start >= first.end) task.gaps.shift();
    task.inflight++;
    return { task, start: 0, end, failures: first.failures };
  }
  const last = task.gaps[task.gaps.length - 1];
  if (last !== undefined && last.end === task.size && last.end - last.start > edge && last.notBefore <= now) {
    const start = task.size - edge;
    last.end = start;
    task.inflight++;
    return { task, start, end: task.size, failures: last.failures };
  }
  return undefined;
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}
