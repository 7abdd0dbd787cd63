import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { lstat, open, readFile, rm, stat, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { ioError } from "../../errors.js";
import { sleep } from "./retry.js";
import { makeDirectory } from "../../io/make-directory.js";

/**
 * The lock around writing one blob, shared with Python's `huggingface_hub`.
 *
 * Python takes `<cache>/.locks/models--org--name/<etag>.lock` with filelock's
 * UnixFileLock around a blob download: open(O_RDWR | O_CREAT), then
 * `fcntl.flock(fd, LOCK_EX | LOCK_NB)` in a polling loop; the lock belongs to
 * that open file and dies with the process; the file itself is left in place.
 * (On Windows filelock uses msvcrt.locking, and on file systems without flock
 * an O_EXCL "soft" marker.)
 *
 * Node has no flock(). The decision: we open the lock file ourselves and hand
 * that descriptor to a short-lived helper, util-linux (or busybox) `flock(1)`
 * as `flock -x 3`, else `perl` (its flock() is flock(2)), which locks the
 * shared open file description and exits. flock(2) locks belong to the open
 * file description, not to the process that called it, so the lock stays
 * held by our descriptor alone: it is released when we close it, and by the
 * kernel when we die, even by SIGKILL, exactly like Python's. No native
 * addon, no long-lived child, and the same kernel lock Python contends on.
 * After locking we check that the path still names the inode we locked (a
 * lock on an unlinked file protects nothing), as filelock does.
 *
 * Where no helper runs (Windows; a system without flock(1) and perl; a file
 * system that refuses flock), we fall back to a marker file of our own,
 * `<etag>.lock.dw-owner`, created with O_EXCL and holding "pid\nhost\n" like
 * filelock's SoftFileLock: it excludes our own processes only, not Python,
 * and the caller is told so once. A marker left by a killed run is broken
 * when its pid is not alive on this host, so it never blocks forever.
 */

export type LockMode = "auto" | "flock" | "perl" | "own-file";

export interface BlobLock {
  /** "flock": the kernel lock Python uses too; "own-file": our marker only. */
  readonly kind: "flock" | "own-file";
  release(): Promise<void>;
}

export interface LockOptions {
  mode?: LockMode;
  /** Called once if the lock is held by someone else and we wait. */
  onWaiting?: (holder: string) => void;
  /** Called once per process when Python's lock cannot be taken here. */
  onFallback?: (reason: string) => void;
  signal?: AbortSignal;
}

interface Helper {
  name: "flock" | "perl";
  command: string;
  args(nonBlocking: boolean): string[];
}

const HELPERS: Helper[] = [
  { name: "flock", command: "flock", args: (nb) => (nb ? ["-n", "-x", "3"] : ["-x", "3"]) },
  {
    name: "perl",
    command: "perl",
    args: (nb) => [
      "-e",
      'use Fcntl qw(:flock); open(my $h, "+<&=", 3) or exit 2; flock($h, LOCK_EX | ($ARGV[0] ? LOCK_NB : 0)) and exit 0; ' +
        "exit(($!{EWOULDBLOCK} || $!{EAGAIN} || $!{EACCES}) ? 1 : 2)",
      nb ? "1" : "0",
    ],
  },
];

/** Helpers found missing in this process (spawn said ENOENT). */
const missingHelpers = new Set<string>();
let fallbackReported = false;

export async function acquireBlobLock(lockPath: string, options: LockOptions = {}): Promise<BlobLock> {
  const mode = options.mode ?? "auto";
  try {
    await makeDirectory(dirname(lockPath));
  } catch (err) {
    throw ioError("create", dirname(lockPath), err);
  }
  if (mode !== "own-file" && process.platform !== "win32") {
    const helpers = HELPERS.filter((h) => (mode === "auto" || mode === h.name) && !missingHelpers.has(h.name));
    let failure = "no flock(1) or perl found";
    for (const helper of helpers) {
      const result = await flockWith(helper, lockPath, options);
      if (typeof result !== "string") return result;
      if (result === "missing") missingHelpers.add(helper.name);
      else failure = result;
    }
    if (mode !== "auto") throw ioError("lock", lockPath, new Error(failure));
    if (!fallbackReported) {
      fallbackReported = true;
      options.onFallback?.(`cannot take huggingface_hub's lock (${failure}): using a lock file of our own, so do not download the same files with Python at the same time`);
    }
  } else if (mode === "auto" && !fallbackReported) {
    fallbackReported = true;
    options.onFallback?.("huggingface_hub's lock cannot be shared on this system: using a lock file of our own, so do not download the same files with Python at the same time");
  }
  return ownFileLock(`${lockPath}.dw-owner`, options);
}

/** Tries one helper. Returns the lock, or "missing" / a reason when this helper cannot lock here. */
async function flockWith(helper: Helper, lockPath: string, options: LockOptions): Promise<BlobLock | string> {
  let waited = false;
  for (;;) {
    let handle: FileHandle;
    try {
      handle = await open(lockPath, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o664);
    } catch (err) {
      throw ioError("open", lockPath, err);
    }
    let keep = false;
    try {
      let outcome = await runHelper(helper, handle, true, options.signal);
      if (outcome === "busy") {
        if (!waited) options.onWaiting?.(`another process (Python's huggingface_hub or another download) holds ${lockPath}`);
        waited = true;
        outcome = await runHelper(helper, handle, false, options.signal);
      }
      if (outcome !== "locked") return outcome === "busy" ? `${helper.name} could not lock` : outcome;
      // A lock on an inode that is no longer at the path protects nothing: start again.
      const [held, current] = await Promise.all([handle.stat(), lstat(lockPath).catch(() => undefined)]);
      if (held.nlink > 0 && current !== undefined && current.ino === held.ino && current.dev === held.dev) {
        // Some file systems (network ones, where flock may be emulated per
        // process, or may succeed for everyone) would let the lock vanish with
        // the helper: a second attempt through another descriptor must fail.
        if (!(await stillExclusive(helper, lockPath, options.signal))) return `${helper.name}'s lock does not exclude others on this file system`;
        keep = true;
        return { kind: "flock", release: () => handle.close().catch(() => undefined) };
      }
    } finally {
      if (!keep) await handle.close().catch(() => undefined);
    }
  }
}

async function stillExclusive(helper: Helper, lockPath: string, signal: AbortSignal | undefined): Promise<boolean> {
  const probe = await open(lockPath, constants.O_RDWR | constants.O_NOFOLLOW).catch((err: unknown) => { throw ioError("open", lockPath, err); });
  try {
    return (await runHelper(helper, probe, true, signal)) === "busy";
  } finally {
    await probe.close().catch(() => undefined);
  }
}

/** Runs `helper` on the lock file's descriptor (as fd 3): "locked", "busy", "missing" or why it failed. */
function runHelper(helper: Helper, handle: FileHandle, nonBlocking: boolean, signal: AbortSignal | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason);
      return;
    }
    const child = spawn(helper.command, helper.args(nonBlocking), { stdio: ["ignore", "ignore", "pipe", handle.fd] });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      if (stderr.length < 500) stderr += d.toString();
    });
    const onAbort = () => child.kill();
    signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (err: NodeJS.ErrnoException) => {
      signal?.removeEventListener("abort", onAbort);
      resolve(err.code === "ENOENT" ? "missing" : `${helper.name} failed: ${err.message}`);
    });
    child.on("close", (code) => {
      signal?.removeEventListener("abort", onAbort);
      if (signal?.aborted === true) reject(signal.reason);
      else if (code === 0) resolve("locked");
      else if (code === 1) resolve("busy");
      else resolve(`${helper.name} failed: ${stderr.trim().split("\n")[0] ?? `exit ${code}`}`);
    });
  });
}

/** How often a contended marker is looked at again. */
const OWN_FILE_POLL_MS = 250;
/** A marker still unreadable after this long was left half-written by a killed run. */
const MALFORMED_MARKER_AGE_MS = 2000;

async function ownFileLock(markerPath: string, options: LockOptions): Promise<BlobLock> {
  const me = `${process.pid}\n${hostname()}\n`;
  let waited = false;
  for (;;) {
    if (options.signal?.aborted === true) throw options.signal.reason;
    try {
      const handle = await open(markerPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o664);
      try {
        await handle.writeFile(me);
      } finally {
        await handle.close();
      }
      const ours = await stat(markerPath);
      return {
        kind: "own-file",
        release: async () => {
          const now = await stat(markerPath).catch(() => undefined);
          if (now !== undefined && now.ino === ours.ino && now.dev === ours.dev) await rm(markerPath, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create", markerPath, err);
    }
    const holder = await markerHolder(markerPath);
    if (holder === "stale") continue;
    if (!waited) options.onWaiting?.(`${holder} holds ${markerPath} (delete it if that process is gone)`);
    waited = true;
    await sleep(OWN_FILE_POLL_MS, options.signal);
  }
}

/** Who holds a marker; breaks it (and says "stale") if its process is gone. */
async function markerHolder(markerPath: string): Promise<string> {
  const info = await stat(markerPath).catch(() => undefined);
  if (info === undefined) return "stale";
  const text = await readFile(markerPath, "utf8").catch(() => "");
  const m = /^(\d+)\n([^\n]*)\n/.exec(text.slice(0, 1024));
  const breakIt = async (): Promise<string> => {
    // Only the marker we judged: a fresh one put there since is someone's live lock.
    const again = await stat(markerPath).catch(() => undefined);
    if (again !== undefined && again.ino === info.ino && again.mtimeMs === info.mtimeMs) await rm(markerPath, { force: true });
    return "stale";
  };
  if (m === null) return Date.now() - info.mtimeMs > MALFORMED_MARKER_AGE_MS ? breakIt() : "a process";
  const pid = Number(m[1]);
  if (m[2] === hostname() && !isAlive(pid)) return breakIt();
  return `process ${pid} on ${m[2]}`;
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
