import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ioError } from "../errors.js";
import type { StreamHasher } from "../io/atomic-file.js";

/**
 * SHA-256 on other cores. Verification hashes every byte three times in an
 * apply (delta, base, output): on the main thread that would serialize with
 * the arithmetic and the I/O, so hashing runs in worker threads. Chunks are
 * copied into a fixed ring of shared-memory slots that every worker of the
 * pool reads; `update` waits for a free slot. Memory is the ring's, whatever
 * the model's size, and no garbage piles up on either side.
 *
 * A slot is freed once every hash that reads it has: bytes that feed two
 * hashes (make-delta's target, hashed per tensor and per file) are copied
 * once, and with two workers or more the two hashes run at the same time.
 */

/**
 * Shared-memory slots per worker (4 at least), and their size: 4 MB each.
 * Two workers share 16 MB, what one worker's ring of 4 took: a second
 * worker's heap already costs about 10 MB of the 256 MB bound.
 */
const SLOTS_PER_WORKER = 2;
const SLOT_BYTES = 4 * 1024 * 1024;

// The worker is plain JavaScript evaluated from a string, so the same code
// runs from the built package and from the TypeScript sources under test.
const SLOT_BYTES_LITERAL = SLOT_BYTES;
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const { open } = require("node:fs/promises");
const hashes = new Map();
const buffers = [];
let ring;
parentPort.on("message", async (m) => {
  if (m.op === "ring") {
    ring = m.buffer;
  } else if (m.op === "update") {
    // One slot may feed several hashes on this worker (a pool of one worker).
    const bytes = new Uint8Array(ring, m.slot * ${SLOT_BYTES_LITERAL}, m.length);
    for (const { id, algorithm } of m.hashes) {
      let h = hashes.get(id);
      if (h === undefined) { h = createHash(algorithm); hashes.set(id, h); }
      h.update(bytes);
    }
    parentPort.postMessage({ op: "ack", slot: m.slot });
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
 * The slots every worker of a pool reads from. A slot holds one part of
 * one chunk and counts the workers still to read it; the copy into it is
 * the only one the bytes go through.
 */
class SlotRing {
  readonly buffer: SharedArrayBuffer;
  readonly #free: number[];
  readonly #readers: number[];
  #waiters: (() => void)[] = [];
  #failure: unknown;

  constructor(slots: number) {
    this.buffer = new SharedArrayBuffer(slots * SLOT_BYTES);
    this.#free = Array.from({ length: slots }, (_, i) => slots - 1 - i);
    this.#readers = new Array<number>(slots).fill(0);
  }

  /** A free slot holding a copy of `part` (at most SLOT_BYTES), to be read by `readers` workers. */
  async fill(part: Uint8Array, readers: number): Promise<number> {
    while (this.#free.length === 0 && this.#failure === undefined) await new Promise<void>((r) => this.#waiters.push(r));
    if (this.#failure !== undefined) throw this.#failure;
    const slot = this.#free.pop()!;
    new Uint8Array(this.buffer, slot * SLOT_BYTES, part.length).set(part);
    this.#readers[slot] = readers;
    return slot;
  }

  /** A worker has hashed the slot's bytes; the last one frees it. */
  read(slot: number): void {
    if (--this.#readers[slot]! > 0) return;
    this.#free.push(slot);
    this.#waiters.shift()?.();
  }

  /** A worker died: nobody waits for a slot again. */
  fail(err: unknown): void {
    this.#failure ??= err;
    for (const w of this.#waiters.splice(0)) w();
  }
}

class HashWorker {
  readonly worker: Worker;
  readonly #ring: SlotRing;
  #pending = new Map<number, Pending>();
  failure: unknown;
  /** Streams (hashers not yet digested, whole files) this worker has open. */
  open = 0;

  constructor(ring: SlotRing) {
    this.#ring = ring;
    // Its source is CommonJS: the parent's flags (`node --input-type=module -e ...`) would make it ESM.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    this.worker.unref();
    this.worker.postMessage({ op: "ring", buffer: ring.buffer });
    this.worker.on("message", (m: { op: string; id: number; slot: number; bytes: number; hex: string; md5?: string; size?: number; error?: { message: string; code?: string } }) => {
      if (m.op === "ack") {
        this.#ring.read(m.slot);
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
    this.worker.on("error", (err) => this.#fail(err));
    this.worker.on("exit", (code) => { if (code !== 0) this.#fail(new Error(`hash worker exited with code ${code}`)); });
  }

  #fail(err: unknown): void {
    this.failure ??= err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.#ring.fail(err);
  }

  /** Hash the slot's bytes into each of `hashes` (all on this worker), in order after everything sent before. */
  update(slot: number, length: number, hashes: readonly { id: number; algorithm: HashAlgorithm }[]): void {
    this.worker.postMessage({ op: "update", slot, length, hashes });
  }

  request(message: { op: string; id: number; path?: string; start?: number; end?: number; algorithm?: HashAlgorithm; md5?: boolean }, onBytes?: (bytes: number) => void): Promise<{ hex: string; size?: number; md5?: string }> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.#pending.set(message.id, { resolve, reject, onBytes });
      this.worker.postMessage(message);
    });
  }
}

/** Where a pool's hasher lives: its worker and its id there. */
interface PooledHash {
  worker: HashWorker;
  id: number;
  algorithm: HashAlgorithm;
  done: boolean;
}

/**
 * Workers by default: one per core but the main thread's. On two cores a
 * second worker measured no faster: make-delta's and apply-delta's threads
 * together need more CPU-seconds than two cores give in the time the one
 * worker's hashing takes, so the total is the bound, not the worker; and a
 * second worker's heap and buffers cost 10-20 MB of the 256 MB bound.
 */
function defaultThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

export class HashPool {
  readonly #workers: HashWorker[] = [];
  readonly #ring: SlotRing;
  readonly #hashes = new WeakMap<StreamHasher, PooledHash>();
  #nextId = 1;
  #nextWorker = 0;

  /** `threads` worker threads (default: one per core but the main thread's, at least one). */
  constructor(threads = defaultThreads()) {
    this.#ring = new SlotRing(Math.max(4, SLOTS_PER_WORKER * threads));
    for (let i = 0; i < threads; i++) this.#workers.push(new HashWorker(this.#ring));
  }

  /**
   * The worker with the fewest streams open, the next in turn among equals:
   * an apply's output file is hashed for as long as the file is written, so
   * each tensor's base sum then goes to another worker, and the two run side by side.
   */
  #pick(): HashWorker {
    let best: HashWorker | undefined;
    for (let i = 0; i < this.#workers.length; i++) {
      const w = this.#workers[(this.#nextWorker + i) % this.#workers.length]!;
      if (best === undefined || w.open < best.open) best = w;
    }
    this.#nextWorker++;
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
        return (await entry.worker.request({ op: "digest", id: entry.id, algorithm })).hex;
      },
    };
    this.#hashes.set(hasher, entry);
    return hasher;
  }

  /**
   * Feeds the same bytes to several hashers with one copy: each part is
   * copied into a slot once and every hasher's worker reads it from there,
   * in parallel when they are on different workers. Hashers from elsewhere
   * are fed their own copy.
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

  async #feed(bytes: Uint8Array, entries: readonly PooledHash[]): Promise<void> {
    if (entries.some((e) => e.done)) throw new Error("hash already finished");
    if (bytes.length === 0 || entries.length === 0) return;
    const byWorker = new Map<HashWorker, PooledHash[]>();
    for (const e of entries) byWorker.set(e.worker, [...(byWorker.get(e.worker) ?? []), e]);
    for (const w of byWorker.keys()) if (w.failure !== undefined) throw w.failure;
    for (let offset = 0; offset < bytes.length; offset += SLOT_BYTES) {
      const part = bytes.subarray(offset, offset + SLOT_BYTES);
      const slot = await this.#ring.fill(part, byWorker.size);
      for (const [worker, on] of byWorker) worker.update(slot, part.length, on.map(({ id, algorithm }) => ({ id, algorithm })));
    }
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
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }
}
