import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ioError } from "../errors.js";
import type { StreamHasher } from "../io/atomic-file.js";

/**
 * SHA-256 on other cores. Verification hashes every byte three times in an
 * apply (delta, base, output): on the main thread that would serialize with
 * the arithmetic and the I/O, so hashing runs in worker threads. Chunks are
 * copied into a fixed ring of shared-memory slots per worker; `update` waits
 * for a free slot. Memory is the ring's, whatever the model's size, and no
 * garbage piles up on either side.
 */


/** Shared-memory slots per worker, and their size: 4 x 4 MB queued at most. */
const SLOTS = 4;
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
    let h = hashes.get(m.id);
    if (h === undefined) { h = createHash(m.algorithm); hashes.set(m.id, h); }
    h.update(new Uint8Array(ring, m.slot * ${SLOT_BYTES_LITERAL}, m.length));
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

class HashWorker {
  readonly worker: Worker;
  readonly #ring = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
  readonly #free: number[] = Array.from({ length: SLOTS }, (_, i) => i);
  #waiters: (() => void)[] = [];
  #pending = new Map<number, Pending>();
  #failure: unknown;

  constructor() {
    // Its source is CommonJS: the parent's flags (`node --input-type=module -e ...`) would make it ESM.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    this.worker.unref();
    this.worker.postMessage({ op: "ring", buffer: this.#ring });
    this.worker.on("message", (m: { op: string; id: number; slot: number; bytes: number; hex: string; md5?: string; size?: number; error?: { message: string; code?: string } }) => {
      if (m.op === "ack") {
        this.#free.push(m.slot);
        this.#waiters.shift()?.();
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
    this.#failure = err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const w of this.#waiters.splice(0)) w();
  }

  async send(id: number, algorithm: HashAlgorithm, bytes: Uint8Array): Promise<void> {
    for (let offset = 0; offset < bytes.length; offset += SLOT_BYTES) {
      if (this.#failure !== undefined) throw this.#failure;
      while (this.#free.length === 0) await new Promise<void>((r) => this.#waiters.push(r));
      const slot = this.#free.pop()!;
      const part = bytes.subarray(offset, offset + SLOT_BYTES);
      new Uint8Array(this.#ring, slot * SLOT_BYTES, part.length).set(part);
      this.worker.postMessage({ op: "update", id, algorithm, slot, length: part.length });
    }
  }

  request(message: { op: string; id: number; path?: string; start?: number; end?: number; algorithm?: HashAlgorithm; md5?: boolean }, onBytes?: (bytes: number) => void): Promise<{ hex: string; size?: number; md5?: string }> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#pending.set(message.id, { resolve, reject, onBytes });
      this.worker.postMessage(message);
    });
  }
}

export class HashPool {
  readonly #workers: HashWorker[] = [];
  #nextId = 1;
  #nextWorker = 0;

  /** `threads` worker threads (default: one per core but the main thread's, at least one). */
  constructor(threads = Math.max(1, availableParallelism() - 1)) {
    for (let i = 0; i < threads; i++) this.#workers.push(new HashWorker());
  }

  #pick(): HashWorker {
    const w = this.#workers[this.#nextWorker % this.#workers.length]!;
    this.#nextWorker++;
    return w;
  }

  /** A hasher (SHA-256 unless told) whose work runs on one of the pool's workers. */
  create(algorithm: HashAlgorithm = "sha256"): StreamHasher {
    const worker = this.#pick();
    const id = this.#nextId++;
    let done = false;
    return {
      update: (bytes) => {
        if (done) throw new Error("hash already finished");
        return bytes.length === 0 ? Promise.resolve() : worker.send(id, algorithm, bytes);
      },
      updateFromFile: async (path, start, end) => {
        if (done) throw new Error("hash already finished");
        if (end > start) await worker.request({ op: "range", id, path, start, end, algorithm });
      },
      digest: async () => {
        done = true;
        return (await worker.request({ op: "digest", id, algorithm })).hex;
      },
    };
  }

  /** sha256 (and with `md5`, md5 too, in the same pass) of a whole file, read and hashed on a worker; `onBytes` reports progress. */
  async hashFile(path: string, onBytes?: (bytes: number) => void, options: { md5?: boolean } = {}): Promise<{ sha256: string; size: number; md5?: string }> {
    const id = this.#nextId++;
    try {
      const result = await this.#pick().request({ op: "file", id, path, md5: options.md5 === true }, onBytes);
      return { sha256: result.hex, size: result.size ?? 0, ...(result.md5 === undefined ? {} : { md5: result.md5 }) };
    } catch (err) {
      throw ioError("read", path, err);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }
}
