/**
 * EasyLM's streaming checkpoint (Koala's diffs): an extension-less file of
 * concatenated msgpack records, each written by
 * StreamingCheckpointer.save_train_state_to_file as
 * `Packer().pack((key_path, flax.serialization.to_bytes(array)))`:
 *
 *   array(2) [ array(n) of str (the key path),
 *              bin (  ext type 1 (flax's ndarray) (
 *                       array(3) [ array of uint (shape), str (dtype name), bin (C-order bytes) ] ) ) ]
 *
 * There is no index: the file is planned from one pass over the record
 * headers, each read on its own (a few hundred bytes), the data skipped.
 * Every length is checked against its container and the file before it is
 * trusted. No file system here.
 */
import type { DType } from "../dtypes.js";
import { dtypeBytes } from "../dtypes.js";
import { DeltaError, type EasyLmRule } from "../errors.js";
import { MAX_EASYLM_KEY_PART_BYTES, MAX_EASYLM_KEY_PARTS, MAX_RANK, MAX_TENSORS_PER_MODEL } from "../limits.js";

/** Reads exactly `length` bytes at `position`. */
export type ReadAt = (position: number, length: number) => Promise<Uint8Array>;

export interface EasyLmRecord {
  /** The key path's parts: ["transformer", "h", "0", "attention", "wq", "kernel"]. */
  key: string[];
  dtype: DType;
  shape: number[];
  /** File position of the array's first byte. */
  dataStart: number;
  byteLength: number;
}

/** flax's dtype names (numpy's, and JAX's bfloat16) for the dtypes a checkpoint of weights holds. */
const DTYPES: Readonly<Record<string, DType>> = { float16: "F16", bfloat16: "BF16", float32: "F32", float64: "F64" };

/**
 * Bytes read for one record's header (a key path of a few short names, a
 * shape, a dtype name): also how much of a file's start recognition reads.
 */
export const RECORD_HEADER_BYTES = 4096;

function easyLmError(file: string, rule: EasyLmRule, problem: string): DeltaError {
  return new DeltaError(`Failed to read ${file}: ${problem}`, { rule });
}

/**
 * Whether a file's first bytes are an EasyLM streaming record: a 2-array
 * whose first element is an array of strings and whose second is a bin.
 * `head`: the file's first RECORD_HEADER_BYTES (or all of a smaller file).
 */
export function looksLikeEasyLmCheckpoint(head: Uint8Array): boolean {
  try {
    parseRecordHeader(head, 0, Number.MAX_SAFE_INTEGER);
    return true;
  } catch {
    return false;
  }
}

/** Every record of the file, in file order, from one pass over their headers. */
export async function scanEasyLmCheckpoint(read: ReadAt, size: number, label: string): Promise<EasyLmRecord[]> {
  const records: EasyLmRecord[] = [];
  const seen = new Set<string>();
  for (let position = 0; position < size; ) {
    if (records.length >= MAX_TENSORS_PER_MODEL) throw easyLmError(label, "too-many-records", `more than ${MAX_TENSORS_PER_MODEL} records, the limit for one model`);
    const head = await read(position, Math.min(RECORD_HEADER_BYTES, size - position));
    let parsed: ParsedHeader;
    try {
      parsed = parseRecordHeader(head, position, size);
    } catch (err) {
      if (err instanceof HeaderProblem) throw easyLmError(label, err.rule, `the record at byte ${position}${records.length === 0 ? "" : ` (after "${records[records.length - 1]!.key.join("/")}")`} ${err.message}`);
      throw err;
    }
    const path = parsed.record.key.join("/");
    if (seen.has(path)) throw easyLmError(label, "record-duplicate", `"${path}" is stored twice`);
    seen.add(path);
    records.push(parsed.record);
    position = parsed.end;
  }
  if (records.length === 0) throw easyLmError(label, "no-records", "it holds no records");
  return records;
}

class HeaderProblem extends Error {
  constructor(readonly rule: EasyLmRule, message: string) {
    super(message);
  }
}

interface ParsedHeader {
  record: EasyLmRecord;
  /** File position just past the record. */
  end: number;
}

/** Parses the record starting at file position `base` from `bytes` (its first bytes); `fileSize` bounds every length. */
function parseRecordHeader(bytes: Uint8Array, base: number, fileSize: number): ParsedHeader {
  const r = new Cursor(bytes);
  if (r.arrayLength() !== 2) throw new HeaderProblem("record-malformed", "is not a (key, value) pair");
  const parts = r.arrayLength();
  if (parts < 1 || parts > MAX_EASYLM_KEY_PARTS) throw new HeaderProblem("record-malformed", `has a key path of ${parts} parts`);
  const key: string[] = [];
  for (let i = 0; i < parts; i++) key.push(r.str(MAX_EASYLM_KEY_PART_BYTES));
  const valueLength = r.binLength();
  const valueStart = base + r.at;
  const end = valueStart + valueLength;
  if (end > fileSize) throw new HeaderProblem("record-truncated", `"${key.join("/")}" runs past the end of the file (${end - fileSize} bytes missing): the file is truncated`);
  // flax's to_bytes of one array: ext type 1 around (shape, dtype, bytes).
  const tag = r.peek();
  if ((tag >= 0x80 && tag <= 0x8f) || tag === 0xde || tag === 0xdf) throw new HeaderProblem("record-unsupported", `"${key.join("/")}" is a chunked array (flax splits arrays over 1 GiB): not supported`);
  const ext = r.ext();
  if (ext.type !== 1) throw new HeaderProblem("record-unsupported", `"${key.join("/")}" is msgpack extension type ${ext.type}, not flax's ndarray (1)`);
  if (base + r.at + ext.length !== end) throw new HeaderProblem("record-malformed", `"${key.join("/")}": its array does not fill its value exactly`);
  if (r.arrayLength() !== 3) throw new HeaderProblem("record-malformed", `"${key.join("/")}": the array is not (shape, dtype, bytes)`);
  const rank = r.arrayLength();
  if (rank > MAX_RANK) throw new HeaderProblem("record-malformed", `"${key.join("/")}" has ${rank} dimensions`);
  const shape: number[] = [];
  let numel = 1;
  for (let i = 0; i < rank; i++) {
    const d = r.uint();
    shape.push(d);
    numel *= d;
    if (!Number.isSafeInteger(numel)) throw new HeaderProblem("record-too-large", `"${key.join("/")}" has a shape too large to address`);
  }
  const dtypeName = r.str(32);
  const dtype = DTYPES[dtypeName];
  if (dtype === undefined) throw new HeaderProblem("record-unsupported", `"${key.join("/")}" is ${JSON.stringify(dtypeName)}, not a float16, bfloat16, float32 or float64 array`);
  const dataLength = r.binLength();
  const dataStart = base + r.at;
  if (dataStart + dataLength !== end) throw new HeaderProblem("record-malformed", `"${key.join("/")}": its bytes do not end where its value does`);
  if (dataLength !== numel * dtypeBytes(dtype)) throw new HeaderProblem("record-malformed", `"${key.join("/")}" holds ${dataLength} bytes, but [${shape.join(", ")}] ${dtypeName} is ${numel * dtypeBytes(dtype)}`);
  return { record: { key, dtype, shape, dataStart, byteLength: dataLength }, end };
}

/** Just enough msgpack to read record headers, every read bounds-checked. */
class Cursor {
  at = 0;
  constructor(private readonly bytes: Uint8Array) {}

  peek(): number {
    if (this.at >= this.bytes.length) throw new HeaderProblem("record-malformed", "has a header longer than a record header can be, or the file ends inside it");
    return this.bytes[this.at]!;
  }

  private byte(): number {
    const b = this.peek();
    this.at++;
    return b;
  }

  private be(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + this.byte();
    return v;
  }

  arrayLength(): number {
    const t = this.byte();
    if (t >= 0x90 && t <= 0x9f) return t & 0x0f;
    if (t === 0xdc) return this.be(2);
    if (t === 0xdd) return this.be(4);
    throw new HeaderProblem("record-malformed", `has msgpack type 0x${t.toString(16)} where an array belongs`);
  }

  str(maxBytes: number): string {
    const t = this.byte();
    let n: number;
    if (t >= 0xa0 && t <= 0xbf) n = t & 0x1f;
    else if (t === 0xd9) n = this.be(1);
    else if (t === 0xda) n = this.be(2);
    else if (t === 0xdb) n = this.be(4);
    else throw new HeaderProblem("record-malformed", `has msgpack type 0x${t.toString(16)} where a string belongs`);
    if (n > maxBytes) throw new HeaderProblem("record-too-large", `has a ${n}-byte name`);
    if (this.at + n > this.bytes.length) throw new HeaderProblem("record-malformed", "has a header longer than a record header can be, or the file ends inside it");
    const text = new TextDecoder("utf-8", { fatal: true }).decode(this.bytes.subarray(this.at, this.at + n));
    this.at += n;
    return text;
  }

  binLength(): number {
    const t = this.byte();
    if (t === 0xc4) return this.be(1);
    if (t === 0xc5) return this.be(2);
    if (t === 0xc6) return this.be(4);
    throw new HeaderProblem("record-malformed", `has msgpack type 0x${t.toString(16)} where bytes belong`);
  }

  ext(): { type: number; length: number } {
    const t = this.byte();
    const fixed: Record<number, number> = { 0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16 };
    let length: number;
    if (fixed[t] !== undefined) length = fixed[t];
    else if (t === 0xc7) length = this.be(1);
    else if (t === 0xc8) length = this.be(2);
    else if (t === 0xc9) length = this.be(4);
    else throw new HeaderProblem("record-malformed", `has msgpack type 0x${t.toString(16)} where flax's array extension belongs`);
    const type = this.byte();
    return { type: type > 127 ? type - 256 : type, length };
  }

  uint(): number {
    const t = this.byte();
    if (t <= 0x7f) return t;
    if (t === 0xcc) return this.be(1);
    if (t === 0xcd) return this.be(2);
    if (t === 0xce) return this.be(4);
    if (t === 0xcf) {
      const v = this.be(8);
      if (!Number.isSafeInteger(v)) throw new HeaderProblem("record-too-large", "has a dimension too large to address");
      return v;
    }
    throw new HeaderProblem("record-malformed", `has msgpack type 0x${t.toString(16)} where a dimension belongs`);
  }
}
