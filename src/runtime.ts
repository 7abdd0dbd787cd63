import type { HashPool } from "./hash/hash-pool.js";
import type { ConnectionBudget } from "./hub/transport/connection-budget.js";
import type { OnProgress } from "./progress.js";

/**
 * The resources one run shares among its parts, built once at the
 * composition root (api.ts) and handed down as one object, instead of each
 * being threaded through every layer's options. Every field is optional: a
 * part given none makes its own (its own hash workers, its own connections).
 * The hub takes it (hub/resolve-source.ts), and so does delta/'s door
 * (apply-delta, then recover and the model-file outputs) beside its
 * ApplyRequest. Notices travel on `onProgress` too, as "notice" events.
 */
export interface Runtime {
  /** Hash workers shared by every download and check of the run. */
  readonly hashPool?: HashPool;
  /** Simultaneous connections shared by every download of the run (`--connections N` is N in all). */
  readonly connections?: ConnectionBudget;
  /** Aborting stops the work, leaving caches consistent and resumable. */
  readonly signal?: AbortSignal;
  readonly onProgress?: OnProgress;
}
