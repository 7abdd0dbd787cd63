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
 * The buffers are shared memory, so the hash workers (hash/hash-pool.ts) read
 * a pooled chunk where it is instead of a copy of it: the hash holds the
 * chunk (`holdForReading`) until it has read it.
 *
 * The contract that makes use after return impossible in practice:
 * - `take` hands out a new view object over a pooled buffer; only that very
 *   object can be given back, once. A subarray, a copy, a view given back
 *   before or a buffer not from the pool are ignored, so giving back
 *   something you do not own exclusively is a no-op, not a corruption.
 * - A chunk is given back only by its last user: the writer once its write
 *   completed, the arithmetic once its result is made. A chunk that hashes
 *   still read goes back to the free buffers only when the last of them is
 *   done, so giving it back right after `update` is always safe.
 * - A chunk handed to a hash is read-only from then on: results go into a
 *   chunk of their own (make-delta's delta is not written over the target it
 *   hashes). Tests check it: with `poisonOnGiveBack`, a held chunk whose
 *   bytes changed before its hash was done is reported when it is let go.
 * - A chunk nobody gives back is simply collected, as before.
 * - Memory is bounded: at most `maxFree` idle buffers are kept, and the hash
 *   pool holds a bounded number of chunks at once (its backpressure).
 * - V8 never collects garbage because of shared memory (a loop dropping 4 MB
 *   SharedArrayBuffers passed 3 GB of RSS; ArrayBuffers stayed at 80 MB), so
 *   a chunk nobody gives back would stay until something else made V8
 *   collect. The pool counts its buffers still alive (idle, out, or dropped
 *   and not yet collected, through a FinalizationRegistry) and past `maxLive`
 *   hands out plain buffers of their own, as before the pool: V8 collects those
 *   on its schedule, and the dead shared ones with them.
 */
export class ChunkPool {
  readonly #free: PooledBuffer[] = [];
  /** Views handed out and not given back: the only objects giveBack accepts. */
  readonly #out = new WeakMap<Uint8Array, PooledBuffer>();
  /** Tests set this: a given-back chunk is overwritten, so a later read of it spoils the output; and a chunk written while a hash held it is reported. */
  poisonOnGiveBack = false;
  /** Reads smaller than this keep buffers of their own (tests lower it to pool every read of a small fixture). */
  minPooledBytes: number;
  /** Buffers made (fresh memory), takes served from given-back ones, give-backs deferred until the hashes reading the chunk were done, and takes served with a buffer of its own because `maxLive` were alive. */
  readonly stats = { allocated: 0, reused: 0, deferred: 0, unpooled: 0 };
  /** Shared buffers made and not yet collected. */
  #live = 0;
  readonly #collected = new FinalizationRegistry<undefined>(() => {
    this.#live--;
  });

  constructor(
    readonly chunkBytes: number,
    readonly maxFree: number,
    /** Shared buffers alive at most before `take` hands out buffers of their own. */
    readonly maxLive = 2 * maxFree,
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
    if (this.#free.length === 0 && this.#live >= this.maxLive) {
      this.stats.unpooled++;
      return uninitialized(length);
    }
    return this.#takePooled(length);
  }

  /**
   * A pooled chunk of `length` bytes (at most `chunkBytes`) whatever its
   * size, past `maxLive` too: the hash pool copies bytes from elsewhere into
   * one, and gives it back as soon as it is read.
   */
  takeShared(length: number): Uint8Array {
    if (length > this.chunkBytes) throw new RangeError(`a chunk holds at most ${this.chunkBytes} bytes, not ${length}`);
    return this.#takePooled(length);
  }

  #takePooled(length: number): Uint8Array {
    let buffer = this.#free.pop();
    if (buffer === undefined) {
      const made: PooledBuffer = { memory: new SharedArrayBuffer(this.chunkBytes), out: false, readers: 0, checked: () => this.poisonOnGiveBack, recycle: () => this.#recycle(made) };
      OWNERS.set(made.memory, made);
      this.#live++;
      this.#collected.register(made.memory, undefined);
      buffer = made;
      this.stats.allocated++;
    } else {
      this.stats.reused++;
    }
    buffer.out = true;
    const view = new Uint8Array(buffer.memory, 0, length);
    this.#out.set(view, buffer);
    return view;
  }

  /** Returns a chunk `take` handed out, by its last user; anything else is ignored. Hashes still reading it keep it until they are done. */
  giveBack(chunk: Uint8Array | undefined): void {
    const buffer = chunk === undefined ? undefined : this.#out.get(chunk);
    if (buffer === undefined) return;
    this.#out.delete(chunk!);
    buffer.out = false;
    if (buffer.readers > 0) this.stats.deferred++;
    else this.#recycle(buffer);
  }

  /** A buffer nobody holds any more: idle again (poisoned first, in tests), or dropped when enough are idle. */
  #recycle(buffer: PooledBuffer): void {
    if (this.poisonOnGiveBack) new Uint8Array(buffer.memory).fill(POISON);
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
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

/** One buffer of a pool. */
interface PooledBuffer {
  readonly memory: SharedArrayBuffer;
  /** Handed out by `take` and not given back. */
  out: boolean;
  /** Holds of hashes that have not read it yet. */
  readers: number;
  /** Whether its pool checks held chunks (poisonOnGiveBack). */
  checked(): boolean;
  /** Back to its pool's free buffers. */
  recycle(): void;
}

/** Every pool's buffers, by their memory: how a view is known to be a pooled chunk. */
const OWNERS = new WeakMap<ArrayBufferLike, PooledBuffer>();

/** A pooled chunk held while a hash worker reads it where it is. */
export interface HeldChunk {
  /** The chunk's shared memory and where in it the held bytes are. */
  readonly memory: SharedArrayBuffer;
  readonly offset: number;
  readonly length: number;
  /** Whether the bytes are as they were when held (always true unless the pool checks: `poisonOnGiveBack`). */
  intact(): boolean;
  /** The reader is done: a chunk its holder gave back meanwhile goes back to the free buffers with the last release. */
  release(): void;
}

/** Other shared memory whose bytes a reader may hold where they are (the direct writer's blocks), with how to hold them. */
const OTHER_MEMORY = new WeakMap<ArrayBufferLike, (bytes: Uint8Array) => HeldChunk | undefined>();

/** Lets holdForReading hold bytes of `memory`, by `hold`, which keeps them unchanged until the hold is released. */
export function registerSharedMemory(memory: SharedArrayBuffer, hold: (bytes: Uint8Array) => HeldChunk | undefined): void {
  OTHER_MEMORY.set(memory, hold);
}

/**
 * Holds `bytes`, a pooled chunk (or part of one) that its holder has not
 * given back, or bytes of registered shared memory, for a reader on another
 * thread; undefined for any other bytes (those are copied). A pooled chunk's
 * give-back is deferred until every hold is released.
 */
export function holdForReading(bytes: Uint8Array): HeldChunk | undefined {
  const buffer = OWNERS.get(bytes.buffer);
  if (buffer === undefined) return OTHER_MEMORY.get(bytes.buffer)?.(bytes);
  if (!buffer.out || bytes.length === 0) return undefined;
  buffer.readers++;
  const snapshot = buffer.checked() ? bytes.slice() : undefined;
  let released = false;
  return {
    memory: buffer.memory,
    offset: bytes.byteOffset,
    length: bytes.length,
    intact: () => snapshot === undefined || equalBytes(snapshot, new Uint8Array(buffer.memory, bytes.byteOffset, bytes.length)),
    release() {
      if (released) return;
      released = true;
      if (--buffer.readers === 0 && !buffer.out) buffer.recycle();
    },
  };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** The byte a poisoned chunk is filled with. */
export const POISON = 0xa5;

/**
 * The process's pool. 16 idle buffers (64 MB) cover what is in flight at
 * once: read-ahead of delta, base and target streams, the output being
 * hashed and written, and the writer's read-ahead. At most 24 shared
 * buffers (96 MB) alive: make-delta then apply-delta in one process made 20
 * on the bench's 1.33 GB case, all reused after.
 */
export const chunkPool = new ChunkPool(CHUNK_BYTES, 16, 24);

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
