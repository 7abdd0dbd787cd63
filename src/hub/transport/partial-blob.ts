import { createHash } from "node:crypto";
import { open, readFile, rename, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import { HubError, ioError } from "../../errors.js";
import type { HashPool } from "../../hash/hash-pool.js";
import { localHasher, type StreamHasher } from "../../io/atomic-file.js";
import { MAX_RANGES_SIDECAR_BYTES } from "../../limits.js";
import { RangeSet } from "./range-set.js";

/**
 * One blob being downloaded into the HF cache, in pieces, by several
 * connections at once, and how it survives a kill.
 *
 * Where the bytes go, and why not `<etag>.incomplete`:
 * Python's huggingface_hub (file_download.py, `_download_to_tmp_and_move`,
 * releases before 1.18) opens `blobs/<etag>.incomplete` in append mode and
 * resumes from its size with `Range: bytes=<size>-` (`http_get`'s
 * resume_size), trusting every byte before that, and it checks only the size
 * at the end, not the sha256. Parallel ranges written in place would leave
 * holes (zeros) before the file's end, and an older Python finding that file
 * would keep the zeros and publish a corrupt blob. Since 1.18 Python writes
 * `<etag>.<uuid8>.incomplete` and never resumes, so it would not read ours,
 * but older versions are everywhere. So our bytes never live under that name:
 *
 *   blobs/<etag>.dw.incomplete          our bytes, written at their offsets
 *                                       (may have holes: not a prefix)
 *   blobs/<etag>.dw-ranges.incomplete   which byte ranges of it are written
 *
 * Python never opens either name; both end in `.incomplete`, so
 * `hf cache scan`/`prune` count and clean them as partial downloads. When we
 * find Python's own `<etag>.incomplete` (a valid contiguous prefix) and have
 * nothing of our own, we adopt it: rename it to our name and record its
 * bytes as range [0, size). When the blob is done we delete a leftover Python
 * prefix, which no one can use anymore. All of this runs under the blob's
 * lock (blob-lock.ts), so Python is not writing these files meanwhile.
 *
 * A kill at any moment leaves: the blob complete and verified under its
 * final name, or our two files, where the sidecar lists only ranges whose
 * writes had finished before it was saved (atomically, by rename). The kernel
 * keeps written pages when a process dies, so those bytes are there; after a
 * power cut they might not be, and the sha256 checked at the end catches it
 * (the download is then deleted and fetched again). A data file without a
 * valid sidecar is discarded.
 *
 * The sha256 (LFS) or git blob sha1 (regular files) is computed as the
 * contiguous written prefix grows, reading the bytes back from the file (the
 * page cache, just written): no second pass when the download ends. On a
 * resume, the prefix kept from before is read once to rebuild the hash.
 */

/** Sidecar format tag: a change of meaning must change it. */
const SIDECAR_FORMAT = "delta-weights-ranges/1";
/** Bytes read back per hashing step. */
const HASH_READ_BYTES = 2 * 1024 * 1024;
/** Bytes a hash worker reads and hashes per request (it reads them in its own chunks). */
const HASH_FROM_FILE_BYTES = 64 * 1024 * 1024;
/** The sidecar is rewritten at most this often while bytes arrive. */
const SIDECAR_SAVE_INTERVAL_MS = 500;
/** Ranges a sidecar may list (ours list a handful; more is damage). */
const MAX_SIDECAR_RANGES = 10_000;
/**
 * Bytes written between background flushes to disk. The blob is fsynced
 * before it is renamed into place; left to that moment, the disk would
 * start on a 10 GB shard only when its last byte arrived (the kernel's own
 * writeback waits for gigabytes of dirty pages), and the download would
 * stall there for seconds.
 */
const FLUSH_EVERY_BYTES = 64 * 1024 * 1024;

export interface BlobSpec {
  /** LFS sha256 or git blob sha1: the blob's name in the cache. */
  etag: string;
  size: number;
  lfs: boolean;
}

export interface BlobPaths {
  blob: string;
  /** Our data file: blobs/<etag>.dw.incomplete */
  partial: string;
  /** Our finished-ranges sidecar: blobs/<etag>.dw-ranges.incomplete */
  sidecar: string;
  /** Python's resumable prefix: blobs/<etag>.incomplete */
  python: string;
}

export function blobPaths(blobPath: string): BlobPaths {
  return {
    blob: blobPath,
    partial: `${blobPath}.dw.incomplete`,
    sidecar: `${blobPath}.dw-ranges.incomplete`,
    python: `${blobPath}.incomplete`,
  };
}

export interface OpenedFrom {
  /** Bytes already present when opened (kept from an earlier run, ours or Python's). */
  resumed: number;
  /** Set when Python's `.incomplete` prefix was taken over. */
  adoptedPython: boolean;
}

/** The digest the blob's name promises: sha256 for LFS, git's blob sha1 otherwise. */
export function blobHasher(spec: BlobSpec, pool?: HashPool): StreamHasher {
  if (spec.lfs) return pool !== undefined ? pool.create() : localHasher();
  const hash = createHash("sha1").update(`blob ${spec.size}\0`);
  return {
    update: async (bytes) => { hash.update(bytes); },
    digest: async () => hash.digest("hex"),
  };
}

export class PartialBlob {
  readonly done: RangeSet;
  #handle: FileHandle;
  #hasher: StreamHasher;
  #hashed = 0;
  #pumping: Promise<void> | undefined;
  #hashFailure: unknown;
  #closed = false;
  #saving: Promise<void> | undefined;
  #saveTimer: NodeJS.Timeout | undefined;
  #dirty = false;
  #lastSave = 0;
  #unflushed = 0;
  #flushing: Promise<void> | undefined;
  #onChange: () => void;

  /**
   * Flushed to disk as it grows and before it gets its name, so a power cut
   * leaves no torn blob in the cache. A scratch copy deleted once read (a
   * streamed delta) skips that: its bytes never need to reach the disk.
   */
  readonly #durable: boolean;

  private constructor(readonly spec: BlobSpec, readonly paths: BlobPaths, handle: FileHandle, done: RangeSet, hasher: StreamHasher, onChange: () => void, durable: boolean) {
    this.#durable = durable;
    this.#handle = handle;
    this.done = done;
    this.#hasher = hasher;
    this.#onChange = onChange;
  }

  /**
   * Opens (or starts) the partial download of a blob. Call it holding the
   * blob's lock. `onChange` runs whenever more bytes are on disk.
   */
  static async open(spec: BlobSpec, paths: BlobPaths, hasher: StreamHasher, onChange: () => void, options: { durable?: boolean } = {}): Promise<{ blob: PartialBlob; from: OpenedFrom }> {
    let done = await readSidecar(paths, spec);
    const partialSize = await stat(paths.partial).then((s) => s.size, () => undefined);
    let adoptedPython = false;
    if (done !== undefined && partialSize !== undefined) {
      // Ranges past the data file's end were never written there (it was truncated).
      const kept = new RangeSet();
      for (const [s, e] of done.ranges()) if (s < partialSize) kept.add(s, Math.min(e, partialSize));
      done = kept;
    } else {
      done = new RangeSet();
      for (const stale of [paths.partial, paths.sidecar]) {
        await rm(stale, { force: true }).catch((err: unknown) => { throw ioError("remove", stale, err); });
      }
      const pythonSize = await stat(paths.python).then((s) => (s.isFile() ? s.size : undefined), () => undefined);
      if (pythonSize !== undefined && pythonSize <= spec.size) {
        // Sidecar first: a kill between the two steps leaves Python's file where it was.
        if (pythonSize > 0) {
          done.add(0, pythonSize);
          await writeSidecar(paths, spec, done);
        }
        try {
          await rename(paths.python, paths.partial);
        } catch (err) {
          throw ioError("rename", paths.python, err);
        }
        adoptedPython = pythonSize > 0;
      }
    }
    let handle: FileHandle;
    try {
      handle = await open(paths.partial, (await stat(paths.partial).then(() => true, () => false)) ? "r+" : "w+");
    } catch (err) {
      throw ioError("create", paths.partial, err);
    }
    const blob = new PartialBlob(spec, paths, handle, done, hasher, onChange, options.durable !== false);
    blob.#pump();
    return { blob, from: { resumed: done.size(), adoptedPython } };
  }

  /** Bytes of the file already hashed (the verified-so-far prefix). */
  get hashed(): number {
    return this.#hashed;
  }

  /** The byte ranges still to fetch. */
  missing(): [number, number][] {
    return this.done.gaps(this.spec.size);
  }

  /** Writes `chunks` at `position` and records them as present. */
  async write(chunks: Uint8Array[], position: number): Promise<void> {
    if (this.#closed) throw new Error("partial blob closed");
    let length = 0;
    for (const c of chunks) length += c.byteLength;
    if (position + length > this.spec.size) throw new HubError(`a write past the end of ${this.paths.partial}`);
    let at = position;
    let pending = chunks;
    try {
      while (pending.length > 0) {
        const { bytesWritten } = await this.#handle.writev(pending, at);
        at += bytesWritten;
        pending = dropBytes(pending, bytesWritten);
      }
    } catch (err) {
      throw ioError("write", this.paths.partial, err);
    }
    this.done.add(position, position + length);
    this.#unflushed += length;
    if (this.#durable && this.#unflushed >= FLUSH_EVERY_BYTES && this.#flushing === undefined && !this.#closed) {
      this.#unflushed = 0;
      // Errors surface at the final sync in finish().
      this.#flushing = this.#handle.datasync().catch(() => undefined).finally(() => { this.#flushing = undefined; });
    }
    this.#scheduleSave();
    this.#pump();
    this.#onChange();
  }

  /** Hashes the contiguous prefix as far as it is written; one loop at a time. */
  #pump(): void {
    if (this.#pumping !== undefined || this.#closed || this.#hashFailure !== undefined) return;
    if (this.#hashed >= this.done.prefix()) return;
    this.#pumping = (async () => {
      const fromFile = this.#hasher.updateFromFile?.bind(this.#hasher);
      if (fromFile !== undefined) {
        // The hash worker reads the bytes itself: nothing passes through this thread.
        while (!this.#closed && this.#hashed < this.done.prefix()) {
          const end = Math.min(this.done.prefix(), this.#hashed + HASH_FROM_FILE_BYTES);
          await fromFile(this.paths.partial, this.#hashed, end);
          this.#hashed = end;
        }
        return;
      }
      const buffer = Buffer.allocUnsafe(Math.min(HASH_READ_BYTES, Math.max(1, this.spec.size)));
      while (!this.#closed && this.#hashed < this.done.prefix()) {
        const want = Math.min(buffer.length, this.done.prefix() - this.#hashed);
        const { bytesRead } = await this.#handle.read(buffer, 0, want, this.#hashed);
        if (bytesRead <= 0) throw new Error(`${this.paths.partial} is shorter than its recorded ranges`);
        await this.#hasher.update(buffer.subarray(0, bytesRead));
        this.#hashed += bytesRead;
      }
    })()
      .catch((err: unknown) => {
        this.#hashFailure ??= err;
      })
      .finally(() => {
        this.#pumping = undefined;
        this.#pump();
      });
  }

  #scheduleSave(): void {
    this.#dirty = true;
    if (this.#saveTimer !== undefined || this.#saving !== undefined || this.#closed) return;
    const wait = Math.max(0, this.#lastSave + SIDECAR_SAVE_INTERVAL_MS - Date.now());
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = undefined;
      void this.#save();
    }, wait);
    this.#saveTimer.unref();
  }

  async #save(): Promise<void> {
    while (this.#saving !== undefined) await this.#saving;
    if (!this.#dirty || this.#closed) return;
    this.#dirty = false;
    this.#lastSave = Date.now();
    this.#saving = writeSidecar(this.paths, this.spec, this.done)
      .catch(() => undefined) // a failed save costs bytes on a resume, never correctness
      .finally(() => { this.#saving = undefined; });
    await this.#saving;
    if (this.#dirty && !this.#closed) this.#scheduleSave();
  }

  /**
   * All bytes are written: finish the hash, fsync, check the digest, move the
   * blob to its final name and remove the partial files. On a digest mismatch
   * the download is deleted (it cannot be trusted in part) and a HubError
   * says so.
   */
  async finish(describe: (expected: string, actual: string) => string): Promise<void> {
    if (!this.done.covers(0, this.spec.size)) throw new Error("finish() before every byte was written");
    while (this.#pumping !== undefined) await this.#pumping;
    if (this.#hashFailure !== undefined) {
      await this.#stop();
      throw ioError("read", this.paths.partial, this.#hashFailure);
    }
    const actual = await this.#hasher.digest();
    if (actual !== this.spec.etag) {
      await this.#stop();
      await rm(this.paths.partial, { force: true });
      await rm(this.paths.sidecar, { force: true });
      throw new HubError(describe(this.spec.etag, actual));
    }
    try {
      await this.#flushing;
      await this.#handle.truncate(this.spec.size); // never longer than the listing
      if (this.#durable) await this.#handle.sync();
    } catch (err) {
      await this.#stop();
      throw ioError("write", this.paths.partial, err);
    }
    await this.#stop();
    try {
      await rename(this.paths.partial, this.paths.blob);
    } catch (err) {
      throw ioError("rename", this.paths.partial, err);
    }
    await rm(this.paths.sidecar, { force: true }).catch(() => undefined);
    await rm(this.paths.python, { force: true }).catch(() => undefined);
  }

  /** Stops, recording every finished range for the next run. Never throws. */
  async suspend(): Promise<void> {
    if (this.#closed) return;
    await this.#stop();
    if (this.done.size() > 0) await writeSidecar(this.paths, this.spec, this.done).catch(() => undefined);
    else {
      await rm(this.paths.partial, { force: true }).catch(() => undefined);
      await rm(this.paths.sidecar, { force: true }).catch(() => undefined);
    }
    // A pool hasher holds state on its worker until it is digested.
    await this.#hasher.digest().catch(() => undefined);
  }

  async #stop(): Promise<void> {
    this.#closed = true;
    if (this.#saveTimer !== undefined) clearTimeout(this.#saveTimer);
    this.#saveTimer = undefined;
    while (this.#pumping !== undefined) await this.#pumping.catch(() => undefined);
    while (this.#saving !== undefined) await this.#saving;
    await this.#flushing;
    await this.#handle.close().catch(() => undefined);
  }
}

function dropBytes(chunks: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = n;
  for (const c of chunks) {
    if (skip >= c.byteLength) {
      skip -= c.byteLength;
      continue;
    }
    out.push(skip > 0 ? c.subarray(skip) : c);
    skip = 0;
  }
  return out;
}

async function readSidecar(paths: BlobPaths, spec: BlobSpec): Promise<RangeSet | undefined> {
  try {
    const info = await stat(paths.sidecar);
    if (!info.isFile() || info.size > MAX_RANGES_SIDECAR_BYTES) return undefined;
    const doc = JSON.parse(await readFile(paths.sidecar, "utf8")) as { format?: unknown; etag?: unknown; size?: unknown; ranges?: unknown };
    if (doc.format !== SIDECAR_FORMAT || doc.etag !== spec.etag || doc.size !== spec.size) return undefined;
    const set = RangeSet.fromJSON(doc.ranges, spec.size, MAX_SIDECAR_RANGES);
    return typeof set === "string" ? undefined : set;
  } catch {
    return undefined; // missing or damaged: start this blob afresh
  }
}

async function writeSidecar(paths: BlobPaths, spec: BlobSpec, done: RangeSet): Promise<void> {
  // The temporary name ends in .incomplete too, so a kill mid-save leaves nothing `hf cache prune` would miss.
  const temp = paths.sidecar.replace(/\.incomplete$/, "-tmp.incomplete");
  await writeFile(temp, JSON.stringify({ format: SIDECAR_FORMAT, etag: spec.etag, size: spec.size, ranges: done.ranges() }));
  await rename(temp, paths.sidecar);
}
