import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/**
 * Chunk buffers are ArrayBuffers: V8 frees them only when it collects
 * garbage, and our JavaScript heap is so small (a few MB) that it rarely
 * does. Without a nudge, dead chunks pile up: apply peaked at 225-240 MB RSS
 * on the 1.3 GB bench model, close to our 256 MB bound. With a collection
 * every BYTES_BETWEEN_COLLECTIONS bytes of chunks it stays near 195 MB, for
 * about 0.1 s of collections per GB (at 32 MB: 190 MB, but 0.3 s more).
 */
const BYTES_BETWEEN_COLLECTIONS = 48 * 1024 * 1024;

let collect: (() => void) | undefined;

/**
 * Turns the nudges on. The CLI does; a program using the library decides for
 * itself, since this sets a V8 flag for the whole process.
 */
export function enableChunkCollections(): void {
  try {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as typeof collect;
  } catch {
    collect = undefined; // runtimes without it fall back to V8's own schedule
  }
}

let sinceLast = 0;

/** Reports `bytes` of chunk buffers let go; collects when enough have piled up. */
export function releasedChunk(bytes: number): void {
  sinceLast += bytes;
  if (sinceLast >= BYTES_BETWEEN_COLLECTIONS && collect !== undefined) {
    sinceLast = 0;
    // A full collection: chunks live across awaits long enough to be promoted out of
    // the young generation, which a minor collection would not free. On a heap of a
    // few MB it takes a millisecond or two.
    collect();
  }
}
