import { randomBytes } from "node:crypto";
import { open, readFile, rename, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { DeltaWeightsError, ioError } from "../errors.js";
import { parseJsonDocument } from "../json.js";
import { MAX_JSON_DEPTH } from "../limits.js";
import { makeDirectory } from "./make-directory.js";

/**
 * One writer per output: apply-delta, make-delta and convert hold a lock
 * file in the directory they write into, so a second run into the same
 * directory stops at once with a clear message instead of racing the first.
 *
 * The lock is a file created exclusively (O_EXCL) holding the owner's pid,
 * host and command. A lock left by a run that was killed is stale: on the
 * same host its pid no longer runs, so it is taken over. Correctness does not
 * rest on the lock alone: every output is written under a temporary name of
 * its own process (see AtomicFile), so even two runs that both got past the
 * lock (a stale lock broken by both at once, a lock on a network file system
 * seen from two hosts) never write into each other's files, and each renames
 * only a file it wrote and checked.
 */

export const LOCK_FILE = ".delta-weights.lock";

interface LockOwner {
  pid: number;
  host: string;
  command: string;
  nonce: string;
}

export class OutputLock {
  private constructor(readonly path: string, private readonly nonce: string) {}

  /**
   * Takes the lock on `dir` (created if missing) for `command` (e.g.
   * "apply-delta"), or throws naming the run that holds it.
   */
  static async acquire(dir: string, command: string, lockName = LOCK_FILE): Promise<OutputLock> {
    try {
      await makeDirectory(dir);
    } catch (err) {
      throw ioError("create the output directory", dir, err);
    }
    const path = join(dir, lockName);
    const owner: LockOwner = { pid: process.pid, host: hostname(), command, nonce: randomBytes(8).toString("hex") };
    // A few rounds: a stale lock is moved aside, then we try again.
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const handle = await open(path, "wx");
        try {
          await handle.writeFile(JSON.stringify(owner) + "\n");
        } finally {
          await handle.close();
        }
        return new OutputLock(path, owner.nonce);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create the lock file", path, err);
      }
      const holder = await readOwner(path);
      if (holder === "gone") continue;
      if (holder !== undefined && holder.host === owner.host && !isRunning(holder.pid)) {
        await breakStaleLock(path);
        continue;
      }
      const who = holder === undefined ? "another run" : `another ${holder.command} (pid ${holder.pid}${holder.host === owner.host ? "" : ` on ${holder.host}`})`;
      throw new DeltaWeightsError(
        "E_IO",
        `${who} is writing to ${dir}: wait for it to finish, or choose another directory` +
          (holder === undefined || holder.host !== owner.host ? ` (if no other run is active, delete ${path})` : ""),
      );
    }
    throw new DeltaWeightsError("E_IO", `could not take the lock ${path}: other runs keep taking it; try again`);
  }

  /** Releases the lock (only if it is still ours). Never throws. */
  async release(): Promise<void> {
    const holder = await readOwner(this.path).catch(() => undefined);
    if (holder !== undefined && holder !== "gone" && holder.nonce === this.nonce) await rm(this.path, { force: true }).catch(() => undefined);
  }
}

/** Runs `work` holding the lock on `dir`. */
export async function withOutputLock<T>(dir: string, command: string, work: () => Promise<T>, lockName?: string): Promise<T> {
  const lock = await OutputLock.acquire(dir, command, lockName);
  try {
    return await work();
  } finally {
    await lock.release();
  }
}

/** The lock's owner; undefined when the file cannot be understood; "gone" when it vanished meanwhile. */
async function readOwner(path: string): Promise<LockOwner | undefined | "gone"> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "gone";
    return undefined;
  }
  if (text.length > 4096) return undefined;
  try {
    const value = parseJsonDocument(text, MAX_JSON_DEPTH) as Partial<LockOwner>;
    if (Number.isSafeInteger(value.pid) && typeof value.host === "string" && typeof value.command === "string" && typeof value.nonce === "string") {
      return value as LockOwner;
    }
  } catch {
    // written by something else, or cut short by a crash between create and write
  }
  return undefined;
}

function isRunning(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, under another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Moves a dead run's lock aside (rename is atomic: of several processes
 * breaking it at once, one moves it) and deletes it.
 */
async function breakStaleLock(path: string): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await rename(path, aside);
  } catch {
    return; // someone else moved it first
  }
  await rm(aside, { force: true }).catch(() => undefined);
}
