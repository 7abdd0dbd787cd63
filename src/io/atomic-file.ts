import { createHash, randomBytes } from "node:crypto";
import { open, readdir, rename, rm, type FileHandle } from "node:fs/promises";
import { CHUNK_BYTES } from "../limits.js";
import { basename, dirname, join } from "node:path";
import { VerifyError, ioError } from "../errors.js";
import { DirectWriter } from "./direct-writes.js";
import { openRegularFile } from "./random-access-file.js";
import { makeDirectory } from "./make-directory.js";

/**
 * A running SHA-256 fed the bytes as they are written. `update` may wait
 * (backpressure); call `digest` once. A hash worker may read a chunk of the
 * chunk pool after `update` resolved (io/chunk-pool.ts: never write a chunk
 * once hashed; give it back as usual); other bytes are copied before then.
 */
export interface StreamHasher {
  update(bytes: Uint8Array): Promise<void>;
  /** Hashes bytes [start, end) of a file as the next bytes, reading them where the hashing runs (the hash workers do). */
  updateFromFile?(path: string, start: number, end: number): Promise<void>;
  digest(): Promise<string>;
}

/** A hasher on the calling thread, for small files (the hash workers implement StreamHasher for large ones). */
export function localHasher(): StreamHasher {
  const hash = createHash("sha256");
  return {
    update: async (bytes) => { hash.update(bytes); },
    digest: async () => hash.digest("hex"),
  };
}

/** Bytes written between background flushes to disk. */
const FLUSH_EVERY_BYTES = 64 * 1024 * 1024;

const PARTIAL_SUFFIX = ".partial";

/** `.<name>.<pid>-<8 hex digits>.partial`, as tempPathFor names them. */
const OUR_PARTIAL = /^\..+\.[0-9]+-[0-9a-f]{8}\.partial$/;

/**
 * Deletes temporary files (and scratch directories) that runs which failed
 * or were killed left in `dir`. Call it only while holding the directory's OutputLock: then no
 * other run is writing one.
 */
export async function removeStalePartials(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  // Only names of the form tempPathFor gives: a user's own ".notes.partial" in a target is not ours to delete.
  await Promise.all(names
    .filter((name) => OUR_PARTIAL.test(name))
    .map((name) => rm(join(dir, name), { recursive: true, force: true }).catch(() => undefined)));
}

/**
 * An output file that appears under its final name only when complete and,
 * if an expected digest is given, verified: written under a temporary name
 * in the same directory, hashed as it is written, fsynced, then renamed.
 * A run that fails or is killed leaves at most a `.partial` file behind.
 *
 * The temporary name is this process's own (`.<name>.<pid>-<random>.partial`,
 * created exclusively): no other run can open, truncate or rename it, so the
 * hash taken from the bytes as they are written is the hash of the file that
 * gets the final name.
 */
export class AtomicFile {
  readonly finalPath: string;
  readonly tempPath: string;
  #handle: FileHandle;
  /** Writes past the page cache where the file system allows (io/direct-writes.ts); else the handle writes. */
  #direct: DirectWriter | undefined;
  #hasher: StreamHasher;
  /** Further digests fed the same bytes (an MD5 a publisher listed). */
  #also: readonly StreamHasher[];
  #position = 0;
  #closed = false;
  #unflushed = 0;
  #flushing: Promise<void> | undefined;
  #settleDigest!: { resolve(sha256: string): void; reject(err: unknown): void };
  /**
   * The file's sha256 once close() has it (rejected if the file is aborted
   * first): a producer that records it (a merge's record) need not hash
   * every byte a second time.
   */
  readonly sha256 = new Promise<string>((resolve, reject) => {
    this.#settleDigest = { resolve, reject };
  });

  private constructor(finalPath: string, tempPath: string, handle: FileHandle, hasher: StreamHasher, also: readonly StreamHasher[]) {
    this.finalPath = finalPath;
    this.tempPath = tempPath;
    this.#handle = handle;
    this.#hasher = hasher;
    this.#also = also;
    this.sha256.catch(() => undefined); // nobody need ask for it
  }

  /** A fresh temporary name beside `finalPath`, this process's own. */
  static tempPathFor(finalPath: string): string {
    return join(dirname(finalPath), `.${basename(finalPath)}.${process.pid}-${randomBytes(4).toString("hex")}${PARTIAL_SUFFIX}`);
  }

  /** `hasher` computes the file's sha256 as it is written (default: on this thread); `also` are fed the same bytes. */
  static async create(finalPath: string, hasher: StreamHasher = localHasher(), also: readonly StreamHasher[] = []): Promise<AtomicFile> {
    const tempPath = AtomicFile.tempPathFor(finalPath);
    try {
      await makeDirectory(dirname(finalPath));
      const handle = await open(tempPath, "wx");
      const file = new AtomicFile(finalPath, tempPath, handle, hasher, also);
      file.#direct = await DirectWriter.open(tempPath, (bytes, position) => file.#writeAt(bytes, position));
      return file;
    } catch (err) {
      throw ioError("create", tempPath, err);
    }
  }

  /** Bytes written so far. */
  get size(): number {
    return this.#position;
  }

  async write(bytes: Uint8Array): Promise<void> {
    await this.#handOver([bytes], async () => {
      if (this.#direct !== undefined) await this.#direct.write(bytes);
      else await this.#writeAt(bytes, this.#position);
    });
  }

  /**
   * Where the file's next `length` bytes go, after everything written or
   * reserved so far, for a producer on another thread to put them there
   * (one view, or two); `writeReserved` then hands them over, in the order
   * reserved, in place of `write`. Undefined where the file is not written
   * past the page cache, or it has no room at once: then (and from then on
   * for this file) the caller writes its own bytes.
   */
  reserve(length: number): Uint8Array[] | undefined {
    return this.#closed ? undefined : this.#direct?.reserve(length);
  }

  /** Hands over reserved bytes, filled: the views `reserve` gave, as `write` would hand over their bytes. */
  async writeReserved(views: readonly Uint8Array[]): Promise<void> {
    await this.#handOver(views, async () => this.#direct!.commit(views));
  }

  async #handOver(parts: readonly Uint8Array[], write: () => Promise<void>): Promise<void> {
    // The write and the hashes read the bytes at the same time: the hash
    // workers read a pooled chunk (or a direct-write block) where it is (or
    // copy other bytes before `update` resolves), and nothing writes the
    // bytes meanwhile.
    const hashing = Promise.all(parts.flatMap((bytes) => [this.#hasher.update(bytes), ...this.#also.map((h) => h.update(bytes))]));
    hashing.catch(() => undefined); // awaited below, after the write
    try {
      await write();
    } catch (err) {
      await hashing.catch(() => undefined);
      throw ioError("write", this.tempPath, err);
    }
    const length = parts.reduce((n, p) => n + p.length, 0);
    this.#position += length;
    await hashing;
    this.#unflushed += length;
    // Direct writes are on the device already (and what falls back to the page cache is flushed at close).
    if (this.#direct === undefined && this.#unflushed >= FLUSH_EVERY_BYTES && this.#flushing === undefined) this.#flushInBackground();
  }

  async #writeAt(bytes: Uint8Array, position: number): Promise<void> {
    for (let done = 0; done < bytes.length; ) {
      const { bytesWritten } = await this.#handle.write(bytes, done, bytes.length - done, position + done);
      done += bytesWritten;
    }
  }

  /**
   * The disk writes a file far slower than we compute it; left to the final
   * fsync, a 10 GB shard would wait there for all of it. Flushing as we go
   * overlaps the disk's work with ours. Errors surface at close().
   */
  #flushInBackground(): void {
    this.#unflushed = 0;
    this.#flushing = this.#handle.datasync().finally(() => {
      this.#flushing = undefined;
    });
    this.#flushing.catch(() => undefined); // observed by close()
  }

  /**
   * Makes every byte written so far readable from `tempPath` (a check that
   * reads the file back before close); later writes go through the page cache.
   */
  async settleWrites(): Promise<void> {
    try {
      await this.#settleDirect();
    } catch (err) {
      throw ioError("write", this.tempPath, err);
    }
  }

  /** Direct writes end: the device has every block, the page cache the unaligned tail. */
  async #settleDirect(): Promise<void> {
    const direct = this.#direct;
    if (direct === undefined) return;
    this.#direct = undefined;
    const { tail, offset } = await direct.finish();
    await this.#writeAt(tail, offset);
  }

  /**
   * fsync, close and rename into place. With `expectedSha256`, a mismatch
   * removes the temporary file and throws instead: no wrong file ever gets
   * the final name. Returns the file's sha256 (hex).
   */
  async commit(expectedSha256?: string): Promise<string> {
    const digest = await this.close();
    if (expectedSha256 !== undefined && digest !== expectedSha256) {
      await rm(this.tempPath, { force: true });
      throw new VerifyError(
        `${this.finalPath}: sha256 ${digest.slice(0, 16)}... does not match the expected ${expectedSha256.slice(0, 16)}...; the file was not written`,
      );
    }
    await this.publish();
    return digest;
  }

  /** fsync and close, keeping the temporary name; returns the sha256. Then `publish()` or `abort()`. */
  async close(): Promise<string> {
    this.#closed = true;
    try {
      await this.#settleDirect();
      await this.#flushing;
      await this.#handle.sync();
      await this.#handle.close();
    } catch (err) {
      await rm(this.tempPath, { force: true });
      this.#settleDigest.reject(err);
      throw ioError("write", this.tempPath, err);
    }
    const digest = this.#hasher.digest();
    digest.then(this.#settleDigest.resolve, this.#settleDigest.reject);
    return digest;
  }

  /** Renames the closed, verified file into place. */
  async publish(): Promise<void> {
    try {
      await rename(this.tempPath, this.finalPath);
    } catch (err) {
      throw ioError("rename into place", this.finalPath, err);
    }
  }

  /** Close and delete the temporary file (after a failure). Never throws. */
  async abort(): Promise<void> {
    this.#settleDigest.reject(new Error(`${this.tempPath} was aborted`));
    await this.#direct?.abort();
    this.#direct = undefined;
    if (!this.#closed) await this.#handle.close().catch(() => undefined);
    await rm(this.tempPath, { force: true }).catch(() => undefined);
  }
}

/** Appends the bytes of the file `src` to `sink`, in bounded chunks. */
export async function copyInto(src: string, sink: AtomicFile): Promise<void> {
  const { handle: input } = await openRegularFile(src, { refuse: () => ioError("read", src, Object.assign(new Error("not a regular file"), { code: "EINVAL" })) });
  try {
    const buffer = new Uint8Array(CHUNK_BYTES);
    for (let position = 0; ; ) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await input.read(buffer, 0, buffer.length, position));
      } catch (err) {
        throw ioError("read", src, err);
      }
      if (bytesRead === 0) break;
      await sink.write(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
  } finally {
    await input.close();
  }
}

/**
 * Copies `src` to `dest` through an AtomicFile, in bounded chunks; with
 * `expectedSha256` the copy is kept only if it matches.
 */
export async function copyFileAtomic(src: string, dest: string, expectedSha256?: string): Promise<{ sha256: string; size: number }> {
  const out = await AtomicFile.create(dest);
  try {
    await copyInto(src, out);
    const size = out.size;
    return { sha256: await out.commit(expectedSha256), size };
  } catch (err) {
    await out.abort();
    throw err;
  }
}
