import { isDType, type DType } from "../dtypes.js";
import { DeltaError } from "../errors.js";

/**
 * delta.json, format `delta-weights/1`: everything apply-delta needs to
 * prove that what it recovers is the publisher's target, bit for bit.
 * Pure: parse and serialize, no I/O.
 */

export const MANIFEST_FORMAT = "delta-weights/1";
export const MANIFEST_FILE = "delta.json";
export const FIXUPS_FILE = "delta-fixups.safetensors";

export type Codec = "add" | "xor";

export interface FileEntry {
  size: number;
  sha256: string;
}

export interface TensorEntry {
  dtype: DType;
  shape: number[];
  sha256: string;
}

export interface TargetTensorEntry extends TensorEntry {
  file: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  codec: Codec;
  /** The tool and version that made it. */
  tool: string;
  base: {
    source: string;
    /** Base tensors the delta was made against; dtype and sha256 are of the
     * bytes after conversion to the target's dtype, so an F32 copy of the
     * right base matches too. */
    tensors: Record<string, TensorEntry>;
    /** Base tensors absent from the target: not needed, not in the output. */
    dropped: string[];
  };
  target: {
    source: string;
    /** Every file of the recovered model: weights, index, config, tokenizer. */
    files: Record<string, FileEntry>;
    tensors: Record<string, TargetTensorEntry>;
    /** Each weight file's exact safetensors header JSON (padding included). */
    headers: Record<string, string>;
    /** The exact text of the target's index, when it has one. */
    index?: { file: string; text: string };
  };
  delta: {
    /** Every file of the delta except delta.json itself. */
    files: Record<string, FileEntry>;
    /** The delta's weight files (shards), in order. */
    weights: string[];
    /** The fix-ups sidecar (codec add), if any element needed one. */
    fixups?: string;
  };
}

const SHA256 = /^[0-9a-f]{64}$/;

/** A relative path inside the model directory: no escape, no absolute path. */
export function isSafeRelativePath(path: string): boolean {
  if (path.length === 0 || path.startsWith("/") || path.includes("\\") || path.includes("\0")) return false;
  return path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

export function serializeManifest(manifest: Manifest): string {
  return JSON.stringify(manifest, null, 1) + "\n";
}

/** Parses and checks delta.json; `file` names it in errors. */
export function parseManifest(file: string, text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DeltaError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  const fail = (what: string): never => {
    throw new DeltaError(`${file}: ${what}; is this a delta-weights manifest, downloaded whole?`);
  };
  if (!isObject(raw)) return fail("not a JSON object");
  if (raw.format !== MANIFEST_FORMAT) return fail(`format is ${JSON.stringify(raw.format)}, expected "${MANIFEST_FORMAT}"`);
  if (raw.codec !== "add" && raw.codec !== "xor") return fail(`unknown codec ${JSON.stringify(raw.codec)}`);
  const base = raw.base, target = raw.target, delta = raw.delta;
  if (!isObject(base) || !isObject(target) || !isObject(delta)) return fail("base, target and delta must be objects");

  const checkFiles = (where: string, files: unknown): Record<string, FileEntry> => {
    if (!isObject(files)) return fail(`${where}.files must be an object`);
    for (const [path, entry] of Object.entries(files)) {
      if (!isSafeRelativePath(path)) fail(`${where}.files has an unsafe path ${JSON.stringify(path)}`);
      if (!isObject(entry) || !isSize(entry.size) || typeof entry.sha256 !== "string" || !SHA256.test(entry.sha256)) {
        fail(`${where}.files["${path}"] needs a size and a sha256`);
      }
    }
    return files as Record<string, FileEntry>;
  };
  const checkTensors = (where: string, tensors: unknown, withFile: boolean): void => {
    if (!isObject(tensors)) return fail(`${where}.tensors must be an object`);
    for (const [name, entry] of Object.entries(tensors)) {
      const ok = isObject(entry) && isDType(entry.dtype) && Array.isArray(entry.shape) && entry.shape.every(isSize) &&
        typeof entry.sha256 === "string" && SHA256.test(entry.sha256) && (!withFile || typeof entry.file === "string");
      if (!ok) fail(`${where}.tensors["${name}"] needs a dtype, shape and sha256${withFile ? " and file" : ""}`);
    }
  };

  if (typeof base.source !== "string") fail("base.source must be a string");
  checkTensors("base", base.tensors, false);
  if (!Array.isArray(base.dropped) || !base.dropped.every((n) => typeof n === "string")) fail("base.dropped must be a list of names");

  if (typeof target.source !== "string") fail("target.source must be a string");
  const targetFiles = checkFiles("target", target.files);
  checkTensors("target", target.tensors, true);
  if (!isObject(target.headers)) fail("target.headers must be an object");
  for (const [path, header] of Object.entries(target.headers as Record<string, unknown>)) {
    if (typeof header !== "string") fail(`target.headers["${path}"] must be a string`);
    if (!(path in targetFiles)) fail(`target.headers names ${path}, which target.files lacks`);
  }
  for (const [name, entry] of Object.entries(target.tensors as Record<string, TargetTensorEntry>)) {
    if (!(entry.file in (target.headers as object))) fail(`target tensor "${name}" is in ${entry.file}, which has no header`);
  }
  if (target.index !== undefined) {
    const index = target.index;
    if (!isObject(index) || typeof index.file !== "string" || typeof index.text !== "string" || !(index.file in targetFiles)) {
      fail("target.index must name a target file and hold its text");
    }
  }

  const deltaFiles = checkFiles("delta", delta.files);
  if (!Array.isArray(delta.weights) || !delta.weights.every((f) => typeof f === "string" && f in deltaFiles)) {
    fail("delta.weights must list files of delta.files");
  }
  if (delta.fixups !== undefined && (typeof delta.fixups !== "string" || !(delta.fixups in deltaFiles))) {
    fail("delta.fixups must name a file of delta.files");
  }
  if (typeof raw.tool !== "string") fail("tool must be a string");
  return raw as unknown as Manifest;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isSize(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
