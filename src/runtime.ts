import type { HashPool } from "./hash/hash-pool.js";
import type { ConnectionBudget } from "./hub/transport/connection-budget.js";
import type { OnProgress } from "./progress.js";

/**
 * The resources one run shares among its parts, built once at the
 * composition root (api.ts) and handed down as one object, instead of each
 * being threaded through every layer's options. Every field is optional: a
 * part given none makes its own (its own hash workers, its own connections).
 * The hub takes it today (hub/resolve-source.ts); the other layers can adopt
 * it in place of their own `hashPool` / `signal` / `onProgress` options.
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
