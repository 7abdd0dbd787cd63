/**
 * The float32 low-rank product of a LoRA merge, `B @ A` (B: rows x rank,
 * A: rank x cols), bit-identical to PyTorch's CPU matmul for ranks 1-256.
 *
 * PyTorch built without an external BLAS (Debian's python3-torch 1.13,
 * BLAS_INFO=generic) runs float32 `mm` through its own gemm
 * (aten/src/ATen/native/BlasKernel.cpp, the no-transpose path): C is zeroed,
 * then for l = 0 .. rank-1 in order, C[i][j] += A[l][j] * B[i][l], each
 * product rounded to float32 before the add (no fused multiply-add).
 * scripts/make-lora-fixtures.py measures this on 264 shapes with float16,
 * bfloat16 and float32 inputs, and on 7B-sized ones (4096 x 64 x 11008,
 * 4096 x 8 x 49954) with one and two threads: every element matched.
 * An MKL or OpenBLAS build blocks the sum differently and may differ in
 * the last bits (see the README).
 *
 * A float32 product is exact in a double (24 + 24 bits < 53), and a sum of
 * two float32 values rounded first to double and then to float32 equals
 * the float32 sum (53 >= 2 * 24 + 2: double rounding is innocuous), so
 * `Math.fround` on doubles gives torch's float32 results exactly.
 */

import type { FloatDType } from "../dtypes.js";

/** A LoRA merge step after the product (kernels/low-rank-step.ts applies it). */
export interface LowRankStep {
  /** A float32 value: torch multiplies the float32 product by a Python float in float32. */
  scale: number;
  /** The dtype the update is cast to before the add ("F32": not cast). */
  deltaDType: FloatDType;
  /** W's dtype: the sum is rounded to it ("F32": not rounded). */
  outDType: FloatDType;
  /** Add the update to w; otherwise w becomes the update. */
  accumulate: boolean;
}

/**
 * out[i * cols + j] = fround(sum_l fround(b[i * rank + l] * a[l * cols + j]) * scale)
 * for the `rows` rows of `b` given (a block of B's rows), the sum taken in
 * order l = 0, 1, ... from +0 as torch's gemm does. `scale` must already be a
 * float32 value: torch multiplies a float32 tensor by a Python float in float32.
 * With scale 1 the product is returned unscaled.
 */
export function lowRankRows(b: Float32Array, a: Float32Array, rank: number, cols: number, scale: number, out: Float32Array): void {
  const rows = b.length / rank;
  checkShapes(b.length, a.length, rank, cols, out.length, rows);
  for (let i = 0; i < rows; i++) {
    const row = out.subarray(i * cols, (i + 1) * cols);
    row.fill(0);
    let l = 0;
    // Four terms per pass over the row (each rounded as torch rounds it, in the same order):
    // the row is loaded and stored a quarter as often.
    for (; l + 4 <= rank; l += 4) {
      const b0 = b[i * rank + l]!, b1 = b[i * rank + l + 1]!, b2 = b[i * rank + l + 2]!, b3 = b[i * rank + l + 3]!;
      const a0 = l * cols, a1 = a0 + cols, a2 = a1 + cols, a3 = a2 + cols;
      for (let j = 0; j < cols; j++) {
        let acc = Math.fround(row[j]! + Math.fround(b0 * a[a0 + j]!));
        acc = Math.fround(acc + Math.fround(b1 * a[a1 + j]!));
        acc = Math.fround(acc + Math.fround(b2 * a[a2 + j]!));
        row[j] = acc + Math.fround(b3 * a[a3 + j]!);
      }
    }
    for (; l < rank; l++) {
      const bl = b[i * rank + l]!;
      const al = l * cols;
      // The Float32Array store rounds the double sum to float32.
      for (let j = 0; j < cols; j++) row[j] = row[j]! + Math.fround(bl * a[al + j]!);
    }
    if (scale !== 1) for (let j = 0; j < cols; j++) row[j] = row[j]! * scale;
  }
  setNaNBits(b, a, rank, cols, scale, out, (e) => [Math.floor(e / cols), e % cols]);
}

/**
 * The transpose of the product, a block of its rows: out[t][i] = (B @ A)[i][first + t]
 * * scale, for t < count. PEFT merges `transpose(B @ A)` for embeddings
 * (`lora_embedding_A` is rank x vocab) and for `fan_in_fan_out` layers; the
 * elements are those of `B @ A`, summed in the same order.
 */
export function lowRankColumns(b: Float32Array, a: Float32Array, rank: number, cols: number, first: number, count: number, scale: number, out: Float32Array): void {
  const rows = b.length / rank;
  checkShapes(b.length, a.length, rank, cols, out.length, count, rows);
  if (first < 0 || first + count > cols) throw new RangeError(`columns ${first}..${first + count} outside 0..${cols}`);
  out.fill(0);
  // B's columns made contiguous, so that the inner loop runs along an output row.
  const bt = new Float32Array(rank * rows);
  for (let i = 0; i < rows; i++) for (let l = 0; l < rank; l++) bt[l * rows + i] = b[i * rank + l]!;
  for (let t = 0; t < count; t++) {
    const o = t * rows;
    for (let l = 0; l < rank; l++) {
      const alt = a[l * cols + first + t]!;
      const bl = l * rows;
      for (let i = 0; i < rows; i++) out[o + i] = out[o + i]! + Math.fround(bt[bl + i]! * alt);
    }
  }
  if (scale !== 1) for (let k = 0; k < out.length; k++) out[k] = out[k]! * scale;
  setNaNBits(b, a, rank, cols, scale, out, (e) => [e % rows, first + Math.floor(e / rows)]);
}

const bitsOf = (values: Float32Array) => new Uint32Array(values.buffer, values.byteOffset, values.length);
const isNaNBits = (bits: number) => (bits & 0x7fffffff) > 0x7f800000;
const scratch = new Float32Array(1), scratchBits = new Uint32Array(scratch.buffer);
const DEFAULT_NAN = 0xffc00000;

/**
 * torch's bits for a NaN operation on x86: the first NaN operand, quieted, or
 * the default NaN when neither is NaN (an invalid operation).
 */
function nanRule(first: number, second: number, result: number): number {
  if (isNaNBits(first)) return (first | 0x00400000) >>> 0;
  if (isNaNBits(second)) return (second | 0x00400000) >>> 0;
  scratch[0] = result;
  return isNaNBits(scratchBits[0]!) ? DEFAULT_NAN : scratchBits[0]!;
}

/**
 * NaN bits are the engine's choice in JS arithmetic; torch's are the x86
 * instructions' in its loop (scripts/make-lora-nan-fixtures.py records them):
 * a product keeps A's NaN before B's, a sum the product's before the
 * accumulator's, and for a product with one column (torch's matrix-vector
 * path) both the other way round. Each NaN element of `out` is walked again
 * with those rules; `at` maps its index to (i, j) of B @ A.
 */
function setNaNBits(b: Float32Array, a: Float32Array, rank: number, cols: number, scale: number, out: Float32Array, at: (e: number) => [number, number]): void {
  const outBits = bitsOf(out), aBits = bitsOf(a), bBits = bitsOf(b);
  const gemv = cols === 1;
  const value = (bits: number) => { scratchBits[0] = bits; return scratch[0]!; };
  for (let e = 0; e < out.length; e++) {
    if (!isNaNBits(outBits[e]!)) continue;
    const [i, j] = at(e);
    let acc = 0;
    for (let l = 0; l < rank; l++) {
      const av = aBits[l * cols + j]!, bv = bBits[i * rank + l]!;
      const product = value(av) * value(bv);
      const p = gemv ? nanRule(bv, av, product) : nanRule(av, bv, product);
      const sum = value(p) + value(acc);
      acc = gemv ? nanRule(acc, p, sum) : nanRule(p, acc, sum);
    }
    scratch[0] = scale;
    outBits[e] = scale === 1 ? acc : nanRule(acc, scratchBits[0]!, value(acc) * scale);
  }
}

function checkShapes(bLength: number, aLength: number, rank: number, cols: number, outLength: number, outRows: number, outCols = cols): void {
  if (!Number.isInteger(rank) || rank < 1 || bLength % rank !== 0 || aLength !== rank * cols || outLength !== outRows * outCols) {
    throw new RangeError(`low-rank product: B has ${bLength} elements, A ${aLength}, rank ${rank}, ${cols} columns, out ${outLength} elements`);
  }
}
