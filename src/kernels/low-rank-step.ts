/**
 * One LoRA merge step on a block of W's rows, as torch runs it on CPU:
 *   u = float32(B @ A) * scale     (summed in order over the rank: low-rank.ts)
 *   u = round_through(deltaDType, u)   (PEFT casts the update back to the adapter's dtype)
 *   w = w + u  (torch's float32 add and its NaN rule), or w = u when not `accumulate`
 *   w = round_through(outDType, w)     (the in-place add stores in W's dtype)
 * `w` holds float32 values. The WebAssembly SIMD kernel (fast-low-rank.ts)
 * runs where it can; this file's scalar composition is its reference and the
 * fallback, with the same results. The merge itself goes block by block of
 * a tensor's rows (openLowRankBlocks): W in its own dtype, every step of
 * every adapter, in one pass of the fused kernel.
 */
import { dtypeBytes, type FloatDType } from "../dtypes.js";
import { lowRankColumns, lowRankRows, type LowRankStep } from "./low-rank.js";
import * as reference from "./reference.js";
import type { BlockStep } from "./fast-low-rank.js";

export type { LowRankStep };

type Fast = typeof import("./fast-low-rank.js");
// A JS engine without WebAssembly SIMD gets the scalar composition: the same results, only slower.
const fast: Fast | undefined = await import("./fast-low-rank.js").catch(() => undefined);

/** Which implementation runs: "wasm-simd", or "scalar" without WebAssembly SIMD. */
export const lowRankImplementation: "wasm-simd" | "scalar" = fast === undefined ? "scalar" : "wasm-simd";

const fastDTypes = new Set<FloatDType>(["F16", "BF16", "F32"]);
/** The SIMD kernel, when it runs here and takes this step (not F64, a rank its tiles hold). */
function fastFor(rank: number, step: LowRankStep): Fast | undefined {
  const usable = fast !== undefined && rank <= fast.MAX_FAST_RANK && fastDTypes.has(step.deltaDType) && fastDTypes.has(step.outDType);
  return usable ? fast : undefined;
}

/** The step with u = b @ a (b: a block of B's rows, rows x rank; a: rank x cols); w: rows x cols. */
export function lowRankStepRows(b: Float32Array, a: Float32Array, rank: number, cols: number, w: Float32Array, step: LowRankStep): void {
  if (w.length !== (b.length / rank) * cols) throw new RangeError(`low-rank step: w has ${w.length} elements, not ${b.length / rank} x ${cols}`);
  const kernel = fastFor(rank, step);
  if (kernel !== undefined) return kernel.mergeLowRankRows(b, a, rank, cols, w, step);
  referenceLowRankStepRows(b, a, rank, cols, w, step);
}

/** lowRankStepRows by the scalar kernels: the reference (and the fallback). */
export function referenceLowRankStepRows(b: Float32Array, a: Float32Array, rank: number, cols: number, w: Float32Array, step: LowRankStep): void {
  const update = new Float32Array(w.length);
  lowRankRows(b, a, rank, cols, step.scale, update);
  finishStep(update, w, step);
}

/** The step with u = rows first .. first + count - 1 of transpose(b @ a) (w: count x rows of b), by the scalar kernels. */
export function referenceLowRankStepColumns(b: Float32Array, a: Float32Array, rank: number, cols: number, first: number, count: number, w: Float32Array, step: LowRankStep): void {
  const update = new Float32Array(w.length);
  lowRankColumns(b, a, rank, cols, first, count, step.scale, update);
  finishStep(update, w, step);
}

/** One step of a tensor's merge (see LowRankBlocks in fast-low-rank.ts). */
export type { BlockStep } from "./fast-low-rank.js";

/**
 * A tensor's merge, block by block of W's rows: load each step's factors
 * (float32, row-major as stored, a range of elements at a time) with
 * `setFactor`, then `merge(first, w, out)` for each block (W's rows in its
 * dtype in, the merged rows in the same dtype out; `out` may be `w`), then
 * `close()`.
 */
export interface LowRankBlockMerge {
  setFactor(step: number, which: "a" | "b", first: number, values: Float32Array): void;
  merge(first: number, w: Uint8Array, out: Uint8Array): void;
  close(): void;
}

/**
 * The merge of a `rows` x `cols` tensor of `out` (W's dtype) by `steps`, in
 * blocks of at most `blockRows` rows: the fused SIMD kernel where it runs and
 * takes every step, else the scalar composition (the same results).
 */
export function openLowRankBlocks(out: FloatDType, rows: number, cols: number, steps: readonly BlockStep[], blockRows: number): LowRankBlockMerge {
  const usable = fast !== undefined && fast.isFastDType(out) && steps.every((s) => s.rank <= fast.MAX_FAST_RANK && fast.isFastDType(s.deltaDType));
  if (usable) return new fast.LowRankBlocks(out, rows, cols, steps as readonly BlockStep<"F32" | "F16" | "BF16">[], blockRows);
  return new ReferenceLowRankBlocks(out, rows, cols, steps, blockRows);
}

/**
 * LowRankBlocks by the scalar kernels, as the merge ran before the fused
 * kernel: W converted to float32, each step (referenceLowRankStepRows or
 * ...Columns, rounded to W's dtype), converted back. The reference the
 * tests hold the fused kernel to, and the fallback.
 */
export class ReferenceLowRankBlocks implements LowRankBlockMerge {
  readonly #factors: { a: Float32Array; b: Float32Array }[];

  constructor(private readonly out: FloatDType, readonly rows: number, private readonly cols: number, private readonly steps: readonly BlockStep[], readonly blockRows: number) {
    this.#factors = steps.map((s) => ({ a: new Float32Array(s.rank * s.aCols), b: new Float32Array(s.bRows * s.rank) }));
  }

  setFactor(step: number, which: "a" | "b", first: number, values: Float32Array): void {
    this.#factors[step]![which].set(values, first);
  }

  merge(first: number, w: Uint8Array, out: Uint8Array): void {
    const size = dtypeBytes(this.out);
    const n = w.length / (this.cols * size);
    if (!Number.isInteger(n) || n < 1 || n > this.blockRows || first + n > this.rows || out.length !== w.length) {
      throw new RangeError(`low-rank blocks: ${w.length} bytes at row ${first} are not whole rows of a block (${this.blockRows} rows of ${this.cols})`);
    }
    const values = new Float32Array(n * this.cols);
    reference.convertInto(this.out, "F32", w, bytesOf(values));
    this.steps.forEach((step, s) => {
      const { a, b } = this.#factors[s]!;
      const how: LowRankStep = { scale: step.scale, deltaDType: step.deltaDType, outDType: this.out, accumulate: true };
      if (step.transposed) referenceLowRankStepColumns(b, a, step.rank, step.aCols, first, n, values, how);
      else referenceLowRankStepRows(b.subarray(first * step.rank, (first + n) * step.rank), a, step.rank, this.cols, values, how);
    });
    reference.convertInto("F32", this.out, bytesOf(values), out);
  }

  close(): void {}
}

function finishStep(update: Float32Array, w: Float32Array, step: LowRankStep): void {
  roundThrough(step.deltaDType, update);
  if (step.accumulate) reference.addInto("F32", bytesOf(w), bytesOf(update), bytesOf(w));
  else w.set(update);
  roundThrough(step.outDType, w);
}

const bytesOf = (values: Float32Array) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);

/** Rounds float32 values to `dtype` and back, in place: what a cast to `dtype` leaves. */
function roundThrough(dtype: FloatDType, values: Float32Array): void {
  if (dtype === "F32") return;
  const rounded = new Uint8Array(values.length * dtypeBytes(dtype));
  reference.convertInto("F32", dtype, bytesOf(values), rounded);
  reference.convertInto(dtype, "F32", rounded, bytesOf(values));
}
