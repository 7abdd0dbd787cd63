import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

/**
 * A file's bytes written past the page cache (O_DIRECT), in aligned blocks
 * copied from the caller's bytes.
 *
 * Why: written through the page cache, every output byte is copied into a
 * freshly allocated page-cache page by the writing process. On a virtual
 * machine whose host takes back guest pages left free (the one this was
 * measured on) that copy cost 0.3-2.2 CPU-seconds a GB, varying from run to
 * run with how cold the pages were, and a 7 GB output evicts the inputs it is
 * about to read. Written directly, the device reads our blocks: 6 GB took
 * 0.25-0.49 CPU-seconds instead of 1.9-13.3. The output is not read back by
 * anyone in the same run, so nothing misses the cache.
 *
 * O_DIRECT wants the memory address, the file offset and the length aligned
 * to the device's block: the blocks live in WebAssembly memory (its pages are
 * page-aligned), every block but the last is written whole at an offset that
 * is a multiple of the block size, and the unaligned tail is left for the
 * caller to write through the page cache. Where O_DIRECT is not supported (a
 * platform without it, a file system that refuses it at open or at a write)
 * or no block is free, the writer falls back to the caller's own writes,
 * silently: the bytes are the same either way.
 */

/** Bytes per block: large enough that one write keeps the device busy, small enough that two per file cost little memory. */
const BLOCK_BYTES = 4 * 1024 * 1024;
/** Blocks a file has at the device while it fills the next: one keeps the device busy, a second would cost 4 MB more a file. */
const IN_FLIGHT = 1;
/** Blocks in all, shared by every file open at once (more files than they serve are written through the page cache). */
const MAX_BLOCKS = 8;
/** Offsets and lengths are multiples of this (the largest logical block size of common devices). */
const ALIGNMENT = 4096;

/**
 * Tests switch direct writes off, or make every direct write refused as a
 * file system without O_DIRECT refuses it, and read how many writes went each way.
 */
export const directWrites = { enabled: true, refuseForTests: false, stats: { direct: 0, fallback: 0 } };

// The WebAssembly global is in Node but not in the ES library typings we build against (as in kernels/fast.ts).
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

/**
 * The process's blocks: one WebAssembly memory, allocated at first use and
 * never freed, whose pages become resident only as blocks are used.
 */
class BlockPool {
  #memory: { buffer: ArrayBuffer } | undefined;
  #free: Uint8Array[] = [];
  #made = 0;

  take(): Uint8Array | undefined {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    if (this.#made === MAX_BLOCKS) return undefined;
    this.#memory ??= new Memory({ initial: (MAX_BLOCKS * BLOCK_BYTES) / 65536, maximum: (MAX_BLOCKS * BLOCK_BYTES) / 65536 });
    return new Uint8Array(this.#memory.buffer, BLOCK_BYTES * this.#made++, BLOCK_BYTES);
  }

  give(block: Uint8Array): void {
    this.#free.push(block);
  }
}

const blocks = new BlockPool();

/** Writes bytes at a position through the page cache (the caller's handle): where direct writes cannot go. */
export type BufferedWrite = (bytes: Uint8Array, position: number) => Promise<void>;

interface Submitted {
  block: Uint8Array;
  done: Promise<void>;
}

export class DirectWriter {
  readonly #handle: FileHandle;
  readonly #buffered: BufferedWrite;
  /** The block being filled, and how many bytes it holds. */
  #block: Uint8Array | undefined;
  #filled = 0;
  /** File offset of the block being filled: where the bytes handed over but not yet submitted start. */
  #offset = 0;
  readonly #submitted: Submitted[] = [];
  /** Set once a direct write was refused: every later block goes through the page cache. */
  #fallback = false;
  #failure: unknown;

  private constructor(handle: FileHandle, buffered: BufferedWrite) {
    this.#handle = handle;
    this.#buffered = buffered;
  }

  /**
   * A second handle on the empty file at `path` that writes past the page
   * cache, or undefined where that is not available (then the caller writes
   * as usual). `buffered` writes what the direct handle cannot.
   */
  static async open(path: string, buffered: BufferedWrite): Promise<DirectWriter | undefined> {
    const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
    if (!directWrites.enabled || flag === undefined) return undefined;
    try {
      return new DirectWriter(await open(path, constants.O_WRONLY | flag), buffered);
    } catch {
      return undefined; // a file system without O_DIRECT: the page cache it is
    }
  }

  /** Takes a copy of `bytes` as the file's next bytes; waits while the device is behind. */
  async write(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length; ) {
      this.#throwIfFailed();
      if (this.#block === undefined) {
        this.#block = await this.#nextBlock();
        if (this.#block === undefined) {
          // No block to be had: this file continues through the page cache, from an aligned offset.
          await this.#buffered(bytes.subarray(done), this.#offset);
          this.#offset += bytes.length - done;
          this.#fallback = true;
          return;
        }
      }
      const n = Math.min(bytes.length - done, BLOCK_BYTES - this.#filled);
      this.#block.set(bytes.subarray(done, done + n), this.#filled);
      this.#filled += n;
      done += n;
      if (this.#filled === BLOCK_BYTES) this.#submit();
    }
  }

  /**
   * Waits for every block, closes the direct handle and returns the bytes
   * not yet written (fewer than one alignment unit, or a whole last block if
   * writes fell back) with their offset: the caller writes them, then syncs.
   */
  async finish(): Promise<{ tail: Uint8Array; offset: number }> {
    try {
      let tail = new Uint8Array(0);
      const block = this.#block;
      if (block !== undefined) {
        // The aligned part of the last block goes direct like the others (unless writes fell back).
        const aligned = this.#fallback ? 0 : this.#filled - (this.#filled % ALIGNMENT);
        tail = block.slice(aligned, this.#filled);
        if (aligned > 0) {
          this.#block = undefined;
          this.#submitBytes(block, aligned);
        }
      }
      await this.#settleAll();
      return { tail, offset: this.#offset };
    } finally {
      this.#release();
      await this.#handle.close();
    }
  }

  /** Waits for the blocks at the device, closes, gives every block back. Never throws. */
  async abort(): Promise<void> {
    await Promise.allSettled(this.#submitted.map((s) => s.done));
    this.#release();
    await this.#handle.close().catch(() => undefined);
  }

  async #nextBlock(): Promise<Uint8Array | undefined> {
    if (this.#submitted.length >= IN_FLIGHT) return this.#reuseOldest();
    return blocks.take() ?? (this.#submitted.length > 0 ? this.#reuseOldest() : undefined);
  }

  async #reuseOldest(): Promise<Uint8Array> {
    const oldest = this.#submitted.shift()!;
    await oldest.done;
    return oldest.block;
  }

  #submit(): void {
    const block = this.#block!;
    this.#block = undefined;
    this.#submitBytes(block, BLOCK_BYTES);
  }

  /** Starts writing the first `length` bytes of `block` at the current offset, which moves past them. */
  #submitBytes(block: Uint8Array, length: number): void {
    const offset = this.#offset;
    this.#offset += length;
    this.#filled = 0;
    const done = this.#writeBlock(block.subarray(0, length), offset);
    done.catch((err: unknown) => { this.#failure ??= err; });
    this.#submitted.push({ block, done: done.catch(() => undefined) });
  }

  async #writeBlock(bytes: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    if (!this.#fallback) {
      try {
        if (directWrites.refuseForTests) throw Object.assign(new Error("refused (tests)"), { code: "EINVAL" });
        while (done < bytes.length) {
          const { bytesWritten } = await this.#handle.write(bytes, done, bytes.length - done, offset + done);
          done += bytesWritten;
          directWrites.stats.direct++;
        }
        return;
      } catch (err) {
        // Refused alignment (a device with larger blocks, a file system that takes O_DIRECT at open only): the page cache from here on.
        if ((err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
        this.#fallback = true;
      }
    }
    directWrites.stats.fallback++;
    await this.#buffered(bytes.subarray(done), offset + done);
  }

  async #settleAll(): Promise<void> {
    await Promise.all(this.#submitted.map((s) => s.done));
    this.#throwIfFailed();
  }

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  #release(): void {
    for (const s of this.#submitted.splice(0)) blocks.give(s.block);
    if (this.#block !== undefined) blocks.give(this.#block);
    this.#block = undefined;
  }
}
