import { chunkPool } from "./chunk-pool.js";

/**
 * Reads ahead: keeps `depth` requests to the source in flight while the
 * consumer works on the current item, so the next chunk's I/O overlaps this chunk's arithmetic.
 * Memory grows by `depth` chunks, no more.
 */
export async function* prefetch<T>(source: AsyncIterable<T>, depth = 1): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  const queue: Promise<IteratorResult<T>>[] = [];
  try {
    for (let i = 0; i < depth; i++) queue.push(iterator.next());
    for (;;) {
      const next = await queue.shift()!;
      if (next.done === true) return;
      queue.push(iterator.next());
      yield next.value;
    }
  } finally {
    // Settle reads still in flight before closing the source, so none fails
    // unobserved; chunks read ahead that nobody saw go back to the pool.
    for (const settled of await Promise.allSettled(queue)) {
      if (settled.status === "fulfilled" && settled.value.value instanceof Uint8Array) chunkPool.giveBack(settled.value.value);
    }
    await iterator.return?.();
  }
}

/** Passes chunks through, telling `onChunk` of each (progress, mostly). */
export async function* tap<T extends { length: number }>(source: AsyncIterable<T>, onChunk: (chunk: T) => void): AsyncGenerator<T> {
  for await (const chunk of source) {
    onChunk(chunk);
    yield chunk;
  }
}
