/**
 * The safetensors header: decode with full validation, and encode exactly as
 * Hugging Face's serializer does. Pure: no file system, bytes in, bytes out.
 *
 * Layout: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON (padded
 * with spaces), then the tensor data. The validation rules are those of the
 * reference implementation (huggingface/safetensors, `tensor.rs`:
 * `read_metadata` and `Metadata::validate`), plus the checks `JSON.parse`
 * and serde's maps would skip (duplicate names).
 */
import { DTYPES, dtypeBytes, dtypeRank, isDType, type DType } from "../dtypes.js";
import { SafetensorsError } from "../errors.js";
import { compareCodePoints } from "../text.js";
import { MAX_JSON_DEPTH, MAX_METADATA_ENTRIES, MAX_RANK, MAX_SAFETENSORS_HEADER_BYTES, MAX_TENSORS_PER_FILE } from "../limits.js";
import { JsonCursor, JsonSyntaxError } from "../json.js";

export interface HeaderTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offsets relative to the start of the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** `__metadata__`, or null when absent / null. Use `metadataEntries` for the exact key order. */
  metadata: Record<string, string> | null;
  /** `__metadata__` entries in the order the file lists them (null when absent / null). */
  metadataEntries: [string, string][] | null;
  /** In data-offset order. */
  tensors: HeaderTensor[];
  /** JSON bytes including padding (the u64 at the start of the file). */
  headerLength: number;
  /** 8 + headerLength: where tensor data begins. */
  dataStart: number;
  /** The exact header JSON text, padding included. */
  text: string;
}

export type MetadataInput = Record<string, string> | readonly (readonly [string, string])[] | null | undefined;

const U64_MAX = (1n << 64n) - 1n;
const LENGTH_PREFIX_BYTES = 8;
const METADATA_KEY = "__metadata__";
const ENTRY_FIELDS = ["dtype", "shape", "data_offsets"] as const;

/**
 * Reads the u64 header length and checks it, as a BigInt, against the cap and
 * the file size before it becomes a number: a forged length never drives an
 * allocation.
 */
export function readHeaderLength(file: string, first8: Uint8Array, fileSize: number | bigint): number {
  const size = BigInt(fileSize);
  if (size < BigInt(LENGTH_PREFIX_BYTES) || first8.length < LENGTH_PREFIX_BYTES) {
    throw new SafetensorsError("file-too-short", file, `file is ${size} bytes, shorter than the 8-byte header length: not a safetensors file`);
  }
  const view = new DataView(first8.buffer, first8.byteOffset, LENGTH_PREFIX_BYTES);
  const length = view.getBigUint64(0, true);
  if (length === 0n) {
    throw new SafetensorsError("header-empty", file, "header length is 0: a header is at least \"{}\"");
  }
  if (length > BigInt(MAX_SAFETENSORS_HEADER_BYTES)) {
    throw new SafetensorsError("header-too-large", file, `header length ${length} exceeds the ${MAX_SAFETENSORS_HEADER_BYTES}-byte limit`);
  }
  if (length > size - BigInt(LENGTH_PREFIX_BYTES)) {
    throw new SafetensorsError("header-past-end", file, `header length ${length} runs past the end of the file (${size} bytes)`);
  }
  return Number(length);
}

/**
 * Decodes and validates the header JSON (the N bytes after the length) of a
 * file of `fileSize` bytes. Every rule is checked here, before any tensor
 * byte is read.
 */
export function parseHeader(file: string, headerJson: Uint8Array, fileSize: number | bigint): SafetensorsHeader {
  const header = parseHeaderJson(file, headerJson);
  const dataBytes = BigInt(fileSize) - BigInt(header.dataStart);
  const last = header.tensors[header.tensors.length - 1];
  const dataEnd = BigInt(last?.end ?? 0);
  if (dataEnd > dataBytes) {
    throw new SafetensorsError("data-past-end",
      file,
      `data_offsets end at ${dataEnd}, past the end of the file (the data section has ${dataBytes} bytes): the file is truncated or the offsets are wrong`,
      last?.name,
    );
  }
  if (dataEnd < dataBytes) {
    throw new SafetensorsError("trailing-bytes", file, `${dataBytes - dataEnd} trailing bytes after the last tensor: the data must end exactly at the end of the file`);
  }
  return header;
}

/**
 * Every rule that does not depend on the file size. The data section of a
 * file with this header must be exactly `tensors.at(-1).end` bytes (0 if none).
 */
export function parseHeaderJson(file: string, headerJson: Uint8Array): SafetensorsHeader {
  const headerLength = headerJson.length;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerJson);
  } catch (err) {
    throw new SafetensorsError("header-not-utf8", file, "header is not valid UTF-8", undefined, { cause: err });
  }
  let metadataEntries: [string, string][] | null;
  let tensors: HeaderTensor[];
  try {
    ({ metadataEntries, tensors } = readHeaderDocument(file, new JsonCursor(text, MAX_JSON_DEPTH)));
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new SafetensorsError("header-not-json", file, `header is not valid JSON: ${err.message}`, undefined, { cause: err });
    throw err;
  }

  // The reference sorts by (begin, end) then requires contiguity from 0.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expectedBegin = 0;
  for (const t of tensors) {
    if (t.begin !== expectedBegin) {
      if (expectedBegin === 0) {
        throw new SafetensorsError("offsets-hole", file, `data_offsets begin at ${t.begin}, but the first tensor must begin at 0 (a hole at the start of the data)`, t.name);
      }
      throw t.begin < expectedBegin
        ? new SafetensorsError("offsets-overlap", file, `data_offsets [${t.begin}, ${t.end}] overlap the previous tensor, which ends at ${expectedBegin}`, t.name)
        : new SafetensorsError("offsets-hole", file, `data_offsets [${t.begin}, ${t.end}] leave a hole of ${t.begin - expectedBegin} bytes after the previous tensor, which ends at ${expectedBegin}`, t.name);
    }
    expectedBegin = t.end;
  }

  return {
    metadata: metadataEntries === null ? null : entriesToRecord(metadataEntries),
    metadataEntries,
    tensors,
    headerLength,
    dataStart: LENGTH_PREFIX_BYTES + headerLength,
    text,
  };
}

/**
 * Reads the header document with its schema in hand: only names, dtypes,
 * dims, offsets and metadata are kept; fields the reference ignores are
 * skipped without being built, so memory follows the tensor count, not
 * whatever a forged header packs into it.
 */
function readHeaderDocument(file: string, cursor: JsonCursor): { metadataEntries: [string, string][] | null; tensors: HeaderTensor[] } {
  const rootKind = cursor.peekKind();
  if (rootKind !== "object") throw new SafetensorsError("header-not-object", file, `header is a JSON ${rootKind}, not an object`);
  let metadataEntries: [string, string][] | null = null;
  let sawMetadata = false;
  const names = new Set<string>();
  const tensors: HeaderTensor[] = [];
  for (const key of cursor.objectKeys(1)) {
    if (key === METADATA_KEY) {
      if (sawMetadata) throw new SafetensorsError("metadata-invalid", file, "header has __metadata__ twice");
      sawMetadata = true;
      metadataEntries = readMetadata(file, cursor);
    } else {
      if (names.has(key)) throw new SafetensorsError("tensor-duplicate", file, "is listed twice in the header (duplicate tensor name)", key);
      if (tensors.length >= MAX_TENSORS_PER_FILE) {
        throw new SafetensorsError("too-many-tensors", file, `header lists more than ${MAX_TENSORS_PER_FILE} tensors, the limit for one file (real files hold under 2,000; a larger model is sharded)`);
      }
      names.add(key);
      tensors.push(readEntry(file, key, cursor));
    }
  }
  cursor.expectEnd();
  return { metadataEntries, tensors };
}

function readMetadata(file: string, cursor: JsonCursor): [string, string][] | null {
  const kind = cursor.peekKind();
  if (kind === "null") {
    cursor.skipValue(1);
    return null;
  }
  if (kind !== "object") throw new SafetensorsError("metadata-invalid", file, `__metadata__ is a JSON ${kind}: it must be an object of strings`);
  const entries: [string, string][] = [];
  const keys = new Set<string>();
  for (const key of cursor.objectKeys(2)) {
    if (keys.has(key)) throw new SafetensorsError("metadata-invalid", file, `__metadata__ has the key ${JSON.stringify(key)} twice`);
    if (entries.length >= MAX_METADATA_ENTRIES) throw new SafetensorsError("metadata-invalid", file, `__metadata__ has more than ${MAX_METADATA_ENTRIES} entries, the limit`);
    keys.add(key);
    const valueKind = cursor.peekKind();
    if (valueKind !== "string") {
      throw new SafetensorsError("metadata-invalid", file, `__metadata__ value of ${JSON.stringify(key)} is a JSON ${valueKind}: metadata values must be strings`);
    }
    entries.push([key, cursor.readString()]);
  }
  return entries;
}

function readEntry(file: string, name: string, cursor: JsonCursor): HeaderTensor {
  const kind = cursor.peekKind();
  if (kind !== "object") {
    throw new SafetensorsError("entry-malformed", file, `entry is a JSON ${kind}, not an object with dtype, shape and data_offsets`, name);
  }
  let dtypeText: string | undefined;
  let dims: bigint[] | undefined;
  let offsets: bigint[] | undefined;
  const seen = new Set<string>();
  for (const field of cursor.objectKeys(2)) {
    if (seen.has(field)) throw new SafetensorsError("entry-malformed", file, `entry has the field ${JSON.stringify(field)} twice`, name);
    seen.add(field);
    if (field === "dtype") {
      const k = cursor.peekKind();
      if (k !== "string") throw new SafetensorsError("entry-malformed", file, `dtype is a JSON ${k}, not a string`, name);
      dtypeText = cursor.readString();
    } else if (field === "shape") {
      const k = cursor.peekKind();
      if (k !== "array") throw new SafetensorsError("entry-malformed", file, `shape is a JSON ${k}, not an array`, name);
      dims = [];
      for (const i of cursor.arrayItems(3)) {
        if (i >= MAX_RANK) throw new SafetensorsError("shape-invalid", file, `shape has more than ${MAX_RANK} dimensions, the limit`, name);
        dims.push(unsignedInteger(file, name, "shape", cursor));
      }
    } else if (field === "data_offsets") {
      const k = cursor.peekKind();
      if (k !== "array") throw new SafetensorsError("entry-malformed", file, `data_offsets is a JSON ${k}, not an array`, name);
      offsets = [];
      for (const i of cursor.arrayItems(3)) {
        if (i >= 2) throw new SafetensorsError("entry-malformed", file, "data_offsets has more than 2 numbers: it must be exactly [begin, end]", name);
        offsets.push(unsignedInteger(file, name, "data_offsets", cursor));
      }
    } else {
      // Unknown fields are ignored, as serde does for the reference `TensorInfo`
      // (it has no deny_unknown_fields); they are checked as JSON, never built.
      cursor.skipValue(2);
    }
  }
  for (const field of ENTRY_FIELDS) {
    if (!seen.has(field)) throw new SafetensorsError("entry-malformed", file, `entry has no "${field}"`, name);
  }
  const dtype = dtypeText as string;
  if (!isDType(dtype)) {
    throw new SafetensorsError("dtype-unknown", file, `has unknown dtype ${JSON.stringify(dtype)} (dtypes are upper case: ${DTYPES.join(", ")})`, name);
  }
  const shape = dims as bigint[];
  const offsetPair = offsets as bigint[];
  if (offsetPair.length !== 2) {
    throw new SafetensorsError("entry-malformed", file, `data_offsets has ${offsetPair.length} number${offsetPair.length === 1 ? "" : "s"}: it must be exactly [begin, end]`, name);
  }
  return checkEntry(file, name, dtype, shape, offsetPair[0] as bigint, offsetPair[1] as bigint);
}

function checkEntry(file: string, name: string, dtype: DType, dims: bigint[], beginBig: bigint, endBig: bigint): HeaderTensor {
  if (endBig < beginBig) throw new SafetensorsError("offsets-reversed", file, `data_offsets [${beginBig}, ${endBig}] end before they begin`, name);
  // numel x dtype size, each step checked against u64 overflow like the
  // reference's checked_mul fold (so [2^32, 2^32, 0] is refused there too,
  // and a product that would wrap to 0 in u64 never passes as 0).
  let numel = 1n;
  for (const dim of dims) {
    numel *= dim;
    if (numel > U64_MAX) throw new SafetensorsError("shape-overflow", file, `shape [${dims.join(", ")}] has more elements than fit in 64 bits (overflow)`, name);
  }
  const byteLength = numel * BigInt(dtypeBytes(dtype));
  if (byteLength > U64_MAX) throw new SafetensorsError("shape-overflow", file, `shape [${dims.join(", ")}] of ${dtype} is more bytes than fit in 64 bits (overflow)`, name);
  if (endBig - beginBig !== byteLength) {
    throw new SafetensorsError("offsets-size-mismatch",
      file,
      `data_offsets [${beginBig}, ${endBig}] span ${endBig - beginBig} bytes, but ${dtype} [${dims.join(", ")}] needs ${byteLength}`,
      name,
    );
  }
  // From here every number is at most the span, which is checked against the
  // file size later; refuse what cannot be a JS number first.
  for (const dim of dims) {
    if (dim > BigInt(Number.MAX_SAFE_INTEGER)) throw new SafetensorsError("shape-overflow", file, `shape dimension ${dim} is larger than 2^53-1`, name);
  }
  if (endBig > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SafetensorsError("offsets-too-large", file, `data_offsets [${beginBig}, ${endBig}] point past 2^53-1 bytes: past the end of any file`, name);
  }
  return { name, dtype, shape: dims.map(Number), begin: Number(beginBig), end: Number(endBig) };
}

/** A JSON integer lexeme in [0, 2^64-1], as serde reads a `usize`: no sign, fraction or exponent. */
function unsignedInteger(file: string, name: string, field: string, cursor: JsonCursor): bigint {
  const kind = cursor.peekKind();
  if (kind !== "number") {
    throw new SafetensorsError("entry-malformed", file, `${field} holds a JSON ${kind}, not a non-negative integer`, name);
  }
  const lexeme = cursor.readNumberLexeme();
  if (lexeme.startsWith("-")) throw new SafetensorsError("entry-malformed", file, `${field} holds the negative number ${lexeme}`, name);
  if (!/^[0-9]+$/.test(lexeme)) throw new SafetensorsError("entry-malformed", file, `${field} holds ${lexeme}, not an integer`, name);
  const n = BigInt(lexeme);
  if (n > U64_MAX) throw new SafetensorsError("entry-malformed", file, `${field} holds ${lexeme}, larger than a 64-bit unsigned integer`, name);
  return n;
}

function entriesToRecord(entries: readonly (readonly [string, string])[]): Record<string, string> {
  // A null prototype: a key named "__proto__" is just a key.
  const record: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, v] of entries) record[k] = v;
  return record;
}

// ---------------------------------------------------------------------------
// Encoding

/**
 * Orders tensors as the reference serializer does: dtype descending in the
 * `Dtype` enum order (which is alignment order), then name ascending by
 * bytes (UTF-8 byte order equals code point order).
 */
export function compareForWriting(a: { name: string; dtype: DType }, b: { name: string; dtype: DType }): number {
  return dtypeRank(b.dtype) - dtypeRank(a.dtype) || compareCodePoints(a.name, b.name);
}

/**
 * The header Hugging Face's serializer writes for these tensors: the 8-byte
 * length, compact JSON (`__metadata__` first, its keys in the given order;
 * each entry `dtype`, `shape`, `data_offsets`), space padding so that the
 * data starts at a multiple of 8. Returns the tensors in the order their
 * bytes must follow the header, with their offsets.
 */
export function encodeHeader(
  tensors: readonly { name: string; dtype: DType; shape: readonly number[] }[],
  metadata?: MetadataInput,
): { bytes: Uint8Array; tensors: HeaderTensor[] } {
  if (tensors.length > MAX_TENSORS_PER_FILE) {
    throw new SafetensorsError("write-refused", "(header being written)", `would list ${tensors.length} tensors, more than the ${MAX_TENSORS_PER_FILE} readers accept in one file: write more shards`);
  }
  const ordered = [...tensors].sort(compareForWriting);
  const names = new Set<string>();
  const placed: HeaderTensor[] = [];
  let offset = 0;
  for (const t of ordered) {
    if (names.has(t.name)) throw new SafetensorsError("write-refused", "(header being written)", "is given twice", t.name);
    if (t.name === METADATA_KEY) throw new SafetensorsError("write-refused", "(header being written)", "cannot be a tensor name: __metadata__ is reserved", t.name);
    names.add(t.name);
    let numel = 1;
    for (const dim of t.shape) {
      if (!Number.isSafeInteger(dim) || dim < 0) throw new SafetensorsError("write-refused", "(header being written)", `has an invalid dimension ${dim}`, t.name);
      numel *= dim;
    }
    const byteLength = numel * dtypeBytes(t.dtype);
    if (!Number.isSafeInteger(byteLength) || !Number.isSafeInteger(offset + byteLength)) {
      throw new SafetensorsError("write-refused", "(header being written)", "is too large to write", t.name);
    }
    placed.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end: offset + byteLength });
    offset += byteLength;
  }

  const parts: string[] = [];
  const metadataEntries = metadata == null ? null : Array.isArray(metadata) ? metadata : Object.entries(metadata);
  if (metadataEntries !== null) {
    const fields = metadataEntries.map(([k, v]) => `${jsonString(k)}:${jsonString(v)}`);
    parts.push(`"__metadata__":{${fields.join(",")}}`);
  }
  for (const t of placed) {
    parts.push(`${jsonString(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(",")}],"data_offsets":[${t.begin},${t.end}]}`);
  }
  const json = `{${parts.join(",")}}`;
  return { bytes: withLengthPrefix(json, true), tensors: placed };
}

/** The length prefix plus the given header text unchanged (a publisher's exact header). */
export function encodeHeaderVerbatim(text: string): Uint8Array {
  return withLengthPrefix(text, false);
}

function withLengthPrefix(json: string, pad: boolean): Uint8Array {
  const body = new TextEncoder().encode(json);
  const padding = pad ? (8 - (body.length % 8)) % 8 : 0;
  const length = body.length + padding;
  if (length > MAX_SAFETENSORS_HEADER_BYTES) {
    throw new SafetensorsError("write-refused", "(header being written)", `header would be ${length} bytes, over the ${MAX_SAFETENSORS_HEADER_BYTES}-byte limit readers enforce`);
  }
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + length);
  new DataView(out.buffer).setBigUint64(0, BigInt(length), true);
  out.set(body, LENGTH_PREFIX_BYTES);
  out.fill(0x20, LENGTH_PREFIX_BYTES + body.length);
  return out;
}

/**
 * A JSON string exactly as serde_json writes it: `"` and `\` escaped, control
 * characters below 0x20 as \b \t \n \f \r or \u00xx (lower-case hex),
 * everything else (non-ASCII, `/`, DEL) as is. `JSON.stringify` does the
 * same for well-formed strings; it differs only on lone surrogates, which
 * serde_json cannot hold (Rust strings are valid UTF-8), so they are refused.
 */
export function jsonString(value: string): string {
  if (hasLoneSurrogate(value)) {
    throw new SafetensorsError("write-refused", "(header being written)", `the string ${JSON.stringify(value)} has a lone surrogate: not valid UTF-8`);
  }
  return JSON.stringify(value);
}

function hasLoneSurrogate(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
      else return true;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return true;
    }
  }
  return false;
}
