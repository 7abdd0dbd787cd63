import { PerformanceObserver, constants, type PerformanceEntry } from "node:perf_hooks";
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

/**
 * Array buffers (live and not yet collected) below which no collection is
 * forced: there is nothing worth freeing.
 */
const ARRAY_BUFFER_FLOOR = 64 * 1024 * 1024;

let collect: (() => void) | undefined;
/**
 * V8 collected on its own since our last look. A download in the same
 * process allocates a buffer per socket read and V8 then collects every few
 * tens of milliseconds; the dead chunks go with those collections, and a
 * forced one (a full, non-incremental pause) would only add work.
 */
let collectedSince = false;

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
    return;
  }
  // Does not keep the process alive.
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const detail = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail;
      if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR || detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) collectedSince = true;
    }
  }).observe({ entryTypes: ["gc"] });
}

let sinceLast = 0;

/** Reports `bytes` of chunk buffers let go; collects when enough have piled up. */
export function releasedChunk(bytes: number): void {
  sinceLast += bytes;
  if (sinceLast >= BYTES_BETWEEN_COLLECTIONS && collect !== undefined) {
    sinceLast = 0;
    const skip = collectedSince || process.memoryUsage().arrayBuffers < ARRAY_BUFFER_FLOOR;
    collectedSince = false;
    if (skip) return;
    // A full collection: chunks live across awaits long enough to be promoted out of
    // the young generation, which a minor collection would not free. On a heap of a
    // few MB it takes a millisecond or two.
    collect();
  }
}
