/**
 * Tensor data as llama.cpp's converter writes it, bit for bit: the source
 * values widened to float32 (torch's `.to(float32)`, exact for F16 and BF16),
 * then encoded by gguf-py's quants.py: F32 as is, F16 by numpy's astype
 * (round to nearest even), BF16 by its quantize_blocks (round to nearest
 * even, NaN made quiet), Q8_0 by its quantize_blocks (d = max|x| / 127 in
 * float32, q = x * (1/d) rounded half away from zero, d stored as float16).
 * Pure: chunks in, chunks out.
 */
import { dtypeBytes, f32BitsToF16, type DType } from "../dtypes.js";
import { quantizeQ8_0Into } from "../kernels/index.js";
import { GGML_TYPES, type GgmlType } from "./format.js";

const F16_TO_F32 = (() => {
  const table = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >>> 10) & 0x1f;
    const mantissa = bits & 0x3ff;
    if (exponent === 0) table[bits] = sign * mantissa * 2 ** -24;
    else if (exponent === 0x1f) table[bits] = mantissa === 0 ? sign * Infinity : NaN;
    else table[bits] = sign * (1024 + mantissa) * 2 ** (exponent - 25);
  }
  // NaN patterns keep their payload, as numpy's half -> float does.
  const bitsView = new Uint32Array(table.buffer);
  for (let bits = 0x7c01; bits < 0x8000; bits++) bitsView[bits] = 0x7f800000 | ((bits & 0x3ff) << 13);
  for (let bits = 0xfc01; bits < 0x10000; bits++) bitsView[bits] = (0xff800000 | ((bits & 0x3ff) << 13)) >>> 0;
  return table;
})();

/** Source dtypes the converter widens to float32 (anything else is refused before any output). */
export const CONVERTIBLE_DTYPES: readonly DType[] = ["F16", "BF16", "F32", "F64"];

/** The source chunk's elements as float32 (F64 rounded to nearest, as torch's `.to(float32)`). */
export function widenToF32(dtype: DType, bytes: Uint8Array): Float32Array {
  switch (dtype) {
    case "F32":
      return new Float32Array(bytes.slice().buffer);
    case "F16": {
      const src = new Uint16Array(bytes.slice().buffer);
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = F16_TO_F32[src[i]!]!;
      return out;
    }
    case "BF16": {
      const src = new Uint16Array(bytes.slice().buffer);
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
      return out;
    }
    case "F64":
      return Float32Array.from(new Float64Array(bytes.slice().buffer));
    default:
      throw new RangeError(`no float32 widening for ${dtype}`);
  }
}

/**
 * numpy's float32 -> float16 (npy_floatbits_to_halfbits): round to nearest
 * even, as torch's; only a NaN differs, keeping its top payload bits where
 * torch makes every NaN the same quiet one.
 */
function f32BitsToF16Numpy(bits: number): number {
  const mantissa = bits & 0x7fffff;
  if (((bits >>> 23) & 0xff) !== 0xff || mantissa === 0) return f32BitsToF16(bits);
  const payload = mantissa >>> 13;
  return ((bits >>> 16) & 0x8000) | 0x7c00 | (payload === 0 ? 1 : payload);
}

/** gguf-py BF16.quantize_blocks (ggml_compute_fp32_to_bf16): NaN made quiet, then round to nearest even. */
function f32BitsToBf16Ggml(bits: number): number {
  let n = bits >>> 0;
  if ((n & 0x7fffffff) > 0x7f800000) n = ((n & 0xffff0000) | (64 << 16)) >>> 0;
  return Math.floor((n + 0x7fff + ((n >>> 16) & 1)) / 65536) & 0xffff;
}

/**
 * The float16 d of a Q8_0 block holding a NaN. numpy's max of such a block is
 * a NaN, but which payload it keeps depends on the SIMD lane the NaN falls in
 * and on the CPU numpy dispatches for (gguf-py on x86-64 gives this quiet NaN
 * for most positions, another NaN for others); every NaN d means the same to
 * llama.cpp, so we write this one.
 */
export const Q8_0_NAN_D = 0x7e00;

/** Q8_0 blocks of 32 values: float16 d, then 32 int8 (gguf-py Q8_0.quantize_blocks; ggml's quantize_row_q8_0_ref gives the same). */
function quantizeQ8_0(values: Float32Array, out: Uint8Array): void {
  // Float32Array stores round each product to float32, as numpy's float32 arithmetic does.
  const scaled = new Float32Array(32);
  const d32 = new Float32Array(1);
  const dBits = new Uint32Array(d32.buffer);
  const quants = new Int8Array(out.buffer, out.byteOffset, out.byteLength);
  const nBlocks = values.length / 32;
  for (let b = 0; b < nBlocks; b++) {
    const base = b * 32;
    let amax = 0;
    let nan = false;
    for (let i = 0; i < 32; i++) {
      const a = Math.abs(values[base + i]!);
      if (a > amax) amax = a;
      else if (a !== a) nan = true;
    }
    const o = b * 34;
    if (nan) {
      // numpy's max is NaN, so are d and every x * (1/d); a NaN cast to int8 is 0.
      out[o] = Q8_0_NAN_D & 0xff;
      out[o + 1] = Q8_0_NAN_D >>> 8;
      out.fill(0, o + 2, o + 34);
      continue;
    }
    d32[0] = amax / 127;
    const d = d32[0]!;
    d32[0] = d === 0 ? 0 : 1 / d;
    const id = d32[0]!;
    for (let i = 0; i < 32; i++) scaled[i] = values[base + i]! * id;
    d32[0] = d;
    const half = f32BitsToF16Numpy(dBits[0]!);
    out[o] = half & 0xff;
    out[o + 1] = half >>> 8;
    for (let i = 0; i < 32; i++) {
      const v = scaled[i]!;
      // np_roundf: floor(|v|) + floor(2 * frac), with v's sign (exact in float64 for these magnitudes).
      const a = v < 0 ? -v : v;
      const fl = Math.floor(a);
      const r = fl + (a - fl >= 0.5 ? 1 : 0);
      quants[o + 2 + i] = v < 0 ? -r : r;
    }
  }
}

/** `values` encoded as ggml `type` (a whole number of blocks). */
export function encodeF32As(type: GgmlType, values: Float32Array): Uint8Array {
  const { blockSize, typeSize } = GGML_TYPES[type];
  if (values.length % blockSize !== 0) throw new RangeError(`${values.length} values are not whole ${type} blocks`);
  const out = new Uint8Array((values.length / blockSize) * typeSize);
  switch (type) {
    case "F32":
      out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      return out;
    case "F16": {
      const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
      const halves = new Uint16Array(out.buffer);
      for (let i = 0; i < bits.length; i++) halves[i] = f32BitsToF16Numpy(bits[i]!);
      return out;
    }
    case "BF16": {
      const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
      const halves = new Uint16Array(out.buffer);
      for (let i = 0; i < bits.length; i++) halves[i] = f32BitsToBf16Ggml(bits[i]!);
      return out;
    }
    case "Q8_0":
      quantizeQ8_0(values, out);
      return out;
  }
}

/** A chunk of source elements (whole blocks) as the converter writes them in `type`. */
export function convertChunk(from: DType, type: GgmlType, bytes: Uint8Array, allocate: (length: number) => Uint8Array = (n) => new Uint8Array(n)): Uint8Array {
  // Same-width copies: numpy's astype of an array already of that dtype.
  if ((from === "F16" && type === "F16") || (from === "F32" && type === "F32")) return bytes;
  if (type === "Q8_0" && quantizeQ8_0Into !== undefined && (from === "F16" || from === "BF16" || from === "F32")) {
    // Widening and quantizing in one SIMD pass: the same bytes as encodeF32As (tested bit for bit), many times faster.
    const out = allocate((bytes.length / dtypeBytes(from) / 32) * 34);
    quantizeQ8_0Into(from, bytes, out);
    return out;
  }
  return encodeF32As(type, widenToF32(from, bytes));
}

/**
 * One head's rows of q_proj or k_proj reordered as the converter's
 * LlamaModel.permute does: reshape(2, rows/2, ...).swapaxes(0, 1), which
 * interleaves the two rotary halves so llama.cpp's rope (pairs of adjacent
 * values) rotates what transformers' rotate_half rotates.
 */
export function permuteHeadRows(head: Uint8Array, rows: number, rowBytes: number): Uint8Array {
  const out = new Uint8Array(head.length);
  permuteRowsInto(head, rows, rowBytes, out, rowBytes, (row, into) => into.set(row));
  return out;
}

/**
 * Whole heads of `headRows` rows each, reordered as permuteHeadRows does,
 * each source row handed to `convertRow` with the place its converted bytes
 * go in `out` (rows of `outRowBytes`).
 */
function permuteRowsInto(heads: Uint8Array, headRows: number, rowBytes: number, out: Uint8Array, outRowBytes: number, convertRow: (row: Uint8Array, into: Uint8Array) => void): void {
  if (headRows % 2 !== 0) throw new RangeError(`a head of ${headRows} rows cannot be split into rotary halves`);
  const half = headRows / 2;
  const headCount = heads.length / (headRows * rowBytes);
  for (let h = 0; h < headCount; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headRows + j * half + i) * rowBytes;
        const dst = (h * headRows + 2 * i + j) * outRowBytes;
        convertRow(heads.subarray(src, src + rowBytes), out.subarray(dst, dst + outRowBytes));
      }
    }
  }
}

/**
 * Whole heads of q_proj/k_proj rows permuted and converted in one pass,
 * straight into `out` (allocated by `allocate`), row by row, where each row
 * converts on its own: a same-width copy, or Q8_0 in SIMD (rows of whole
 * blocks). No permuted copy of the source is made first. Undefined where
 * that does not apply; the caller then permutes, then converts.
 */
export function convertPermutedHeads(from: DType, type: GgmlType, heads: Uint8Array, headRows: number, rowBytes: number, allocate: (length: number) => Uint8Array): Uint8Array | undefined {
  const elementBytes = dtypeBytes(from);
  const rowElements = rowBytes / elementBytes;
  if ((from === "F16" && type === "F16") || (from === "F32" && type === "F32")) {
    const out = allocate(heads.length);
    permuteRowsInto(heads, headRows, rowBytes, out, rowBytes, (row, into) => into.set(row));
    return out;
  }
  const quantize = quantizeQ8_0Into;
  if (type === "Q8_0" && quantize !== undefined && (from === "F16" || from === "BF16" || from === "F32") && rowElements % 32 === 0) {
    const outRowBytes = (rowElements / 32) * 34;
    const out = allocate((heads.length / rowBytes) * outRowBytes);
    permuteRowsInto(heads, headRows, rowBytes, out, outRowBytes, (row, into) => quantize(from, row, into));
    return out;
  }
  return undefined;
}
