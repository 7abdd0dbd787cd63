import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";

/**
 * `mkdir -p`, in a bounded number of steps. Node's own `mkdir(path,
 * { recursive: true })` loops for ever where a directory refuses new
 * entries with ENOENT although it exists (`/proc`, some FUSE mounts): it
 * takes ENOENT to mean "parent missing", finds the parent there, and tries
 * the child again. Here the missing components are found once, walking up,
 * and each is created once, walking down: at most one mkdir per component,
 * and the first one that fails ends it with that error.
 */
export async function makeDirectory(path: string): Promise<void> {
  const missing: string[] = [];
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    const found = await stat(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
    if (found !== undefined) {
      if (!found.isDirectory()) throw notADirectory(dir);
      break;
    }
    missing.push(dir);
    if (dirname(dir) === dir) break;
  }
  for (const dir of missing.reverse()) {
    try {
      await mkdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process made it meanwhile: fine, if it is a directory.
      if (code === "EEXIST" && (await stat(dir)).isDirectory()) continue;
      if (code === "EEXIST") throw notADirectory(dir);
      // ENOENT with the parent still there: the parent takes no new entries.
      if (code === "ENOENT" && (await isDirectory(dirname(dir)))) {
        throw Object.assign(new Error(`${dirname(dir)} exists but takes no new entries (a virtual file system?)`), { code: "EREFUSED", syscall: "mkdir", path: dir });
      }
      throw err;
    }
  }
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

function notADirectory(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${path}'`), { code: "ENOTDIR", syscall: "mkdir", path });
}
