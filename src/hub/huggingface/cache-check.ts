import { createHash } from "node:crypto";
import { open, rename, stat } from "node:fs/promises";
import { ioError } from "../../errors.js";
import type { HashPool } from "../../hash/hash-pool.js";
import { CHUNK_BYTES } from "../../limits.js";

/**
 * Is a blob already in the cache what its name says? A blob truncated by a
 * full disk, or damaged since, would otherwise be reused by every run and
 * blamed on the model later. The size is checked always (one stat); the
 * digest when asked, since it reads the whole file: an LFS blob's name is
 * its sha256, a regular file's is its git blob sha1.
 */

export interface BlobIdentity {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

export type CachedBlob =
  | { state: "missing" }
  | { state: "ok" }
  | { state: "corrupt"; problem: string; identity: BlobIdentity };

export interface CheckOptions {
  /** Also hash the blob and compare with its name. */
  digest: boolean;
  /** Hash LFS blobs on these workers instead of this thread. */
  hashPool?: HashPool;
  onBytes?: (bytes: number) => void;
}

/** `expectedSize` is undefined offline, where no listing says it. */
export async function checkCachedBlob(path: string, etag: string, expectedSize: number | undefined, options: CheckOptions): Promise<CachedBlob> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") return undefined;
    throw ioError("read", path, err);
  });
  if (info === undefined) return { state: "missing" };
  const identity: BlobIdentity = { dev: info.dev, ino: info.ino, size: info.size, mtimeMs: info.mtimeMs };
  if (!info.isFile()) return { state: "corrupt", problem: "is not a file", identity };
  if (expectedSize !== undefined && info.size !== expectedSize) {
    return { state: "corrupt", problem: `has ${info.size} bytes, not the ${expectedSize} the Hub lists`, identity };
  }
  if (!options.digest) return { state: "ok" };
  const lfs = etag.length === 64;
  const actual = lfs ? await sha256Of(path, options) : await gitBlobSha1Of(path, info.size, options.onBytes);
  if (actual !== etag) return { state: "corrupt", problem: `has ${lfs ? "sha256" : "git blob id"} ${actual}, not its name`, identity };
  return { state: "ok" };
}

/** True if `path` is still the file `identity` describes (nobody replaced it since). */
export async function sameBlob(path: string, identity: BlobIdentity): Promise<boolean> {
  const now = await stat(path).catch(() => undefined);
  return now !== undefined && now.dev === identity.dev && now.ino === identity.ino && now.size === identity.size && now.mtimeMs === identity.mtimeMs;
}

/** Renames a corrupt blob to `<etag>.corrupt-<UTC time>` beside it; returns the new path. */
export async function moveAside(path: string, now = new Date()): Promise<string> {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  let target = `${path}.corrupt-${stamp}`;
  for (let n = 2; await stat(target).then(() => true, () => false); n++) target = `${path}.corrupt-${stamp}-${n}`;
  try {
    await rename(path, target);
  } catch (err) {
    throw ioError("move aside", path, err);
  }
  return target;
}

async function sha256Of(path: string, options: CheckOptions): Promise<string> {
  if (options.hashPool !== undefined) return (await options.hashPool.hashFile(path, options.onBytes)).sha256;
  const hash = createHash("sha256");
  await readChunks(path, (chunk) => {
    hash.update(chunk);
    options.onBytes?.(chunk.byteLength);
  });
  return hash.digest("hex");
}

async function gitBlobSha1Of(path: string, size: number, onBytes?: (bytes: number) => void): Promise<string> {
  const hash = createHash("sha1").update(`blob ${size}\0`);
  await readChunks(path, (chunk) => {
    hash.update(chunk);
    onBytes?.(chunk.byteLength);
  });
  return hash.digest("hex");
}

async function readChunks(path: string, each: (chunk: Uint8Array) => void): Promise<void> {
  const handle = await open(path, "r").catch((err: unknown) => { throw ioError("read", path, err); });
  try {
    const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
    for (let position = 0; ; ) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      each(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
  } catch (err) {
    throw ioError("read", path, err);
  } finally {
    await handle.close();
  }
}
