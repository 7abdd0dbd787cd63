import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ioError } from "../errors.js";
import type { StreamHasher } from "../io/atomic-file.js";
import { chunkPool, holdForReading, type HeldChunk } from "../io/chunk-pool.js";

/**
 * SHA-256 on other cores. Verification hashes every byte three times in an
 * apply (delta, base, output): on the main thread that would serialize with
 * the arithmetic and the I/O, so hashing runs in worker threads.
 *
 * The bytes are not copied to the workers: a chunk of the chunk pool
 * (io/chunk-pool.ts) is shared memory, and a worker hashes it where it is.
 * The pool holds the chunk until the worker has read it: its holder may give
 * it back right after `update` (it returns to the free buffers when the hash
 * is done) but must not write it. Other bytes (headers, small tensors) are
 * copied into a pooled chunk first. `update` waits while the pool holds
 * MAX_HELD chunks per worker: memory stays bounded whatever the model's size,
 * and the main thread runs at most that far ahead of the hashing.
 *
 * Bytes that feed two hashes (make-delta's target, hashed per tensor and per
 * file) go in one message to each worker; with two workers or more the two
 * hashes run at the same time.
 */

/**
 * Chunks held for hashing at once: the backpressure that keeps the main
 * thread within a few chunks of the workers. make-delta's window holds three
 * (the target's, the base's and the delta's output chunk); each worker past
 * the first adds two. Held chunks are memory: at six a worker, make-delta
 * with two workers peaked at 226 MB, at six plus two at 200 MB, no slower.
 */
const MAX_HELD = 6;
const MAX_HELD_PER_EXTRA_WORKER = 2;

// The worker is plain JavaScript evaluated from a string, so the same code
// runs from the built package and from the TypeScript sources under test.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const { open } = require("node:fs/promises");
const hashes = new Map();
const buffers = [];
const sleeper = new Int32Array(new SharedArrayBuffer(4));
parentPort.on("message", async (m) => {
  if (m.op === "update") {
    // Shared memory posted with each message (a few microseconds): nothing to remember or forget here.
    if (m.delayMs > 0) Atomics.wait(sleeper, 0, 0, m.delayMs); // tests: a slow hash
    const bytes = new Uint8Array(m.memory, m.offset, m.length);
    for (const { id, algorithm } of m.hashes) {
      let h = hashes.get(id);
      if (h === undefined) { h = createHash(algorithm); hashes.set(id, h); }
      h.update(bytes);
    }
    parentPort.postMessage({ op: "read", ticket: m.ticket });
  } else if (m.op === "digest") {
    const h = hashes.get(m.id) ?? createHash(m.algorithm);
    hashes.delete(m.id);
    parentPort.postMessage({ op: "digest", id: m.id, hex: h.digest("hex") });
  } else if (m.op === "range") {
    // Bytes [start, end) of a file, read here: a download's bytes are hashed without passing through the main thread.
    let handle;
    const buffer = buffers.pop() ?? new Uint8Array(${2 * 1024 * 1024}); // one per range in flight: kept small
    try {
      let h = hashes.get(m.id);
      if (h === undefined) { h = createHash(m.algorithm); hashes.set(m.id, h); }
      handle = await open(m.path, "r");
      for (let at = m.start; at < m.end; ) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, m.end - at), at);
        if (bytesRead === 0) throw Object.assign(new Error("the file ends at byte " + at + ", before " + m.end), { code: "ESHORT" });
        h.update(buffer.subarray(0, bytesRead));
        at += bytesRead;
      }
      parentPort.postMessage({ op: "range", id: m.id });
    } catch (err) {
      parentPort.postMessage({ op: "range", id: m.id, error: { message: String(err && err.message), code: err && err.code } });
    } finally {
      buffers.push(buffer);
      await handle?.close();
    }
  } else if (m.op === "file") {
    let handle;
    try {
      handle = await open(m.path, "r");
      const h = createHash("sha256");
      const md5 = m.md5 ? createHash("md5") : undefined;
      const buffer = new Uint8Array(${8 * 1024 * 1024});
      let size = 0;
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, size);
        if (bytesRead === 0) break;
        h.update(buffer.subarray(0, bytesRead));
        md5?.update(buffer.subarray(0, bytesRead));
        size += bytesRead;
        parentPort.postMessage({ op: "progress", id: m.id, bytes: bytesRead });
      }
      parentPort.postMessage({ op: "file", id: m.id, hex: h.digest("hex"), md5: md5?.digest("hex"), size });
    } catch (err) {
      parentPort.postMessage({ op: "file", id: m.id, error: { message: String(err && err.message), code: err && err.code } });
    } finally {
      await handle?.close();
    }
  }
});
`;

/** The digests the workers compute: SHA-256 for our checks, MD5 for lists publishers printed in it. */
export type HashAlgorithm = "sha256" | "md5";

interface Pending {
  resolve(value: { hex: string; size?: number; md5?: string }): void;
  reject(err: unknown): void;
  onBytes?: (bytes: number) => void;
}

/**
 * Counts the chunks a pool holds for its workers: `acquire` waits while all
 * of them are held, until a worker has read one.
 */
class HeldCount {
  #held = 0;
  #waiters: (() => void)[] = [];
  #failure: unknown;

  constructor(readonly max: number) {}

  async acquire(): Promise<void> {
    while (this.#held >= this.max && this.#failure === undefined) await new Promise<void>((r) => this.#waiters.push(r));
    if (this.#failure !== undefined) throw this.#failure;
    this.#held++;
  }

  release(): void {
    this.#held--;
    this.#waiters.shift()?.();
  }

  /** A worker died: nobody waits for a chunk to be read again. */
  fail(err: unknown): void {
    this.#failure ??= err;
    for (const w of this.#waiters.splice(0)) w();
  }
}

class HashWorker {
  readonly worker: Worker;
  #pending = new Map<number, Pending>();
  /** Updates posted to this worker and not read yet, by ticket. */
  readonly #reading = new Set<number>();
  readonly #onRead: (worker: HashWorker, ticket: number) => void;
  failure: unknown;
  /** Streams (hashers not yet digested, whole files) this worker has open. */
  open = 0;

  constructor(onRead: (worker: HashWorker, ticket: number) => void, onFail: (err: unknown) => void) {
    this.#onRead = onRead;
    // Its source is CommonJS: the parent's flags (`node --input-type=module -e ...`) would make it ESM.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    this.worker.unref();
    this.worker.on("message", (m: { op: string; id: number; ticket: number; bytes: number; hex: string; md5?: string; size?: number; error?: { message: string; code?: string } }) => {
      if (m.op === "read") {
        if (this.#reading.delete(m.ticket)) this.#onRead(this, m.ticket);
        return;
      }
      if (m.op === "progress") {
        this.#pending.get(m.id)?.onBytes?.(m.bytes);
        return;
      }
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if (m.error !== undefined) p?.reject(Object.assign(new Error(m.error.message), { code: m.error.code }));
      else p?.resolve({ hex: m.hex, size: m.size, md5: m.md5 });
    });
    const fail = (err: unknown) => {
      this.failure ??= err;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
      this.stopped();
      onFail(err);
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => { if (code !== 0) fail(new Error(`hash worker exited with code ${code}`)); });
  }

  /**
   * Hash the held bytes into each of `hashes` (all on this worker), in order
   * after everything sent before. Only (memory, offset, length) is posted:
   * the worker reads the chunk where it is.
   */
  update(ticket: number, held: HeldChunk, hashes: readonly { id: number; algorithm: HashAlgorithm }[], delayMs: number): void {
    this.#reading.add(ticket);
    if (this.failure !== undefined) {
      this.stopped();
      return;
    }
    this.worker.postMessage({ op: "update", ticket, memory: held.memory, offset: held.offset, length: held.length, hashes, delayMs });
  }

  /** The thread is gone (failed or terminated): what it had still to read, nobody will. */
  stopped(): void {
    for (const ticket of [...this.#reading]) {
      this.#reading.delete(ticket);
      this.#onRead(this, ticket);
    }
  }

  request(message: { op: string; id: number; path?: string; start?: number; end?: number; algorithm?: HashAlgorithm; md5?: boolean }, onBytes?: (bytes: number) => void): Promise<{ hex: string; size?: number; md5?: string }> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.#pending.set(message.id, { resolve, reject, onBytes });
      this.worker.postMessage(message);
    });
  }
}

/** An update in flight: the chunk it holds, and the hashers of each worker still to read it. */
interface Ticket {
  held: HeldChunk;
  /** A pooled copy of bytes from elsewhere, given back once read. */
  staged?: Uint8Array;
  waiting: Map<HashWorker, readonly PooledHash[]>;
}

/** Where a pool's hasher lives: its worker and its id there. */
interface PooledHash {
  worker: HashWorker;
  id: number;
  algorithm: HashAlgorithm;
  done: boolean;
  /** Its bytes changed while a worker read them (seen only when the chunk pool checks, in tests). */
  failure?: Error;
}

/**
 * Workers by default: one per core, at most two. On two cores the hashing
 * is most of the CPU work (make-delta: SHA-256 of four times the model, about
 * 60 % of its CPU time), more than one worker can do in the time the main
 * thread needs for the rest; with the main thread's page-cache copies gone
 * (io/direct-writes.ts) two workers beside it keep both cores busy: 7 GB
 * make-delta 25.0 -> 17.3 s, apply-delta 13.2 -> 11.5 s. Each worker past
 * the second would cost about 14 MB more (make-delta at 1.33 GB: 168, 187,
 * 201, 210 MB with one to four) where apply-delta at 7 GB already peaks at
 * 228-244 MB of the 256 MB bound: more cores may ask for more (--threads).
 */
function defaultThreads(): number {
  return Math.max(1, Math.min(2, availableParallelism()));
}

export class HashPool {
  /** Tests set this: every worker sleeps this long before each update it hashes (a busy worker), so a chunk written before its hash read it spoils the digest. */
  static slowUpdatesMs = 0;
  readonly #workers: HashWorker[] = [];
  readonly #threads: number;
  readonly #hashes = new WeakMap<StreamHasher, PooledHash>();
  readonly #held: HeldCount;
  readonly #tickets = new Map<number, Ticket>();
  /** Updates post in the order they were called, each after the one before has its chunk. */
  #turn: Promise<void> = Promise.resolve();
  #nextId = 1;
  #nextTicket = 1;
  #nextWorker = 0;

  /** `threads` worker threads (default: one per core, at most two). */
  constructor(threads = defaultThreads()) {
    this.#held = new HeldCount(MAX_HELD + MAX_HELD_PER_EXTRA_WORKER * Math.max(0, threads - 1));
    this.#threads = Math.max(1, threads);
  }

  #start(): HashWorker {
    const worker = new HashWorker((w, ticket) => this.#read(w, ticket), (err) => this.#held.fail(err));
    this.#workers.push(worker);
    return worker;
  }

  /**
   * The worker with the fewest streams open, the next in turn among equals,
   * or a new one (up to `threads`) rather than one with a stream open: an
   * apply's output file is hashed for as long as the file is written, so
   * each tensor's base sum then goes to another worker, and the two run side
   * by side. A run with one stream at a time (a convert) starts one worker.
   */
  #pick(): HashWorker {
    let best: HashWorker | undefined;
    for (let i = 0; i < this.#workers.length; i++) {
      const w = this.#workers[(this.#nextWorker + i) % this.#workers.length]!;
      if (best === undefined || w.open < best.open) best = w;
    }
    this.#nextWorker++;
    if ((best === undefined || best.open > 0) && this.#workers.length < this.#threads) return this.#start();
    return best!;
  }

  /** A hasher (SHA-256 unless told) whose work runs on one of the pool's workers. */
  create(algorithm: HashAlgorithm = "sha256"): StreamHasher {
    const entry: PooledHash = { worker: this.#pick(), id: this.#nextId++, algorithm, done: false };
    entry.worker.open++;
    const hasher: StreamHasher = {
      update: (bytes) => this.#feed(bytes, [entry]),
      updateFromFile: async (path, start, end) => {
        if (entry.done) throw new Error("hash already finished");
        if (end > start) await entry.worker.request({ op: "range", id: entry.id, path, start, end, algorithm });
      },
      digest: async () => {
        if (!entry.done) entry.worker.open--;
        entry.done = true;
        const { hex } = await entry.worker.request({ op: "digest", id: entry.id, algorithm });
        if (entry.failure !== undefined) throw entry.failure;
        return hex;
      },
    };
    this.#hashes.set(hasher, entry);
    return hasher;
  }

  /**
   * Feeds the same bytes to several hashers at once: one message per worker
   * whose hashers read them, in parallel when they are on different workers.
   * Hashers from elsewhere are fed the bytes their own way.
   */
  async updateAll(bytes: Uint8Array, hashers: readonly StreamHasher[]): Promise<void> {
    const ours: PooledHash[] = [];
    const others: StreamHasher[] = [];
    for (const h of hashers) {
      const entry = this.#hashes.get(h);
      if (entry === undefined) others.push(h);
      else ours.push(entry);
    }
    await Promise.all([this.#feed(bytes, ours), ...others.map((h) => h.update(bytes))]);
  }

  /**
   * A pooled chunk is held from this call on (so its holder may give it back
   * at once) and read where it is; other bytes are copied into pooled chunks.
   * Resolves once the workers have their messages, not when they have read them.
   */
  async #feed(bytes: Uint8Array, entries: readonly PooledHash[]): Promise<void> {
    const finished = entries.find((e) => e.done || e.failure !== undefined);
    if (finished !== undefined) throw finished.failure ?? new Error("hash already finished");
    if (bytes.length === 0 || entries.length === 0) return;
    const byWorker = new Map<HashWorker, PooledHash[]>();
    for (const e of entries) byWorker.set(e.worker, [...(byWorker.get(e.worker) ?? []), e]);
    for (const w of byWorker.keys()) if (w.failure !== undefined) throw w.failure;
    let held = holdForReading(bytes);
    const previous = this.#turn;
    let ourTurnIsOver!: () => void;
    this.#turn = new Promise<void>((resolve) => (ourTurnIsOver = resolve));
    try {
      await previous;
      if (held !== undefined) {
        await this.#held.acquire();
        this.#post(held, undefined, byWorker);
        held = undefined;
        return;
      }
      for (let offset = 0; offset < bytes.length; offset += chunkPool.chunkBytes) {
        const part = bytes.subarray(offset, offset + chunkPool.chunkBytes);
        await this.#held.acquire();
        const staged = chunkPool.takeShared(part.length);
        staged.set(part);
        this.#post(holdForReading(staged)!, staged, byWorker);
      }
    } finally {
      held?.release(); // not posted (a worker failed): nobody reads it
      ourTurnIsOver();
    }
  }

  #post(held: HeldChunk, staged: Uint8Array | undefined, byWorker: Map<HashWorker, PooledHash[]>): void {
    const ticket = this.#nextTicket++;
    this.#tickets.set(ticket, { held, ...(staged === undefined ? {} : { staged }), waiting: new Map(byWorker) });
    for (const [worker, on] of byWorker) worker.update(ticket, held, on.map(({ id, algorithm }) => ({ id, algorithm })), HashPool.slowUpdatesMs);
  }

  /** `worker` has read the ticket's chunk (or is gone); the last reader lets the chunk go. */
  #read(worker: HashWorker, ticketId: number): void {
    const ticket = this.#tickets.get(ticketId);
    if (ticket === undefined) return;
    const hashers = ticket.waiting.get(worker) ?? [];
    ticket.waiting.delete(worker);
    if (!ticket.held.intact()) {
      for (const h of hashers) h.failure ??= new Error(`a chunk of ${ticket.held.length} bytes was written while a hash was reading it (a pooled chunk is read-only once hashed)`);
    }
    if (ticket.waiting.size > 0) return;
    this.#tickets.delete(ticketId);
    ticket.held.release();
    chunkPool.giveBack(ticket.staged);
    this.#held.release();
  }

  /** sha256 (and with `md5`, md5 too, in the same pass) of a whole file, read and hashed on a worker; `onBytes` reports progress. */
  async hashFile(path: string, onBytes?: (bytes: number) => void, options: { md5?: boolean } = {}): Promise<{ sha256: string; size: number; md5?: string }> {
    const id = this.#nextId++;
    const worker = this.#pick();
    worker.open++;
    try {
      const result = await worker.request({ op: "file", id, path, md5: options.md5 === true }, onBytes);
      return { sha256: result.hex, size: result.size ?? 0, ...(result.md5 === undefined ? {} : { md5: result.md5 }) };
    } catch (err) {
      throw ioError("read", path, err);
    } finally {
      worker.open--;
    }
  }

  async close(): Promise<void> {
    this.#held.fail(new Error("the hash pool is closed"));
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
    for (const w of this.#workers) w.stopped();
  }
}
