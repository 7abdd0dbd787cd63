/**
 * Scalar reference kernels: one element at a time, written for obviousness,
 * not speed. They define the arithmetic (bit-identical to PyTorch on CPU,
 * checked against torch's own outputs in test/kernels/) and are the oracle
 * the fast kernels are tested against.
 *
 * NaN bits are set explicitly from the operands' bits, never left to JS
 * numbers (whose NaN bits are the engine's business): torch on x86 gives b's
 * NaN quieted if b is NaN, else a's, else (Inf - Inf) the negative default
 * NaN; narrowed to half that keeps only the sign (F16_NAN), to bfloat16 it is
 * BF16_NAN. The fixtures include every ordered pair of NaNs, Infs and numbers.
 */
import {
  BF16_NAN,
  F16_NAN,
  bf16BitsToF32Bits,
  dtypeBytes,
  f16BitsToF32Bits,
  f32BitsToBf16,
  f32BitsToF16,
  f32Bits,
  f32FromBits,
  type FloatDType,
} from "../dtypes.js";

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function elementCount(dtype: FloatDType, ...buffers: Uint8Array[]): number {
  const size = dtypeBytes(dtype);
  const first = buffers[0]!;
  for (const buffer of buffers) {
    if (buffer.byteLength !== first.byteLength || buffer.byteLength % size !== 0) {
      throw new RangeError(`kernel buffers must hold the same whole number of ${dtype} elements`);
    }
  }
  return first.byteLength / size;
}

function isNaN16(dtype: "F16" | "BF16", bits: number): boolean {
  return dtype === "F16" ? (bits & 0x7fff) > 0x7c00 : (bits & 0x7fff) > 0x7f80;
}

function widen16(dtype: "F16" | "BF16", bits: number): number {
  return f32FromBits(dtype === "F16" ? f16BitsToF32Bits(bits) : bf16BitsToF32Bits(bits));
}

/**
 * One half/bfloat16 add or subtract as torch 1.13+ does it on CPU: widen both
 * to float32, one float32 operation, round once (RNE). For a NaN result the
 * half sign comes from `b` if it is NaN, else from `a`, else (Inf - Inf) it is
 * the negative default NaN: the operand order torch's compiled code uses.
 */
function arith16(dtype: "F16" | "BF16", a: number, b: number, subtract: boolean): number {
  const x = widen16(dtype, a), y = widen16(dtype, b);
  const sum = Math.fround(subtract ? x - y : x + y);
  if (sum !== sum) {
    if (dtype === "BF16") return BF16_NAN;
    const source = isNaN16(dtype, b) ? b : isNaN16(dtype, a) ? a : 0x8000;
    return (source & 0x8000) | F16_NAN;
  }
  const bits = f32Bits(sum);
  return dtype === "F16" ? f32BitsToF16(bits) : f32BitsToBf16(bits);
}

/** float32 NaN result bits of a op b (see the rule above). */
function nanF32(a: number, b: number): number {
  const isNaN32 = (bits: number) => (bits & 0x7fffffff) > 0x7f800000;
  const source = isNaN32(b) ? b : isNaN32(a) ? a : 0xff800000;
  return (source | 0x00400000) >>> 0;
}

function arith(dtype: FloatDType, a: Uint8Array, b: Uint8Array, out: Uint8Array, subtract: boolean): void {
  const n = elementCount(dtype, a, b, out);
  const va = view(a), vb = view(b), vo = view(out);
  switch (dtype) {
    case "F16":
    case "BF16":
      for (let i = 0; i < n; i++) {
        vo.setUint16(i * 2, arith16(dtype, va.getUint16(i * 2, true), vb.getUint16(i * 2, true), subtract), true);
      }
      return;
    case "F32":
      for (let i = 0; i < n; i++) {
        const x = va.getFloat32(i * 4, true), y = vb.getFloat32(i * 4, true);
        const result = subtract ? x - y : x + y;
        if (result === result) vo.setFloat32(i * 4, result, true);
        else vo.setUint32(i * 4, nanF32(va.getUint32(i * 4, true), vb.getUint32(i * 4, true)), true);
      }
      return;
    case "F64":
      for (let i = 0; i < n; i++) {
        const x = va.getFloat64(i * 8, true), y = vb.getFloat64(i * 8, true);
        const result = subtract ? x - y : x + y;
        if (result === result) vo.setFloat64(i * 8, result, true);
        else {
          const [high, low] = Number.isNaN(y) ? [vb.getUint32(i * 8 + 4, true), vb.getUint32(i * 8, true)]
            : Number.isNaN(x) ? [va.getUint32(i * 8 + 4, true), va.getUint32(i * 8, true)]
            : [0xfff00000, 0]; // Inf - Inf: x86's default NaN, negative
          vo.setUint32(i * 8 + 4, (high | 0x00080000) >>> 0, true); // quiet
          vo.setUint32(i * 8, low, true);
        }
      }
      return;
  }
}

export function addInto(dtype: FloatDType, base: Uint8Array, delta: Uint8Array, out: Uint8Array): void {
  arith(dtype, base, delta, out, false);
}

export function subInto(dtype: FloatDType, target: Uint8Array, base: Uint8Array, out: Uint8Array): void {
  arith(dtype, target, base, out, true);
}

export function xorInto(a: Uint8Array, b: Uint8Array, out: Uint8Array): void {
  if (a.byteLength !== b.byteLength || a.byteLength !== out.byteLength) {
    throw new RangeError("xorInto buffers must have the same length");
  }
  for (let i = 0; i < a.byteLength; i++) out[i] = a[i]! ^ b[i]!;
}

/** Element i as float32 bits (16-bit and F32 sources). */
function readF32Bits(from: "F16" | "BF16" | "F32", src: DataView, i: number): number {
  if (from === "F32") return src.getUint32(i * 4, true);
  const bits = src.getUint16(i * 2, true);
  return from === "F16" ? f16BitsToF32Bits(bits) : bf16BitsToF32Bits(bits);
}

/** float32 bits -> float64, written at element i; NaN payload moves up, quieted (x86 cvtss2sd). */
function writeF64FromF32Bits(out: DataView, i: number, bits: number): void {
  if ((bits & 0x7fffffff) > 0x7f800000) {
    const mantissa = bits & 0x7fffff;
    out.setUint32(i * 8 + 4, ((bits & 0x80000000) | 0x7ff80000 | (mantissa >>> 3)) >>> 0, true);
    out.setUint32(i * 8, (mantissa << 29) >>> 0, true);
  } else {
    out.setFloat64(i * 8, f32FromBits(bits), true);
  }
}

/** float64 element i -> float32 bits, RNE; NaN payload's top bits kept, quieted (x86 cvtsd2ss). */
function readF64AsF32Bits(src: DataView, i: number): number {
  const high = src.getUint32(i * 8 + 4, true), low = src.getUint32(i * 8, true);
  if ((high & 0x7ff00000) === 0x7ff00000 && ((high & 0xfffff) !== 0 || low !== 0)) {
    return ((high & 0x80000000) | 0x7fc00000 | ((high & 0xfffff) << 3) | (low >>> 29)) >>> 0;
  }
  return f32Bits(src.getFloat64(i * 8, true));
}

/** torch converts half to bfloat16 with the scalar c10::BFloat16 constructor, whose NaN is 0x7FC0. */
const HALF_NAN_TO_BF16 = 0x7fc0;

/**
 * torch's `tensor.to(dtype)` on CPU. Double to half / bfloat16 goes through
 * float32 (c10::Half and c10::BFloat16 are constructed from float), so it
 * rounds twice; the fixtures include values where that differs from direct
 * rounding.
 */
export function convertInto(from: FloatDType, to: FloatDType, src: Uint8Array, out: Uint8Array): void {
  const fromSize = dtypeBytes(from), toSize = dtypeBytes(to);
  if (src.byteLength % fromSize !== 0 || out.byteLength !== (src.byteLength / fromSize) * toSize) {
    throw new RangeError(`convertInto: ${src.byteLength} bytes of ${from} do not fit ${out.byteLength} bytes of ${to}`);
  }
  if (from === to) {
    if (out !== src) out.set(src);
    return;
  }
  const n = src.byteLength / fromSize;
  const s = view(src), o = view(out);
  for (let i = 0; i < n; i++) {
    const bits = from === "F64" ? readF64AsF32Bits(s, i) : readF32Bits(from, s, i);
    switch (to) {
      case "F16": o.setUint16(i * 2, f32BitsToF16(bits), true); break;
      case "BF16": o.setUint16(i * 2, from === "F16" && isNaN16("F16", s.getUint16(i * 2, true)) ? HALF_NAN_TO_BF16 : f32BitsToBf16(bits), true); break;
      case "F32": o.setUint32(i * 4, bits, true); break;
      case "F64": writeF64FromF32Bits(o, i, bits); break;
    }
  }
}

export interface Mismatches {
  /** Element indices (0-based within the chunk) whose bits differ. */
  indices: Uint32Array;
  /** indices.length * elementBytes bytes: actual XOR expected, per mismatching element. */
  xors: Uint8Array;
}

export function checkElementBytes(elementBytes: number): void {
  if (elementBytes !== 1 && elementBytes !== 2 && elementBytes !== 4 && elementBytes !== 8) {
    throw new RangeError(`element size must be 1, 2, 4 or 8 bytes, not ${elementBytes}`);
  }
}

export function findMismatches(elementBytes: number, actual: Uint8Array, expected: Uint8Array): Mismatches {
  checkElementBytes(elementBytes);
  if (actual.byteLength !== expected.byteLength || actual.byteLength % elementBytes !== 0) {
    throw new RangeError("findMismatches buffers must hold the same whole number of elements");
  }
  const indices: number[] = [];
  const n = actual.byteLength / elementBytes;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < elementBytes; k++) {
      if (actual[i * elementBytes + k] !== expected[i * elementBytes + k]) {
        indices.push(i);
        break;
      }
    }
  }
  const xors = new Uint8Array(indices.length * elementBytes);
  indices.forEach((index, j) => {
    for (let k = 0; k < elementBytes; k++) {
      xors[j * elementBytes + k] = actual[index * elementBytes + k]! ^ expected[index * elementBytes + k]!;
    }
  });
  return { indices: Uint32Array.from(indices), xors };
}

/**
 * data[indices[k] - firstIndex] ^= xors[k] (elementBytes each): applies
 * fix-ups to a chunk whose first element is element `firstIndex` of its
 * tensor. Throws on an index outside the chunk.
 */
export function applyXorFixups(elementBytes: number, data: Uint8Array, indices: Uint32Array, xors: Uint8Array, firstIndex = 0): void {
  checkElementBytes(elementBytes);
  if (xors.byteLength !== indices.length * elementBytes) {
    throw new RangeError("applyXorFixups: xors must hold elementBytes bytes per index");
  }
  const n = data.byteLength / elementBytes;
  for (let j = 0; j < indices.length; j++) {
    const at = indices[j]! - firstIndex;
    if (at < 0 || at >= n) throw new RangeError(`fix-up index ${indices[j]} is outside the ${n}-element chunk starting at ${firstIndex}`);
  }
  if (elementBytes === 2 && data.byteOffset % 2 === 0 && xors.byteOffset % 2 === 0) {
    // Half-precision models are the common case: one 16-bit XOR per fix-up.
    const data16 = new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
    const xors16 = new Uint16Array(xors.buffer, xors.byteOffset, xors.length / 2);
    for (let j = 0; j < indices.length; j++) data16[indices[j]! - firstIndex]! ^= xors16[j]!;
    return;
  }
  for (let j = 0; j < indices.length; j++) {
    const at = (indices[j]! - firstIndex) * elementBytes;
    for (let k = 0; k < elementBytes; k++) data[at + k]! ^= xors[j * elementBytes + k]!;
  }
}

/**
 * make-delta's codec `add` in one call: deltaOut = round(target - base), and
 * the elements where round(base + delta) is not the target, with
 * round(base + delta) XOR target for each (what apply must XOR back in).
 */
export function subIntoWithFixups(dtype: FloatDType, target: Uint8Array, base: Uint8Array, deltaOut: Uint8Array): Mismatches {
  const delta = new Uint8Array(deltaOut.length);
  subInto(dtype, target, base, delta);
  const roundTrip = new Uint8Array(delta.length);
  addInto(dtype, base, delta, roundTrip);
  const found = findMismatches(dtypeBytes(dtype), roundTrip, target);
  deltaOut.set(delta);
  return found;
}
