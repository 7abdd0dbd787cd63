import { availableParallelism } from "node:os";
import { join } from "node:path";
import { readdir, stat } from "node:fs/promises";
import { INPUT_FORMATS } from "../../formats/registry.js";
import { VerifyError, UsageError } from "../../errors.js";
import { HashPool } from "../../hash/hash-pool.js";
import { readChecksums } from "../../hash/checksums.js";
import type { OnProgress } from "../../progress.js";
import { firstDifferentTensor } from "./diagnose.js";
import { MANIFEST_FILE, type Manifest } from "./manifest.js";
import { readManifest } from "./read-manifest.js";

export interface VerifyOptions {
  /** delta.json, or a local delta directory holding it (the library's Hub front end resolves repo ids). */
  manifest?: string;
  /** A sha256sum list. */
  checksums?: string;
  /** Hashing threads (default: one per core). */
  threads?: number;
  onProgress?: OnProgress;
}

export interface VerifyResult {
  dir: string;
  verified: true;
  /** The digest the files were compared by: sha256 (delta.json, a sha256sum list) or md5 (an md5sum list). */
  algorithm: "sha256" | "md5";
  files: Record<string, { size: number; sha256: string }>;
}

/**
 * Re-checks a recovered model against delta.json (every target file's size
 * and sha256) or a sha256sum list. A mismatch names the file and, for a
 * safetensors file, the first tensor that differs.
 */
export async function verifyModel(dir: string, options: VerifyOptions): Promise<VerifyResult> {
  if ((options.manifest === undefined) === (options.checksums === undefined)) {
    throw new UsageError("verify needs exactly one of --manifest and --checksums");
  }
  const expected = new Map<string, { size?: number; sha256?: string; md5?: string }>();
  let manifest: Manifest | undefined;
  let algorithm: VerifyResult["algorithm"] = "sha256";
  let named: string;
  if (options.manifest !== undefined) {
    const file = await manifestFile(options.manifest);
    manifest = await loadManifest(file);
    for (const [rel, entry] of manifest.target.files) expected.set(rel, entry);
    named = file; // delta.json, or a record in its format (a LoRA merge's delta-weights-merge.json)
  } else {
    const list = await readChecksums(options.checksums!);
    for (const [rel, digest] of list.digests) expected.set(rel, { [list.algorithm]: digest });
    algorithm = list.algorithm;
    named = options.checksums!;
  }
  await refuseExtraWeights(dir, expected, named);
  const total = [...expected.values()].reduce((n, e) => n + (e.size ?? 0), 0);
  options.onProgress?.({ kind: "start", phase: "verify", totalBytes: total });
  const files: VerifyResult["files"] = {};
  // Sizes first (cheap, and a missing file is named at once), then every hash on the workers, in parallel.
  for (const [rel, entry] of expected) {
    const path = join(dir, rel);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      throw new VerifyError(`${path} is missing`);
    }
    if (entry.size !== undefined && size !== entry.size) {
      throw new VerifyError(`${path} is ${size} bytes, expected ${entry.size}`);
    }
  }
  // The main thread only waits here: every core can hash.
  const pool = new HashPool(options.threads ?? availableParallelism());
  try {
    const hashed = await Promise.all([...expected].map(([rel, entry]) =>
      pool.hashFile(join(dir, rel), (bytes) => options.onProgress?.({ kind: "advance", phase: "verify", bytes, label: rel }), { md5: entry.md5 !== undefined })));
    let i = 0;
    for (const [rel, entry] of expected) {
      const actual = hashed[i++]!;
      const [algorithm, want, got] = entry.sha256 !== undefined ? ["sha256", entry.sha256, actual.sha256] : ["md5", entry.md5, actual.md5];
      if (got !== want) {
        const path = join(dir, rel);
        const tensor = manifest === undefined ? undefined : await firstDifferentTensor(path, manifest);
        throw new VerifyError(`${path} has ${algorithm} ${got?.slice(0, 16)}..., expected ${want?.slice(0, 16)}...${tensor === undefined ? "" : `; tensor "${tensor}" differs`}`);
      }
      files[rel] = { size: actual.size, sha256: actual.sha256 };
    }
  } finally {
    await pool.close();
    options.onProgress?.({ kind: "end", phase: "verify" });
  }
  return { dir, verified: true, algorithm, files };
}

/**
 * A weight file or index beside the checked ones changes what a loader
 * loads (transformers prefers model.safetensors to pytorch_model.bin, follows
 * whichever index it finds): one the list does not name fails the check.
 */
async function refuseExtraWeights(dir: string, expected: ReadonlyMap<string, unknown>, named: string): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true })).filter((e) => !e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name).sort();
  } catch (err) {
    throw new VerifyError(`${dir} cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  const extra = names.find((name) => !expected.has(name) && isWeightOrIndex(name));
  if (extra !== undefined) {
    throw new VerifyError(`${join(dir, extra)} is a weight file ${named} does not name: a loader could load it with the model; remove it, or check against a list that names it`);
  }
}

function isWeightOrIndex(name: string): boolean {
  return INPUT_FORMATS.some((f) => f.isWeightFile(name)) || /\.(pt|pth|ckpt|gguf)$/i.test(name) || name.toLowerCase().endsWith(".index.json");
}

/** The manifest --manifest names: the file itself, or delta.json in the delta directory given. */
async function manifestFile(path: string): Promise<string> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true ? join(path, MANIFEST_FILE) : path;
}

async function loadManifest(file: string): Promise<Manifest> {
  const manifest = await readManifest(file);
  if (manifest === undefined) throw new VerifyError(`${file} does not exist: --manifest takes delta.json or the delta holding it`);
  return manifest;
}
