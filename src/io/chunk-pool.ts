import { CHUNK_BYTES } from "../limits.js";

/**
 * Chunk buffers used again instead of allocated per read.
 *
 * Every read used to get a fresh 4 MB ArrayBuffer: the kernel page-faults its
 * memory in on first touch (a plain copy spent 3.0-3.7 s of system time per
 * 2.1 GB with fresh buffers, 1.4-2.4 s with one reused), and the gigabytes of
 * dead buffers a run leaves drive V8's collections. The pool keeps up to
 * `maxFree` buffers of `chunkBytes` each that their last user gave back.
 *
 * The contract that makes use after return impossible in practice:
 * - `take` hands out a new view object over a pooled buffer; only that very
 *   object can be given back, once. A subarray, a copy, a view given back
 *   before or a buffer not from the pool are ignored, so giving back
 *   something you do not own exclusively is a no-op, not a corruption.
 * - A chunk is given back only by its last user: the writer once its write
 *   completed and every hash copied it (the hash workers copy into shared
 *   memory before `update` resolves), the arithmetic once its result is made.
 *   A chunk nobody gives back is simply collected, as before.
 * - Memory is bounded: at most `maxFree` idle buffers are kept.
 */
export class ChunkPool {
  readonly #free: ArrayBuffer[] = [];
  /** Views handed out and not given back: the only objects giveBack accepts. */
  readonly #out = new WeakSet<Uint8Array>();
  /** Tests set this: a given-back chunk is overwritten, so a later read of it spoils the output. */
  poisonOnGiveBack = false;
  /** Reads smaller than this keep buffers of their own (tests lower it to pool every read of a small fixture). */
  minPooledBytes: number;
  /** Buffers made (fresh memory) and takes served from given-back ones. */
  readonly stats = { allocated: 0, reused: 0 };

  constructor(
    readonly chunkBytes: number,
    readonly maxFree: number,
  ) {
    this.minPooledBytes = chunkBytes / 4;
  }

  /** Whether a read of `length` bytes is worth a pooled buffer (small reads keep their own small buffers). */
  fits(length: number): boolean {
    return length >= this.minPooledBytes && length <= this.chunkBytes;
  }

  /**
   * `length` bytes, not zero-filled (the caller fills every byte before
   * anyone reads it): pooled when `fits(length)`, else a buffer of its own.
   */
  take(length: number): Uint8Array {
    if (!this.fits(length)) return uninitialized(length);
    let buffer = this.#free.pop();
    if (buffer === undefined) {
      buffer = uninitialized(this.chunkBytes).buffer as ArrayBuffer;
      this.stats.allocated++;
    } else {
      this.stats.reused++;
    }
    const view = new Uint8Array(buffer, 0, length);
    this.#out.add(view);
    return view;
  }

  /** Returns a chunk `take` handed out, by its last user; anything else is ignored. */
  giveBack(chunk: Uint8Array | undefined): void {
    if (chunk === undefined || !this.#out.has(chunk)) return;
    this.#out.delete(chunk);
    if (this.poisonOnGiveBack) new Uint8Array(chunk.buffer).fill(POISON);
    if (this.#free.length < this.maxFree) this.#free.push(chunk.buffer as ArrayBuffer);
  }

  /** Whether `chunk` is a pooled view still out (tests). */
  isOut(chunk: Uint8Array): boolean {
    return this.#out.has(chunk);
  }

  /** Idle buffers held. */
  get idle(): number {
    return this.#free.length;
  }
}

/** The byte a poisoned chunk is filled with. */
export const POISON = 0xa5;

/**
 * The process's pool. 16 idle buffers (64 MB) cover what is in flight at
 * once: read-ahead of delta, base and target streams, the output being
 * hashed and written, and the writer's read-ahead.
 */
export const chunkPool = new ChunkPool(CHUNK_BYTES, 16);

/**
 * Passes chunks through to a consumer that is done with each one when it
 * asks for the next (a writer that awaits its write and its hashes), and
 * gives each back then. On an early end nothing in flight is given back.
 */
export async function* lentToConsumer(chunks: AsyncIterable<Uint8Array>, pool: ChunkPool = chunkPool): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    yield chunk;
    pool.giveBack(chunk);
  }
}

/**
 * A plain Uint8Array over its own memory, not zero-filled: slice() stays a
 * copy. Zeroing the chunks the hot path reads cost a pass of memset over
 * every input byte.
 */
function uninitialized(length: number): Uint8Array {
  const bytes = Buffer.allocUnsafeSlow(length);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, length);
}
