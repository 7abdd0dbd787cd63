import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaWeightsError, ioError } from "../errors.js";
import type { RandomAccess } from "../tensors.js";
import type { Confinement } from "./confine.js";
import { MAX_HUB_LISTING_ENTRIES } from "../limits.js";
import { listRegularFiles } from "./files.js";
import { openRandomAccessFile } from "./random-access-file.js";

/**
 * Where the files of a model or a delta are: a local directory, or a Hub
 * snapshot still downloading. Readers ask for bytes at an offset and wait
 * while they are on their way, so an apply can start on the first shard
 * while the rest arrives. Paths are relative, "/"-separated.
 */
export interface FileSet {
  /** The local directory the files are (or will be) in: for messages and overlap checks. */
  readonly root: string;
  /** Every regular file, sorted; hidden ones left out. Known before any byte arrives. */
  list(): Promise<readonly string[]>;
  size(path: string): Promise<number>;
  /**
   * Random access to a file's bytes. For a file still downloading, reads
   * wait until their bytes are on disk; those bytes are NOT YET VERIFIED
   * against the Hub's sha256 (see `settled`).
   */
  open(path: string): Promise<RandomAccess>;
  /** The file's local path once it is complete and verified (small files read whole: configs, indexes, manifests). */
  whole(path: string): Promise<string>;
  /** Resolves once every file is complete and verified; rejects with the first failure. */
  readonly settled: Promise<void>;
  /** Present when the files are downloaded without keeping a copy: readers then say what they read, and when they are done. */
  readonly stream?: StreamedFiles;
}

/**
 * Files downloaded without keeping a copy (apply-delta --no-cache-delta):
 * readers say in which order they will read the files and when they are
 * done with one, so that only a file or two is on disk at a time. A file
 * nobody plans or releases is fetched and kept like any other.
 */
export interface StreamedFiles {
  /** The files readers will read, in this order: their bulk is fetched one file after another. */
  plan(paths: readonly string[]): void;
  /** No reader reads `path` again: it is deleted once verified, or never fetched if none of its bulk was asked for. */
  release(path: string): Promise<void>;
  /** Readers are done: large files nobody asked for are not fetched. */
  finish(): void;
}

/**
 * The files of a local directory: all there, nothing to wait for. With
 * `confine` (a delta, whose publisher chose its links), no file is listed
 * or read through a link that leads outside what it allows.
 */
export function localFileSet(root: string, options: { confine?: Confinement } = {}): FileSet {
  const { confine } = options;
  let listing: Promise<string[]> | undefined;
  const pathOf = (path: string): string => {
    const abs = join(root, ...path.split("/"));
    confine?.check(abs);
    return abs;
  };
  return {
    root,
    list: () => (listing ??= listRegularFiles(root, { recursive: true, maxFiles: MAX_HUB_LISTING_ENTRIES, refuseSpecial: true, ...(confine !== undefined ? { confine } : {}) })),
    size: async (path) => {
      const abs = pathOf(path);
      const info = await stat(abs).catch((err: unknown) => { throw ioError("read", abs, err); });
      if (!info.isFile()) throw new DeltaWeightsError("E_IO", `${abs} is not a regular file (${info.isDirectory() ? "a directory" : "a pipe, socket or device?"}): refused`);
      return info.size;
    },
    open: async (path) => openRandomAccessFile(pathOf(path)),
    whole: async (path) => pathOf(path),
    settled: Promise.resolve(),
  };
}
