/**
 * GGUF v3, the file llama.cpp loads: encoding of the header (magic, version,
 * counts), the metadata key/value pairs and the tensor table, laid out as
 * gguf-py's GGUFWriter lays them out (little-endian, strings as u64 length +
 * UTF-8 bytes, dims innermost first, each tensor's data at an offset padded
 * to the alignment, zero padding). Pure: bytes out, no I/O.
 */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
/** GGUF_DEFAULT_ALIGNMENT: general.alignment is written only when another is used. */
export const GGUF_ALIGNMENT = 32;
/** GGML_QUANT_VERSION, written as general.quantization_version. */
export const GGML_QUANT_VERSION = 2;

/** GGUFValueType. */
export const GgufValueType = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;

/** The ggml tensor types this tool writes (GGMLQuantizationType), with their block geometry. */
export const GGML_TYPES = {
  F32: { id: 0, blockSize: 1, typeSize: 4 },
  F16: { id: 1, blockSize: 1, typeSize: 2 },
  Q8_0: { id: 8, blockSize: 32, typeSize: 34 },
  BF16: { id: 30, blockSize: 1, typeSize: 2 },
} as const;
export type GgmlType = keyof typeof GGML_TYPES;

/** A metadata value, typed as gguf-py types it (Python int -> INT32, float -> FLOAT32, unless the writer's add_* names a type). */
export type GgufValue =
  | { type: "string"; value: string | Uint8Array }
  | { type: "uint32"; value: number }
  | { type: "int32"; value: number }
  | { type: "float32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string[]"; value: readonly (string | Uint8Array)[] }
  | { type: "float32[]"; value: readonly number[] | Float32Array }
  | { type: "int32[]"; value: readonly number[] | Int32Array };

export type GgufMetadata = [key: string, value: GgufValue][];

export interface GgufTensorSpec {
  name: string;
  /** Row-major (PyTorch order); written innermost first. */
  shape: readonly number[];
  type: GgmlType;
}

export interface PlacedTensor extends GgufTensorSpec {
  /** Offset of its data from the start of the data section. */
  offset: number;
  /** Bytes of data, without padding. */
  byteLength: number;
}

export interface GgufLayout {
  /** Everything before the first tensor's data, padding included. */
  header: Uint8Array;
  tensors: PlacedTensor[];
  /** Header + every tensor's data, each padded to the alignment. */
  fileSize: number;
}

const textEncoder = new TextEncoder();

/** Grows as it is written; little-endian throughout. */
class ByteBuilder {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }

  i32(v: number): void {
    this.reserve(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }

  f32(v: number): void {
    this.reserve(4);
    this.view.setFloat32(this.length, v, true);
    this.length += 4;
  }

  /** Below 2^53 (every count and size here): two 32-bit halves, no BigInt per value. */
  u64(v: number): void {
    this.reserve(8);
    this.view.setUint32(this.length, v >>> 0, true);
    this.view.setUint32(this.length + 4, Math.floor(v / 2 ** 32), true);
    this.length += 8;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.length++] = v;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  string(s: string | Uint8Array): void {
    if (typeof s !== "string") {
      this.u64(s.length);
      this.bytes(s);
      return;
    }
    // Encoded in place after its length (at most 3 bytes a UTF-16 unit), ASCII by
    // hand: a vocabulary is tens of thousands of short strings, mostly ASCII.
    this.reserve(8 + 3 * s.length);
    const at = this.length;
    let end = at + 8;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        end = at + 8 + textEncoder.encodeInto(s, this.buf.subarray(at + 8)).written;
        break;
      }
      this.buf[end++] = c;
    }
    this.u64(end - at - 8);
    this.length = end;
  }

  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    this.reserve(pad);
    this.buf.fill(0, this.length, this.length + pad);
    this.length += pad;
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function writeValue(out: ByteBuilder, value: GgufValue): void {
  const T = GgufValueType;
  switch (value.type) {
    case "string":
      out.u32(T.STRING);
      out.string(value.value);
      return;
    case "uint32":
      out.u32(T.UINT32);
      out.u32(value.value);
      return;
    case "int32":
      out.u32(T.INT32);
      out.i32(value.value);
      return;
    case "float32":
      out.u32(T.FLOAT32);
      out.f32(value.value);
      return;
    case "bool":
      out.u32(T.BOOL);
      out.u8(value.value ? 1 : 0);
      return;
    case "string[]":
      out.u32(T.ARRAY);
      out.u32(T.STRING);
      out.u64(value.value.length);
      for (const s of value.value) out.string(s);
      return;
    case "float32[]":
      out.u32(T.ARRAY);
      out.u32(T.FLOAT32);
      out.u64(value.value.length);
      for (const v of value.value) out.f32(v);
      return;
    case "int32[]":
      out.u32(T.ARRAY);
      out.u32(T.INT32);
      out.u64(value.value.length);
      for (const v of value.value) out.i32(v);
      return;
  }
}

/** Bytes of a tensor of `type` and `shape`; the innermost dim must hold whole blocks. */
export function ggmlByteLength(type: GgmlType, shape: readonly number[]): number {
  const { blockSize, typeSize } = GGML_TYPES[type];
  const inner = shape.length === 0 ? 1 : (shape[shape.length - 1] as number);
  if (inner % blockSize !== 0) throw new RangeError(`a ${type} tensor's innermost dimension must be a multiple of ${blockSize}, got ${inner}`);
  const numel = shape.reduce((n, d) => n * d, 1);
  return (numel / blockSize) * typeSize;
}

export function padded(n: number, alignment = GGUF_ALIGNMENT): number {
  return Math.ceil(n / alignment) * alignment;
}

/**
 * The header of a GGUF file holding these tensors, in this order, and where
 * each tensor's data goes: known from the shapes alone, so the header is
 * written before any tensor is read.
 */
export function layoutGguf(metadata: GgufMetadata, tensors: readonly GgufTensorSpec[]): GgufLayout {
  const out = new ByteBuilder();
  out.u32(GGUF_MAGIC);
  out.u32(GGUF_VERSION);
  out.u64(tensors.length);
  out.u64(metadata.length);
  const keys = new Set<string>();
  for (const [key, value] of metadata) {
    if (keys.has(key)) throw new Error(`duplicate GGUF metadata key ${key}`);
    keys.add(key);
    out.string(key);
    writeValue(out, value);
  }
  const placed: PlacedTensor[] = [];
  let offset = 0;
  for (const t of tensors) {
    const byteLength = ggmlByteLength(t.type, t.shape);
    out.string(t.name);
    out.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) out.u64(t.shape[i] as number);
    out.u32(GGML_TYPES[t.type].id);
    out.u64(offset);
    placed.push({ ...t, offset, byteLength });
    offset += padded(byteLength);
  }
  out.padTo(GGUF_ALIGNMENT);
  const header = out.result();
  return { header, tensors: placed, fileSize: header.length + offset };
}
