import { DeltaError } from "../../errors.js";
import { chunkPool } from "../../io/chunk-pool.js";

const EMPTY = new Uint8Array(0);

/**
 * Reads exactly the number of bytes asked for from a stream of chunks of
 * any size: arithmetic needs base, delta and target chunks aligned element
 * for element although each source chunks its bytes its own way.
 */
export class ExactReader {
  #iterator: AsyncIterator<Uint8Array>;
  #pending: Uint8Array = EMPTY;
  #offset = 0;
  readonly #what: string;

  constructor(chunks: AsyncIterable<Uint8Array>, what: string) {
    this.#iterator = chunks[Symbol.asyncIterator]();
    this.#what = what;
  }

  /**
   * The next `length` bytes: the source's chunk itself when it is exactly
   * that (so a pooled chunk can be given back by its last user), a view into
   * it when it holds them, else a copy (into a chunk of the pool).
   */
  async read(length: number): Promise<Uint8Array> {
    // Fetch the next chunk before deciding, so that reads matching the
    // source's chunking are views, never copies.
    if (this.#offset === this.#pending.length && length > 0) {
      const next = await this.#iterator.next();
      if (next.done) throw new DeltaError(`${this.#what} ended ${length} bytes early`);
      this.#pending = next.value;
      this.#offset = 0;
    }
    const available = this.#pending.length - this.#offset;
    if (this.#offset === 0 && available === length) {
      // Used whole, never read again here: the caller is its only holder.
      const whole = this.#pending;
      this.#pending = EMPTY;
      return whole;
    }
    if (available >= length) {
      const view = this.#pending.subarray(this.#offset, this.#offset + length);
      this.#offset += length;
      return view;
    }
    const out = chunkPool.take(length); // every byte is filled below, or this throws
    let filled = 0;
    while (filled < length) {
      if (this.#offset === this.#pending.length) {
        const next = await this.#iterator.next();
        if (next.done) throw new DeltaError(`${this.#what} ended ${length - filled} bytes early`);
        this.#pending = next.value;
        this.#offset = 0;
        continue;
      }
      const take = Math.min(length - filled, this.#pending.length - this.#offset);
      out.set(this.#pending.subarray(this.#offset, this.#offset + take), filled);
      this.#offset += take;
      filled += take;
    }
    return out;
  }

  /** Checks that every byte was read: the source has nothing left. */
  async expectEnd(): Promise<void> {
    if (this.#offset < this.#pending.length) throw new DeltaError(`${this.#what} has ${this.#pending.length - this.#offset} bytes more than were used`);
    for (;;) {
      const next = await this.#iterator.next();
      if (next.done === true) return;
      if (next.value.length > 0) throw new DeltaError(`${this.#what} has ${next.value.length} bytes more than were used`);
    }
  }

  /** Releases the underlying reader (closes its iterator early). */
  async close(): Promise<void> {
    await this.#iterator.return?.();
  }
}
