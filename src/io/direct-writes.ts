import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { registerSharedMemory, type HeldChunk } from "./chunk-pool.js";

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
 *
 * A producer on another thread can put bytes straight where they go
 * (`reserve`, then `commit` in the same order): GGUF's Q8_0 worker writes its
 * blocks into ours, and the hash workers read them there, so no thread
 * copies them into a block (that copy cost the main thread about a quarter
 * of a CPU-second per 2.14 GB Q8_0 convert, on its critical path). The
 * blocks are shared memory for that reason.
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
export const directWrites = { enabled: true, refuseForTests: false, stats: { direct: 0, fallback: 0, reservations: 0, reservationsRefused: 0 } };

// The WebAssembly global is in Node but not in the ES library typings we build against (as in kernels/fast.ts).
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: true }) => { buffer: SharedArrayBuffer } } }).WebAssembly;

/**
 * The process's blocks: one shared WebAssembly memory, allocated at first
 * use and never freed, whose pages become resident only as blocks are used.
 * A hash worker reading a block holds it (chunk-pool's holdForReading finds
 * it here): a block given back while held is free again at the last release.
 */
class BlockPool {
  #memory: SharedArrayBuffer | undefined;
  #free: Uint8Array[] = [];
  #made = 0;
  /** Hash readers holding each block, by index; blocks given back while held. */
  readonly #readers = new Map<number, number>();
  readonly #givenWhileHeld = new Set<number>();
  /** Takers waiting for a held block's last release. */
  readonly #released: (() => void)[] = [];

  take(): Uint8Array | undefined {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    if (this.#made === MAX_BLOCKS) return undefined;
    if (this.#memory === undefined) {
      this.#memory = new Memory({ initial: (MAX_BLOCKS * BLOCK_BYTES) / 65536, maximum: (MAX_BLOCKS * BLOCK_BYTES) / 65536, shared: true }).buffer;
      registerSharedMemory(this.#memory, (bytes) => this.#hold(bytes));
    }
    return this.#block(this.#made++);
  }

  /** A block, waiting for one that hash workers still hold if that is all there is; undefined if none will come. */
  async takeWhenFree(): Promise<Uint8Array | undefined> {
    for (;;) {
      const block = this.take();
      if (block !== undefined || this.#givenWhileHeld.size === 0) return block;
      await new Promise<void>((resolve) => this.#released.push(resolve));
    }
  }

  give(block: Uint8Array): void {
    const index = block.byteOffset / BLOCK_BYTES;
    if ((this.#readers.get(index) ?? 0) > 0) this.#givenWhileHeld.add(index);
    else this.#free.push(block);
  }

  #block(index: number): Uint8Array {
    return new Uint8Array(this.#memory!, BLOCK_BYTES * index, BLOCK_BYTES);
  }

  #hold(bytes: Uint8Array): HeldChunk | undefined {
    if (bytes.length === 0) return undefined;
    const index = Math.floor(bytes.byteOffset / BLOCK_BYTES);
    this.#readers.set(index, (this.#readers.get(index) ?? 0) + 1);
    let released = false;
    return {
      memory: this.#memory!,
      offset: bytes.byteOffset,
      length: bytes.length,
      intact: () => true,
      release: () => {
        if (released) return;
        released = true;
        const left = this.#readers.get(index)! - 1;
        if (left > 0) {
          this.#readers.set(index, left);
          return;
        }
        this.#readers.delete(index);
        if (this.#givenWhileHeld.delete(index)) {
          this.#free.push(this.#block(index));
          for (const wake of this.#released.splice(0)) wake();
        }
      },
    };
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
  /** Blocks after the one being filled that reservations reach into, in file order. */
  readonly #ahead: Uint8Array[] = [];
  /** File offset after the last byte written or reserved. */
  #reservedEnd = 0;
  /** Cleared when a reservation could not be made: the file then takes only copies (write), in order. */
  #reserving = true;
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

  /** Bytes handed over so far (written or in blocks). */
  get #position(): number {
    return this.#offset + this.#filled;
  }

  /** Takes a copy of `bytes` as the file's next bytes; waits while the device is behind. */
  async write(bytes: Uint8Array): Promise<void> {
    if (this.#reservedEnd !== this.#position) throw new Error("direct writes: a write came before the reserved bytes were committed");
    for (let done = 0; done < bytes.length; ) {
      this.#throwIfFailed();
      if (this.#block === undefined) {
        this.#block = await this.#nextBlock();
        if (this.#block === undefined) {
          // No block to be had: this file continues through the page cache, from an aligned offset.
          await this.#buffered(bytes.subarray(done), this.#offset);
          this.#offset += bytes.length - done;
          this.#reservedEnd = this.#offset;
          this.#fallback = true;
          return;
        }
      }
      const n = Math.min(bytes.length - done, BLOCK_BYTES - this.#filled);
      this.#block.set(bytes.subarray(done, done + n), this.#filled);
      this.#filled += n;
      this.#reservedEnd += n;
      done += n;
      if (this.#filled === BLOCK_BYTES) this.#submit();
    }
  }

  /**
   * Where the file's next `length` bytes go, after everything written or
   * reserved so far: one view, or two across a block's end, for a producer
   * (another thread) to fill; then `commit` hands them over, in the order
   * reserved. Undefined when no block is free at once, or writes fell back:
   * from then on this file takes only `write`.
   */
  reserve(length: number): Uint8Array[] | undefined {
    if (!this.#reserving || this.#fallback || this.#failure !== undefined || length < 0) {
      if (this.#reserving) directWrites.stats.reservationsRefused++;
      this.#reserving = false;
      return undefined;
    }
    const views: Uint8Array[] = [];
    let at = this.#reservedEnd - this.#offset; // from the start of the block being filled
    for (let left = length; left > 0; ) {
      const index = Math.floor(at / BLOCK_BYTES);
      let block = index === 0 ? this.#block : this.#ahead[index - 1];
      if (block === undefined) {
        block = blocks.take();
        if (block === undefined) {
          this.#reserving = false; // blocks taken for this reservation serve the writes that follow
          directWrites.stats.reservationsRefused++;
          return undefined;
        }
        if (index === 0) this.#block = block;
        else this.#ahead.push(block);
      }
      const start = at % BLOCK_BYTES;
      const n = Math.min(left, BLOCK_BYTES - start);
      views.push(block.subarray(start, start + n));
      at += n;
      left -= n;
    }
    this.#reservedEnd += length;
    directWrites.stats.reservations++;
    return views;
  }

  /**
   * Hands over the next reserved bytes, filled: the views `reserve` gave, in
   * its order. Waits while the device is behind (so that blocks come free
   * for the reservations that follow).
   */
  async commit(views: readonly Uint8Array[]): Promise<void> {
    for (const view of views) {
      this.#throwIfFailed();
      if (this.#block === undefined || view.buffer !== this.#block.buffer || view.byteOffset !== this.#block.byteOffset + this.#filled || this.#filled + view.length > BLOCK_BYTES) {
        throw new Error("direct writes: committed bytes are not the next ones reserved");
      }
      this.#filled += view.length;
      if (this.#filled === BLOCK_BYTES) {
        this.#submit();
        if (this.#submitted.length > IN_FLIGHT) await this.#settleOldest();
      }
    }
  }

  /**
   * Waits for every block, closes the direct handle and returns the bytes
   * not yet written (fewer than one alignment unit, or a whole last block if
   * writes fell back) with their offset: the caller writes them, then syncs.
   */
  async finish(): Promise<{ tail: Uint8Array; offset: number }> {
    try {
      if (this.#reservedEnd !== this.#position) throw new Error("direct writes: the file was finished with reserved bytes not committed");
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
      await this.#release();
      await this.#handle.close();
    }
  }

  /** Waits for the blocks at the device, closes, gives every block back. Never throws. */
  async abort(): Promise<void> {
    await this.#release();
    await this.#handle.close().catch(() => undefined);
  }

  async #nextBlock(): Promise<Uint8Array | undefined> {
    const ahead = this.#ahead.shift();
    if (ahead !== undefined) return ahead;
    // One block at the device while this one fills: wait for the oldest before taking another.
    if (this.#submitted.length >= IN_FLIGHT) await this.#settleOldest();
    for (;;) {
      const block = await blocks.takeWhenFree();
      if (block !== undefined || this.#submitted.length === 0) return block;
      await this.#settleOldest();
    }
  }

  /** The oldest block at the device is written: back to the pool (free once no hash holds it). */
  async #settleOldest(): Promise<void> {
    const oldest = this.#submitted.shift()!;
    await oldest.done;
    blocks.give(oldest.block);
  }

  #submit(): void {
    const block = this.#block!;
    this.#block = this.#ahead.shift();
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

  /**
   * Every block back to the pool once the device is done with it. Blocks
   * with reserved bytes not committed are not given back: the producer that
   * was to fill them may still be writing into them (a failed run), and the
   * pool must never hand them to another file. Never throws.
   */
  async #release(): Promise<void> {
    await Promise.all(this.#submitted.map((s) => s.done));
    for (const s of this.#submitted.splice(0)) blocks.give(s.block);
    const reservedOut = this.#reservedEnd !== this.#position;
    for (const block of [this.#block, ...this.#ahead.splice(0)]) {
      if (block !== undefined && !reservedOut) blocks.give(block);
    }
    this.#block = undefined;
  }
}
