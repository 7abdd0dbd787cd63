/**
 * GGUF Q8_0 quantization on a worker thread, so that it overlaps the main
 * thread's reading, writing and hashing instead of adding to them: on the
 * main thread it was about a third of a Q8_0 output's CPU time, all of it on
 * the critical path.
 *
 * The worker runs the same WebAssembly module as src/kernels/fast.ts (the
 * same bytes, so the same output bit for bit) over pooled chunks, which are
 * shared memory (io/chunk-pool.ts): it reads the source where it is and
 * writes the blocks into the output chunk where it is, with no copy through
 * postMessage. The caller owns both chunks and lets go of neither until the
 * promise settles; bytes that are not shared memory are quantized on the
 * calling thread instead.
 */
import { Worker } from "node:worker_threads";
import { dtypeBytes } from "../dtypes.js";
import { ModelError } from "../errors.js";
import { KERNELS_WASM_BASE64 } from "../kernels/wasm/kernels-wasm.js";

export type Q8Source = "F16" | "BF16" | "F32";

// Plain JavaScript evaluated from a string, so the same code runs from the
// built package and from the TypeScript sources under test. Its tile loop
// is quantizeQ8_0Into's (src/kernels/fast.ts), and permuteRows is
// permuteRowsInto's order (src/gguf/quantize.ts): the chunking tests compare
// the two paths byte for byte.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const wasm = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(workerData.wasm, "base64"))).exports;
const heap = new Uint8Array(wasm.memory.buffer);
const TILE = wasm.tile_bytes(), A = wasm.a_ptr(), OUT = wasm.out_ptr();
const FROM = { F16: wasm.q8_0_from_f16, BF16: wasm.q8_0_from_bf16, F32: wasm.q8_0_from_f32 };
// The output may be two views (a direct-write reservation across a block's end): bytes at an offset of their concatenation.
function put(outs, bytes, at) {
  for (let i = 0, done = 0; i < outs.length && done < bytes.length; i++) {
    const part = outs[i];
    if (at >= part.length) {
      at -= part.length;
      continue;
    }
    const n = Math.min(part.length - at, bytes.length - done);
    part.set(bytes.subarray(done, done + n), at);
    done += n;
    at = 0;
  }
}
function quantize(fn, blockBytes, src, outs, outAt) {
  const tileBlocks = TILE / blockBytes;
  const blocks = src.length / blockBytes;
  for (let first = 0; first < blocks; first += tileBlocks) {
    const count = Math.min(tileBlocks, blocks - first);
    heap.set(src.subarray(first * blockBytes, (first + count) * blockBytes), A);
    fn(count, 0);
    put(outs, heap.subarray(OUT, OUT + count * 34), outAt + first * 34);
  }
}
parentPort.on("message", (m) => {
  if (m.crash) throw new Error("told to fail (tests)");
  const fn = FROM[m.from];
  const blockBytes = 32 * m.elementBytes;
  const src = new Uint8Array(m.src, m.srcOffset, m.srcLength);
  const outs = m.outs.map((o) => new Uint8Array(o.memory, o.offset, o.length));
  if (m.headRows === 0) quantize(fn, blockBytes, src, outs, 0);
  else {
    const rowBytes = m.rowBytes, outRowBytes = (rowBytes / blockBytes) * 34, half = m.headRows / 2;
    const heads = src.length / (m.headRows * rowBytes);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        for (let j = 0; j < 2; j++) {
          const from = (h * m.headRows + j * half + i) * rowBytes;
          const to = (h * m.headRows + 2 * i + j) * outRowBytes;
          quantize(fn, blockBytes, src.subarray(from, from + rowBytes), outs, to);
        }
      }
    }
  }
  parentPort.postMessage(m.id);
});
`;

interface Pending {
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * One worker, started on first use and kept (unreferenced while idle, so it
 * never holds the process open). A worker that fails rejects every piece it
 * had; the next piece starts a new one.
 */
class Q8Worker {
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  /** Pieces quantized here (tests check the path was taken). */
  readonly stats = { pieces: 0 };
  /** Tests set this: the next piece makes the worker throw. */
  crashNextForTests = false;

  /**
   * Q8_0 blocks of `src` into `out` (one view, or several taken as one run
   * of bytes: a direct-write reservation), on the worker; `permute` reorders
   * whole q_proj/k_proj heads as permuteHeadRows does, row by row. Undefined
   * when `src` or `out` is not shared memory: the caller quantizes it itself.
   */
  quantize(from: Q8Source, src: Uint8Array, out: Uint8Array | readonly Uint8Array[], permute?: { headRows: number; rowBytes: number }): Promise<void> | undefined {
    const outs = out instanceof Uint8Array ? [out] : out;
    if (!(src.buffer instanceof SharedArrayBuffer) || !outs.every((o) => o.buffer instanceof SharedArrayBuffer)) return undefined;
    const elementBytes = dtypeBytes(from);
    const blockBytes = 32 * elementBytes;
    const outBytes = outs.reduce((n, o) => n + o.byteLength, 0);
    if (src.byteLength % blockBytes !== 0 || outBytes !== (src.byteLength / blockBytes) * 34) {
      throw new RangeError(`Q8_0 worker: ${src.byteLength} bytes of ${from} are not whole blocks for ${outBytes} bytes of Q8_0`);
    }
    if (permute !== undefined && (permute.rowBytes % blockBytes !== 0 || permute.headRows % 2 !== 0 || src.byteLength % (permute.headRows * permute.rowBytes) !== 0)) {
      throw new RangeError(`Q8_0 worker: heads of ${permute.headRows} rows of ${permute.rowBytes} bytes do not fit ${src.byteLength} bytes of ${from}`);
    }
    const worker = this.#started();
    const id = this.#nextId++;
    const crash = this.crashNextForTests;
    this.crashNextForTests = false;
    const done = new Promise<void>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    if (this.#pending.size === 1) worker.ref();
    worker.postMessage({
      id, from, elementBytes, crash,
      src: src.buffer, srcOffset: src.byteOffset, srcLength: src.byteLength,
      outs: outs.map((o) => ({ memory: o.buffer, offset: o.byteOffset, length: o.byteLength })),
      headRows: permute?.headRows ?? 0, rowBytes: permute?.rowBytes ?? 0,
    });
    this.stats.pieces++;
    return done;
  }

  /**
   * Starts the worker now rather than at the first piece: booting a thread
   * and compiling the module takes tens of milliseconds, which a caller that
   * knows Q8_0 output is coming spends planning instead of waiting.
   */
  start(): void {
    this.#started();
  }

  #started(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { wasm: KERNELS_WASM_BASE64 } });
    worker.on("message", (id: number) => {
      const p = this.#pending.get(id);
      this.#pending.delete(id);
      if (this.#pending.size === 0) worker.unref();
      p?.resolve();
    });
    const fail = (cause: string) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      const err = new ModelError(`the Q8_0 quantization worker failed: ${cause}`);
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
      void worker.terminate();
    };
    worker.on("error", (err) => fail(err.message));
    worker.on("exit", (code) => fail(`it exited with code ${code}`));
    // After the listeners: attaching a "message" listener references the worker again.
    worker.unref();
    this.#worker = worker;
    return worker;
  }
}

/** The process's Q8_0 worker. */
export const q8Worker = new Q8Worker();
