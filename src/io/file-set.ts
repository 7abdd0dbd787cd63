import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { RandomAccess } from "../tensors.js";
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
}

/** The files of a local directory: all there, nothing to wait for. */
export function localFileSet(root: string): FileSet {
  let listing: Promise<string[]> | undefined;
  return {
    root,
    list: () => (listing ??= listRegularFiles(root, { recursive: true, maxFiles: MAX_HUB_LISTING_ENTRIES })),
    size: async (path) => (await stat(join(root, ...path.split("/")))).size,
    open: (path) => openRandomAccessFile(join(root, ...path.split("/"))),
    whole: async (path) => join(root, ...path.split("/")),
    settled: Promise.resolve(),
  };
}
