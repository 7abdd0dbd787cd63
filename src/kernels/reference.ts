/**
 * Scalar reference kernels: one element at a time through DataView, written
 * for obviousness, not speed. They define the arithmetic (bit-identical to
 * PyTorch on CPU, checked against torch's own outputs in test/kernels/) and
 * are the oracle the fast kernels are tested against.
 */
import { dtypeBytes, f32BitsToBf16, f32BitsToF16, f16ToF32, bf16ToF32, type FloatDType } from "../dtypes.js";

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Reads element i of a float tensor as a JS number (exact: every dtype widens losslessly to f64). */
export function readFloat(dtype: FloatDType, data: DataView, i: number): number {
  switch (dtype) {
    case "F16": return f16ToF32(data.getUint16(i * 2, true));
    case "BF16": return bf16ToF32(data.getUint16(i * 2, true));
    case "F32": return data.getFloat32(i * 4, true);
    case "F64": return data.getFloat64(i * 8, true);
  }
}

const scratch = new DataView(new ArrayBuffer(8));

/** Writes `value` (already float32 for the 16-bit dtypes) rounded RNE to the dtype. */
export function writeFloat(dtype: FloatDType, data: DataView, i: number, value: number): void {
  switch (dtype) {
    case "F16":
    case "BF16": {
      scratch.setFloat32(0, value, true);
      const bits = scratch.getUint32(0, true);
      data.setUint16(i * 2, dtype === "F16" ? f32BitsToF16(bits) : f32BitsToBf16(bits), true);
      return;
    }
    case "F32": data.setFloat32(i * 4, value, true); return;
    case "F64": data.setFloat64(i * 8, value, true); return;
  }
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

/** Rounds to the precision arithmetic happens in: float32, except float64 for F64. */
function computeRound(dtype: FloatDType, value: number): number {
  return dtype === "F64" ? value : Math.fround(value);
}

export function addInto(dtype: FloatDType, base: Uint8Array, delta: Uint8Array, out: Uint8Array): void {
  const n = elementCount(dtype, base, delta, out);
  const b = view(base), d = view(delta), o = view(out);
  for (let i = 0; i < n; i++) writeFloat(dtype, o, i, computeRound(dtype, readFloat(dtype, b, i) + readFloat(dtype, d, i)));
}

export function subInto(dtype: FloatDType, target: Uint8Array, base: Uint8Array, out: Uint8Array): void {
  const n = elementCount(dtype, target, base, out);
  const t = view(target), b = view(base), o = view(out);
  for (let i = 0; i < n; i++) writeFloat(dtype, o, i, computeRound(dtype, readFloat(dtype, t, i) - readFloat(dtype, b, i)));
}

export function xorInto(a: Uint8Array, b: Uint8Array, out: Uint8Array): void {
  if (a.byteLength !== b.byteLength || a.byteLength !== out.byteLength) {
    throw new RangeError("xorInto buffers must have the same length");
  }
  for (let i = 0; i < a.byteLength; i++) out[i] = a[i]! ^ b[i]!;
}

export function convertInto(from: FloatDType, to: FloatDType, src: Uint8Array, out: Uint8Array): void {
  const fromSize = dtypeBytes(from), toSize = dtypeBytes(to);
  if (src.byteLength % fromSize !== 0 || out.byteLength !== (src.byteLength / fromSize) * toSize) {
    throw new RangeError(`convertInto: ${src.byteLength} bytes of ${from} do not fit ${out.byteLength} bytes of ${to}`);
  }
  const n = src.byteLength / fromSize;
  const s = view(src), o = view(out);
  if (from === to) {
    out.set(src);
    return;
  }
  for (let i = 0; i < n; i++) {
    let value = readFloat(from, s, i);
    // torch converts double to half / bfloat16 through float (c10::Half and
    // c10::BFloat16 are constructed from float), so F64 rounds twice.
    if (from === "F64" && to !== "F64") value = Math.fround(value);
    writeFloat(to, o, i, value);
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

export function applyXorFixups(elementBytes: number, data: Uint8Array, indices: Uint32Array, xors: Uint8Array): void {
  checkElementBytes(elementBytes);
  if (xors.byteLength !== indices.length * elementBytes) {
    throw new RangeError("applyXorFixups: xors must hold elementBytes bytes per index");
  }
  const n = data.byteLength / elementBytes;
  for (let j = 0; j < indices.length; j++) {
    const index = indices[j]!;
    if (index >= n) throw new RangeError(`fix-up index ${index} is outside the ${n}-element chunk`);
    for (let k = 0; k < elementBytes; k++) data[index * elementBytes + k]! ^= xors[j * elementBytes + k]!;
  }
}
