import { DTYPES, isDType, type DType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { JsonCursor, JsonSyntaxError } from "../../json.js";
import { MAX_JSON_DEPTH, MAX_RANK, MAX_TENSORS_PER_MODEL } from "../../limits.js";
import { isSafeRelativePath } from "../../relative-path.js";

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
export { MANIFEST_FILE, FIXUPS_FILE } from "../../formats/weight-files.js";

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

/**
 * What delta.json's text is made from: a Manifest, or the same shape with
 * tables that are any iterables of entries (make-delta measures the
 * manifest it will write from its plan, without building its tables).
 */
export interface ManifestText {
  format: string;
  codec: Codec;
  tool: string;
  base: { source: string; tensors: Iterable<readonly [string, TensorEntry]>; dropped: Iterable<string> };
  target: {
    source: string;
    files: Iterable<readonly [string, FileEntry]>;
    tensors: Iterable<readonly [string, TargetTensorEntry]>;
    headers: Iterable<readonly [string, string]>;
    index?: { file: string; text: string } | undefined;
  };
  delta: { files: Iterable<readonly [string, FileEntry]>; weights: Iterable<string>; fixups?: string | undefined };
}

/** delta.json as one string (small manifests; make-delta writes manifestPieces). */
export function serializeManifest(manifest: ManifestText): string {
  return [...manifestPieces(manifest)].join("");
}

/**
 * delta.json's text in pieces, tables in their iteration order, formatted as
 * JSON.stringify(value, null, 1) formats it. A manifest may be tens of MB (a
 * header of 25 MB is one of its strings): written piece by piece it never
 * exists as one string, nor as one buffer.
 */
export function* manifestPieces(m: ManifestText): Generator<string> {
  const q = JSON.stringify;
  yield `{\n "format": ${q(m.format)},\n "codec": ${q(m.codec)},\n "tool": ${q(m.tool)},\n "base": {\n  "source": ${q(m.base.source)},\n  "tensors": `;
  yield* table(m.base.tensors, "  ", plain);
  yield ',\n  "dropped": ';
  yield* list(m.base.dropped, "  ");
  yield `\n },\n "target": {\n  "source": ${q(m.target.source)},\n  "files": `;
  yield* table(m.target.files, "  ", plain);
  yield ',\n  "tensors": ';
  yield* table(m.target.tensors, "  ", plain);
  yield ',\n  "headers": ';
  yield* table(m.target.headers, "  ", longString);
  if (m.target.index !== undefined) {
    yield `,\n  "index": {\n   "file": ${q(m.target.index.file)},\n   "text": `;
    yield* longString(m.target.index.text);
    yield "\n  }";
  }
  yield '\n },\n "delta": {\n  "files": ';
  yield* table(m.delta.files, "  ", plain);
  yield ',\n  "weights": ';
  yield* list(m.delta.weights, "  ");
  if (m.delta.fixups !== undefined) yield `,\n  "fixups": ${q(m.delta.fixups)}`;
  yield "\n }\n}\n";
}

/** An object of `entries` at nesting `indent`, each value given by `value` at the next level. */
function* table<V>(entries: Iterable<readonly [string, V]>, indent: string, value: (v: V, indent: string) => Iterable<string>): Generator<string> {
  let first = true;
  for (const [key, v] of entries) {
    yield `${first ? "{" : ","}\n${indent} ${JSON.stringify(key)}: `;
    first = false;
    yield* value(v, `${indent} `);
  }
  yield first ? "{}" : `\n${indent}}`;
}

function* list(items: Iterable<string>, indent: string): Generator<string> {
  let first = true;
  for (const item of items) {
    yield `${first ? "[" : ","}\n${indent} ${JSON.stringify(item)}`;
    first = false;
  }
  yield first ? "[]" : `\n${indent}]`;
}

/** A small value, as JSON.stringify(value, null, 1) writes it at this nesting. Its strings hold no raw newline (JSON escapes them). */
function plain(value: unknown, indent: string): string[] {
  return [JSON.stringify(value, null, 1).replaceAll("\n", `\n${indent}`)];
}

/** Characters of a long string quoted per piece. */
const STRING_PIECE = 1 << 20;

/** A string as JSON, in pieces; a piece never ends between the two halves of a surrogate pair (each half alone would be escaped). */
function* longString(text: string): Generator<string> {
  if (text.length <= STRING_PIECE) {
    yield JSON.stringify(text);
    return;
  }
  yield '"';
  for (let at = 0; at < text.length; ) {
    let end = Math.min(at + STRING_PIECE, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    yield JSON.stringify(text.slice(at, end)).slice(1, -1);
    at = end;
  }
  yield '"';
}

/** Parses and checks delta.json; `file` names it in errors. */
export function parseManifest(file: string, text: string): Manifest {
  try {
    return readManifestDocument(file, new JsonCursor(text, MAX_JSON_DEPTH));
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new DeltaError(`${file}: not valid JSON (${err.message})`, { cause: err });
    throw err;
  }
}

/** A tensor entry as read, before the cross-checks (a target tensor's file must have a header). */
interface RawTensorEntry extends TensorEntry {
  file?: string | undefined;
}

interface RawManifest {
  format?: string;
  formatText: string;
  codec?: string;
  codecText: string;
  tool?: string;
  base?: { source?: string; tensors?: Map<string, RawTensorEntry>; dropped?: string[] };
  target?: { source?: string; files?: Map<string, FileEntry>; tensors?: Map<string, RawTensorEntry>; headers?: Map<string, string>; index?: { file?: string; text?: string } | "invalid" };
  /** fixups null: present but not a string. */
  delta?: { files?: Map<string, FileEntry>; weights?: string[]; fixups?: string | null };
}

/**
 * Reads delta.json with its schema in hand, straight into Maps, with no
 * intermediate tree. A manifest is the largest JSON file the tool reads (up
 * to MAX_MANIFEST_BYTES): checking it for duplicate keys, then JSON.parse,
 * then copying into Maps held three forms of it at once (a 54 MB one took
 * 340 MB). Strings are slices of the text, which lives as long as the
 * manifest anyway. Unknown fields are checked as JSON (duplicate keys
 * refused) and skipped. The cross-checks (a tensor's file has a header, a
 * weight file is a delta file) run once everything is read, since an
 * object may list its keys in any order.
 */
function readManifestDocument(file: string, cursor: JsonCursor): Manifest {
  const fail = (what: string): never => {
    throw new DeltaError(`${file}: ${what}; is this a delta-weights manifest, downloaded whole?`);
  };
  const quoted = (value: string) => JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
  const kind = () => cursor.peekKind();

  /** Each key of the object at `depth`; a key given twice is refused, as the strict reader refuses it anywhere. */
  function* keys(depth: number): Generator<string> {
    const seen = new Set<string>();
    for (const key of cursor.objectKeys(depth)) {
      if (seen.has(key)) cursor.fail(`duplicate key ${JSON.stringify(key.slice(0, 100))}`);
      seen.add(key);
      yield key;
    }
  }
  /** The next value if it is a string; otherwise it is checked, skipped, and undefined returned. */
  const optionalString = (depth: number): string | undefined => {
    if (kind() === "string") return cursor.readString();
    cursor.checkValue(depth);
    return undefined;
  };
  /** A non-negative safe integer written as one (no fraction, no exponent); undefined otherwise. */
  const size = (depth: number): number | undefined => {
    if (kind() !== "number") {
      cursor.checkValue(depth);
      return undefined;
    }
    const lexeme = cursor.readNumberLexeme();
    const value = Number(lexeme);
    return /^(0|[1-9][0-9]*)$/.test(lexeme) && Number.isSafeInteger(value) ? value : undefined;
  };
  const names = (depth: number, what: string): string[] => {
    if (kind() !== "array") return fail(`${what} must be a list of names`);
    const out: string[] = [];
    for (const i of cursor.arrayItems(depth)) {
      if (i >= MAX_TENSORS_PER_MODEL) fail(`${what} lists more than ${MAX_TENSORS_PER_MODEL} names, the limit for one model`);
      if (kind() !== "string") fail(`${what} must be a list of names`);
      out.push(cursor.readString());
    }
    return out;
  };
  const files = (depth: number, where: string): Map<string, FileEntry> => {
    if (kind() !== "object") return fail(`${where}.files must be an object`);
    const out = new Map<string, FileEntry>();
    for (const path of keys(depth)) {
      if (out.size >= MAX_TENSORS_PER_MODEL) fail(`${where}.files lists more than ${MAX_TENSORS_PER_MODEL} files, the limit for one model`);
      if (!isSafeRelativePath(path)) fail(`${where}.files has a path that is not a plain relative path inside the directory: ${quoted(path)}`);
      const bad = () => fail(`${where}.files[${quoted(path)}] needs a size and a sha256`);
      if (kind() !== "object") bad();
      let entrySize: number | undefined;
      let sha256: string | undefined;
      for (const field of keys(depth + 1)) {
        if (field === "size") entrySize = size(depth + 1);
        else if (field === "sha256") sha256 = optionalString(depth + 1);
        else cursor.checkValue(depth + 1);
      }
      if (entrySize === undefined || sha256 === undefined || !SHA256.test(sha256)) return bad();
      out.set(path, { size: entrySize, sha256 });
    }
    return out;
  };
  /** Base tensors, or (withFile) target tensors whose `file` is checked once the headers are read. */
  const tensors = (depth: number, where: string, withFile: boolean): Map<string, RawTensorEntry> => {
    if (kind() !== "object") return fail(`${where}.tensors must be an object`);
    const out = new Map<string, RawTensorEntry>();
    const dims: number[] = [];
    // The Map itself catches a name given twice: a manifest's largest objects get no second set of keys.
    for (const name of cursor.objectKeys(depth)) {
      if (out.has(name)) cursor.fail(`duplicate key ${JSON.stringify(name.slice(0, 100))}`);
      if (out.size >= MAX_TENSORS_PER_MODEL) fail(`${where}.tensors lists more than ${MAX_TENSORS_PER_MODEL} tensors, the limit for one model`);
      const bad = () => fail(`${where}.tensors[${quoted(name)}] needs a dtype, shape and sha256`);
      if (kind() !== "object") bad();
      let dtype: string | undefined;
      let shape: number[] | undefined;
      let sha256: string | undefined;
      let entryFile: string | undefined;
      for (const field of keys(depth + 1)) {
        if (field === "dtype") dtype = optionalString(depth + 1);
        else if (field === "sha256") sha256 = optionalString(depth + 1);
        else if (field === "file" && withFile) entryFile = optionalString(depth + 1);
        else if (field === "shape") {
          if (kind() !== "array") bad();
          dims.length = 0;
          for (const i of cursor.arrayItems(depth + 2)) {
            // More dimensions than any tensor has is a forged entry (and its dims would be echoed in messages).
            if (i >= MAX_RANK) fail(`${where}.tensors[${quoted(name)}] has more than ${MAX_RANK} dimensions`);
            const dim = size(depth + 2);
            if (dim === undefined) bad();
            dims.push(dim!);
          }
          // A copy of exactly its length: an array grown by push keeps room for 17 items.
          shape = dims.slice();
        } else {
          cursor.checkValue(depth + 1);
        }
      }
      if (!isDType(dtype) || shape === undefined || sha256 === undefined || !SHA256.test(sha256)) return bad();
      // The dtype as one shared string, not a copy per tensor.
      const canonical = DTYPES[DTYPES.indexOf(dtype)]!;
      out.set(name, withFile ? { dtype: canonical, shape, sha256, file: entryFile } : { dtype: canonical, shape, sha256 });
    }
    return out;
  };
  /** What a non-string field held, for the message (as String() of the JSON value told it before). */
  const describeValue = (depth: number): string => {
    const start = cursor.pos;
    const k = kind();
    cursor.checkValue(depth);
    if (k === "object") return "[object Object]";
    const text = cursor.text.slice(cursor.pos - Math.min(cursor.pos - start, 100), cursor.pos).trim();
    return k === "number" ? String(Number(text)) : text;
  };

  if (kind() !== "object") return fail("not a JSON object");
  const raw: RawManifest = { formatText: "undefined", codecText: "undefined" };
  for (const key of keys(1)) {
    if (key === "format") {
      if (kind() === "string") raw.formatText = raw.format = cursor.readString();
      else raw.formatText = describeValue(1);
    } else if (key === "codec") {
      if (kind() === "string") raw.codecText = raw.codec = cursor.readString();
      else raw.codecText = describeValue(1);
    } else if (key === "tool") {
      raw.tool = optionalString(1);
    } else if (key === "base" && kind() === "object") {
      const base: NonNullable<RawManifest["base"]> = (raw.base = {});
      for (const field of keys(2)) {
        if (field === "source") base.source = optionalString(2);
        else if (field === "tensors") base.tensors = tensors(3, "base", false);
        else if (field === "dropped") base.dropped = names(3, "base.dropped");
        else cursor.checkValue(2);
      }
    } else if (key === "target" && kind() === "object") {
      const target: NonNullable<RawManifest["target"]> = (raw.target = {});
      for (const field of keys(2)) {
        if (field === "source") target.source = optionalString(2);
        else if (field === "files") target.files = files(3, "target");
        else if (field === "tensors") target.tensors = tensors(3, "target", true);
        else if (field === "headers") {
          if (kind() !== "object") fail("target.headers must be an object");
          const headers = (target.headers = new Map<string, string>());
          for (const path of keys(3)) {
            if (kind() !== "string") fail(`target.headers[${quoted(path)}] must be a string`);
            headers.set(path, cursor.readString());
          }
        } else if (field === "index") {
          if (kind() !== "object") {
            cursor.checkValue(2);
            target.index = "invalid";
            continue;
          }
          const index: { file?: string; text?: string } = {};
          let valid = true;
          for (const f of keys(3)) {
            if (f !== "file" && f !== "text") cursor.checkValue(3);
            else if (kind() === "string") index[f] = cursor.readString();
            else {
              cursor.checkValue(3);
              valid = false;
            }
          }
          target.index = valid ? index : "invalid";
        } else cursor.checkValue(2);
      }
    } else if (key === "delta" && kind() === "object") {
      const delta: NonNullable<RawManifest["delta"]> = (raw.delta = {});
      for (const field of keys(2)) {
        if (field === "files") delta.files = files(3, "delta");
        else if (field === "weights") delta.weights = names(3, "delta.weights");
        else if (field === "fixups") delta.fixups = optionalString(2) ?? null;
        else cursor.checkValue(2);
      }
    } else {
      // unknown fields, and base/target/delta that are not objects (refused below)
      cursor.checkValue(1);
    }
  }
  cursor.expectEnd();
  return checkManifest(raw, fail, quoted);
}

/** The rules that span the sections of a manifest read by readManifestDocument. */
function checkManifest(raw: RawManifest, fail: (what: string) => never, quoted: (value: string) => string): Manifest {
  const { base, target, delta } = raw;
  if (raw.format !== MANIFEST_FORMAT) return fail(`format is ${quoted(raw.formatText)}, expected "${MANIFEST_FORMAT}"`);
  if (raw.codec !== "add" && raw.codec !== "xor") return fail(`unknown codec ${quoted(raw.codecText)}`);
  if (raw.tool === undefined) return fail("tool must be a string");
  if (base === undefined || target === undefined || delta === undefined) return fail("base, target and delta must be objects");

  if (base.source === undefined) return fail("base.source must be a string");
  if (base.tensors === undefined) return fail("base.tensors must be an object");
  const baseTensors: Map<string, TensorEntry> = base.tensors;
  if (base.dropped === undefined) return fail("base.dropped must be a list of names");

  if (target.source === undefined) return fail("target.source must be a string");
  if (target.files === undefined) return fail("target.files must be an object");
  if (target.headers === undefined) return fail("target.headers must be an object");
  const targetFiles = target.files;
  // A delta recovers at least one file; with none, "verified" would be said of nothing.
  if (targetFiles.size === 0) return fail("target.files is empty: there is nothing to recover");
  const headers = target.headers;
  for (const path of headers.keys()) {
    if (!targetFiles.has(path)) fail(`target.headers names ${quoted(path)}, which target.files lacks`);
  }
  if (target.tensors === undefined) return fail("target.tensors must be an object");
  for (const [name, e] of target.tensors) {
    if (e.file === undefined || !headers.has(e.file)) return fail(`target tensor ${quoted(name)} is in ${quoted(String(e.file))}, which has no header`);
  }
  // Every entry has its file now: the map is the target's as read, not a copy.
  const targetTensors = target.tensors as Map<string, TargetTensorEntry>;
  let index: Manifest["target"]["index"];
  if (target.index !== undefined) {
    const i = target.index;
    if (i === "invalid" || i.file === undefined || i.text === undefined || !targetFiles.has(i.file)) return fail("target.index must name a target file and hold its text");
    index = { file: i.file, text: i.text };
  }

  if (delta.files === undefined) return fail("delta.files must be an object");
  if (delta.weights === undefined) return fail("delta.weights must be a list of names");
  const deltaFiles = delta.files;
  const weights = delta.weights;
  if (!weights.every((f) => deltaFiles.has(f))) fail("delta.weights must list files of delta.files");
  const fixups = delta.fixups;
  if (fixups !== undefined && (fixups === null || !deltaFiles.has(fixups) || weights.includes(fixups))) {
    fail("delta.fixups must name a file of delta.files that is not a weight file");
  }
  return {
    format: MANIFEST_FORMAT,
    codec: raw.codec,
    tool: raw.tool,
    base: { source: base.source, tensors: baseTensors, dropped: base.dropped },
    target: { source: target.source, files: targetFiles, tensors: targetTensors, headers, ...(index === undefined ? {} : { index }) },
    delta: { files: deltaFiles, weights, ...(fixups === undefined ? {} : { fixups }) },
  };
}
