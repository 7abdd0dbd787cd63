import { lstat, readlink, realpath } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { HashPool } from "../hash/hash-pool.js";
import { listRegularFiles } from "../io/files.js";
import { MAX_HUB_LISTING_ENTRIES } from "../limits.js";
import { META_FILES, PYTORCH_FILES, isWeightFileName } from "../formats/weight-files.js";
import type { OnProgress } from "../progress.js";
import { KNOWN_FILES, type KnownFile } from "./known/base-conversions.js";

export interface IdentifiedFile {
  /** Relative to the model's directory. */
  path: string;
  sha256: string;
  /** Where the digest came from: read from the Hugging Face cache's blob name, or hashed now. */
  digestFrom: "cache" | "hashed";
  known?: KnownFile;
}

export interface IdentifyResult {
  dir: string;
  files: IdentifiedFile[];
  /** "LLaMA-7B (Hugging Face conversion)" when every weight file is a known file of one model; else undefined. */
  model?: string;
}

/**
 * Which known base a model directory (or file) is, by the SHA-256 of its
 * weight files. In the Hugging Face cache a file is a link to
 * blobs/<sha256> (the blob name of an LFS file is its SHA-256, checked when
 * it was downloaded): the digest is read from the name, not computed.
 */
export async function identifyModel(path: string, options: { threads?: number; onProgress?: OnProgress } = {}): Promise<IdentifyResult> {
  const info = await lstat(path).catch(() => undefined);
  const single = info !== undefined && !info.isDirectory() && (await realpath(path).then(async (r) => !(await lstat(r)).isDirectory(), () => false));
  const dir = single ? dirname(path) : path;
  const names = single ? [basename(path)] : (await listRegularFiles(dir, { maxFiles: MAX_HUB_LISTING_ENTRIES })).filter(isWeightFileName);
  const pool = new HashPool(options.threads);
  options.onProgress?.({ kind: "start", phase: "identify", totalBytes: 0 });
  try {
    const files = await Promise.all(names.map(async (rel): Promise<IdentifiedFile> => {
      const cached = await blobDigest(join(dir, rel));
      const sha256 = cached ?? (await pool.hashFile(join(dir, rel), (bytes) => options.onProgress?.({ kind: "advance", phase: "identify", bytes, label: rel }))).sha256;
      const known = KNOWN_FILES.get(sha256);
      return { path: rel, sha256, digestFrom: cached === undefined ? "hashed" : "cache", ...(known === undefined ? {} : { known }) };
    }));
    const models = new Set(files.map((f) => f.known?.model));
    const model = files.length > 0 && models.size === 1 ? [...models][0] : undefined;
    return { dir, files, ...(model === undefined ? {} : { model }) };
  } finally {
    options.onProgress?.({ kind: "end", phase: "identify" });
    await pool.close();
  }
}

/**
 * Whether a model's weight files are laid out as the known LLaMA
 * conversions are (`pytorch_model-0000k-of-0000n.bin`, 2, 3 or 7 shards)
 * or as Meta's originals whose digests are published (consolidated.0N.pth, 1, 2 or 4):
 * only then is hashing them worth it, since nothing else can match.
 */
export function mayBeKnownConversion(weightFiles: readonly string[]): boolean {
  const n = weightFiles.length;
  // Meta's originals: digests are published for 7B (1 file), 13B (2) and 33B (4).
  if (weightFiles.every((f, i) => META_FILES.part.exec(f)?.[1] === String(i).padStart(2, "0"))) return n === 1 || n === 2 || n === 4;
  return (n === 2 || n === 3 || n === 7) && weightFiles.every((f) => new RegExp(`^\\d{5}-of-0000${n}$`).test(PYTORCH_FILES.shard.exec(f)?.[1] ?? ""));
}

/** One line for a summary: which known base this is, or that it is none. */
export function describeIdentity(result: IdentifyResult): string {
  if (result.model !== undefined) return `base: ${result.model}, every weight file's SHA-256 as listed by ${[...new Set(result.files.map((f) => f.known!.listedBy))].join(" and ")}`;
  const known = result.files.filter((f) => f.known !== undefined).length;
  return known === 0
    ? "base: not a conversion this tool knows (no weight file's SHA-256 is a published one)"
    : `base: ${known} of ${result.files.length} weight files match a published conversion (${result.files.filter((f) => f.known === undefined).map((f) => f.path).join(", ")} do not): a different conversion`;
}

/** The SHA-256 a Hugging Face cache link names (`snapshots/<commit>/<file> -> ../../blobs/<sha256>`), if it is one. */
async function blobDigest(path: string): Promise<string | undefined> {
  const target = await readlink(path).catch(() => undefined);
  if (target === undefined) return undefined;
  const name = basename(target);
  return /^[0-9a-f]{64}$/.test(name) && basename(dirname(target)) === "blobs" ? name : undefined;
}
