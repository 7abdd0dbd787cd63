import { isDType, type DType } from "../dtypes.js";
import { DeltaError } from "../errors.js";
import { JsonSyntaxError, parseJsonDocument } from "../json.js";
import { MAX_JSON_DEPTH } from "../limits.js";
import { isSafeRelativePath } from "../relative-path.js";

/**
 * delta.json, format `delta-weights/1`: everything apply-delta needs to
 * prove that what it recovers is the publisher's target, bit for bit.
 * Pure: parse and serialize, no I/O.
 *
 * A manifest comes from the network: every name in it is untrusted. Its
 * tables are Maps (a tensor named "constructor" or a file named "toString"
 * is just a key), and every path is a plain relative path inside its
 * directory, checked here once, so no later join can climb out.
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
    tensors: Map<string, TensorEntry>;
    /** Base tensors absent from the target: not needed, not in the output. */
    dropped: string[];
  };
  target: {
    source: string;
    /** Every file of the recovered model: weights, index, config, tokenizer. */
    files: Map<string, FileEntry>;
    tensors: Map<string, TargetTensorEntry>;
    /** Each weight file's exact safetensors header JSON (padding included). */
    headers: Map<string, string>;
    /** The exact text of the target's index, when it has one. */
    index?: { file: string; text: string };
  };
  delta: {
    /** Every file of the delta except delta.json itself. */
    files: Map<string, FileEntry>;
    /** The delta's weight files (shards), in order. */
    weights: string[];
    /** The fix-ups sidecar (codec add), if any element needed one. */
    fixups?: string;
  };
}

const SHA256 = /^[0-9a-f]{64}$/;

export function serializeManifest(manifest: Manifest): string {
  const plain = {
    format: manifest.format,
    codec: manifest.codec,
    tool: manifest.tool,
    base: { source: manifest.base.source, tensors: Object.fromEntries(manifest.base.tensors), dropped: manifest.base.dropped },
    target: {
      source: manifest.target.source,
      files: Object.fromEntries(manifest.target.files),
      tensors: Object.fromEntries(manifest.target.tensors),
      headers: Object.fromEntries(manifest.target.headers),
      ...(manifest.target.index === undefined ? {} : { index: manifest.target.index }),
    },
    delta: {
      files: Object.fromEntries(manifest.delta.files),
      weights: manifest.delta.weights,
      ...(manifest.delta.fixups === undefined ? {} : { fixups: manifest.delta.fixups }),
    },
  };
  return JSON.stringify(plain, null, 1) + "\n";
}

type Json = Record<string, unknown>;

/** Parses and checks delta.json; `file` names it in errors. */
export function parseManifest(file: string, text: string): Manifest {
  let raw: unknown;
  try {
    raw = parseJsonDocument(text, MAX_JSON_DEPTH);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new DeltaError(`${file}: not valid JSON (${err.message})`, { cause: err });
    throw err;
  }
  const fail = (what: string): never => {
    throw new DeltaError(`${file}: ${what}; is this a delta-weights manifest, downloaded whole?`);
  };
  const field = (object: Json, key: string): unknown => (Object.hasOwn(object, key) ? object[key] : undefined);
  const quoted = (text: string) => JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);

  if (!isObject(raw)) return fail("not a JSON object");
  if (field(raw, "format") !== MANIFEST_FORMAT) return fail(`format is ${quoted(String(field(raw, "format")))}, expected "${MANIFEST_FORMAT}"`);
  const codec = field(raw, "codec");
  if (codec !== "add" && codec !== "xor") return fail(`unknown codec ${quoted(String(codec))}`);
  const tool = field(raw, "tool");
  if (typeof tool !== "string") return fail("tool must be a string");
  const base = field(raw, "base"), target = field(raw, "target"), delta = field(raw, "delta");
  if (!isObject(base) || !isObject(target) || !isObject(delta)) return fail("base, target and delta must be objects");

  const files = (where: string, value: unknown): Map<string, FileEntry> => {
    if (!isObject(value)) return fail(`${where}.files must be an object`);
    const out = new Map<string, FileEntry>();
    for (const [path, entry] of Object.entries(value)) {
      if (!isSafeRelativePath(path)) fail(`${where}.files has a path that is not a plain relative path inside the directory: ${quoted(path)}`);
      if (!isObject(entry) || !isSize(field(entry, "size")) || !isSha256(field(entry, "sha256"))) fail(`${where}.files[${quoted(path)}] needs a size and a sha256`);
      out.set(path, { size: field(entry as Json, "size") as number, sha256: field(entry as Json, "sha256") as string });
    }
    return out;
  };
  const tensors = (where: string, value: unknown): Map<string, TensorEntry & { file?: unknown }> => {
    if (!isObject(value)) return fail(`${where}.tensors must be an object`);
    const out = new Map<string, TensorEntry & { file?: unknown }>();
    for (const [name, entry] of Object.entries(value)) {
      const shape = isObject(entry) ? field(entry, "shape") : undefined;
      const dtype = isObject(entry) ? field(entry, "dtype") : undefined;
      const sha256 = isObject(entry) ? field(entry, "sha256") : undefined;
      if (!isDType(dtype) || !Array.isArray(shape) || !shape.every(isSize) || !isSha256(sha256)) fail(`${where}.tensors[${quoted(name)}] needs a dtype, shape and sha256`);
      out.set(name, { dtype: dtype as DType, shape: shape as number[], sha256: sha256 as string, file: field(entry as Json, "file") });
    }
    return out;
  };
  const names = (value: unknown, what: string): string[] => {
    if (!Array.isArray(value) || !value.every((n) => typeof n === "string")) return fail(`${what} must be a list of names`);
    return value as string[];
  };

  const baseSource = field(base, "source");
  if (typeof baseSource !== "string") fail("base.source must be a string");
  const baseTensors = new Map<string, TensorEntry>();
  for (const [name, e] of tensors("base", field(base, "tensors"))) baseTensors.set(name, { dtype: e.dtype, shape: e.shape, sha256: e.sha256 });
  const dropped = names(field(base, "dropped"), "base.dropped");

  const targetSource = field(target, "source");
  if (typeof targetSource !== "string") fail("target.source must be a string");
  const targetFiles = files("target", field(target, "files"));
  const rawHeaders = field(target, "headers");
  if (!isObject(rawHeaders)) return fail("target.headers must be an object");
  const headers = new Map<string, string>();
  for (const [path, header] of Object.entries(rawHeaders)) {
    if (typeof header !== "string") fail(`target.headers[${quoted(path)}] must be a string`);
    if (!targetFiles.has(path)) fail(`target.headers names ${quoted(path)}, which target.files lacks`);
    headers.set(path, header as string);
  }
  const targetTensors = new Map<string, TargetTensorEntry>();
  for (const [name, e] of tensors("target", field(target, "tensors"))) {
    if (typeof e.file !== "string" || !headers.has(e.file)) fail(`target tensor ${quoted(name)} is in ${quoted(String(e.file))}, which has no header`);
    targetTensors.set(name, { dtype: e.dtype, shape: e.shape, sha256: e.sha256, file: e.file as string });
  }
  let index: Manifest["target"]["index"];
  const rawIndex = field(target, "index");
  if (rawIndex !== undefined) {
    const indexFile = isObject(rawIndex) ? field(rawIndex, "file") : undefined;
    const indexText = isObject(rawIndex) ? field(rawIndex, "text") : undefined;
    if (typeof indexFile !== "string" || typeof indexText !== "string" || !targetFiles.has(indexFile)) fail("target.index must name a target file and hold its text");
    index = { file: indexFile as string, text: indexText as string };
  }

  const deltaFiles = files("delta", field(delta, "files"));
  const weights = names(field(delta, "weights"), "delta.weights");
  if (!weights.every((f) => deltaFiles.has(f))) fail("delta.weights must list files of delta.files");
  const fixups = field(delta, "fixups");
  if (fixups !== undefined && (typeof fixups !== "string" || !deltaFiles.has(fixups) || !weights.every((w) => w !== fixups))) {
    fail("delta.fixups must name a file of delta.files that is not a weight file");
  }
  return {
    format: MANIFEST_FORMAT,
    codec,
    tool,
    base: { source: baseSource as string, tensors: baseTensors, dropped },
    target: { source: targetSource as string, files: targetFiles, tensors: targetTensors, headers, ...(index === undefined ? {} : { index }) },
    delta: { files: deltaFiles, weights, ...(fixups === undefined ? {} : { fixups: fixups as string }) },
  };
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isSize(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isSha256(value: unknown): value is string {
  return typeof value === "string" && SHA256.test(value);
}
