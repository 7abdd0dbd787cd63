/**
 * The LoRA merge step in WebAssembly SIMD (the last block of
 * src/kernels/wasm/kernels.c), driven tile by tile: for a block of W's rows,
 * w = round_out(w + round_delta(float32(B @ A) * scale)), with the product
 * summed in torch's order (kernels/low-rank.ts is the reference, and the
 * tests hold this to it bit for bit). Tiles: a band of A's columns (rank x
 * width, at most LR_A floats), a group of B's rows and the same rows of W's
 * band; the band of A stays in the cache while B's rows pass over it.
 */
import type { LowRankStep } from "./low-rank.js";
import { KERNELS_WASM_BASE64 } from "./wasm/kernels-wasm.js";

interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const { Module, Instance } = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

interface LowRankExports {
  memory: { buffer: ArrayBuffer };
  lr_a_ptr(): number; lr_b_ptr(): number; lr_w_ptr(): number;
  lr_a_floats(): number; lr_b_floats(): number; lr_w_floats(): number;
  low_rank_merge(rows: number, rank: number, stride: number, scale: number, mode: number, zero: number): void;
}

// An instance of its own: its regions are separate from the element-wise kernels' (fast.ts).
const wasm = new Instance(new Module(Buffer.from(KERNELS_WASM_BASE64, "base64"))).exports as LowRankExports;
const heap = new Float32Array(wasm.memory.buffer);
const A = wasm.lr_a_ptr() / 4, B = wasm.lr_b_ptr() / 4, W = wasm.lr_w_ptr() / 4;
const A_FLOATS = wasm.lr_a_floats(), B_FLOATS = wasm.lr_b_floats(), W_FLOATS = wasm.lr_w_floats();

// The mode bits of low_rank_merge (kernels.c).
const DELTA_F16 = 1, DELTA_BF16 = 2, OUT_F16 = 4, OUT_BF16 = 8, ACCUMULATE = 16, NAN_B_FIRST = 32, NAN_ACCUMULATOR_FIRST = 64;

/** The largest rank the tiles hold (a band of A at least 4 columns wide, one row of B). */
export const MAX_FAST_RANK = Math.min(A_FLOATS / 4, B_FLOATS);

function modeOf(step: LowRankStep, nanBFirst: boolean, nanAccumulatorFirst: boolean): number {
  const kind = (dtype: string, half: number, bfloat: number) => (dtype === "F16" ? half : dtype === "BF16" ? bfloat : 0);
  return kind(step.deltaDType, DELTA_F16, DELTA_BF16) | kind(step.outDType, OUT_F16, OUT_BF16) |
    (step.accumulate ? ACCUMULATE : 0) | (nanBFirst ? NAN_B_FIRST : 0) | (nanAccumulatorFirst ? NAN_ACCUMULATOR_FIRST : 0);
}

/**
 * w (rows x cols) = the step applied with u = b (rows x rank) @ a (rank x cols).
 * `nanBFirst` / `nanAccumulatorFirst`: which operand's NaN torch keeps (kernels.c).
 */
function mergeTiles(b: Float32Array, a: Float32Array, rank: number, cols: number, w: Float32Array, step: LowRankStep, nanBFirst: boolean, nanAccumulatorFirst: boolean): void {
  const rows = b.length / rank;
  const mode = modeOf(step, nanBFirst, nanAccumulatorFirst);
  // Bands of 16 columns (the kernel's widest block), or the whole row rounded up to 4.
  const fit = Math.floor(A_FLOATS / rank);
  const band = Math.min(Math.ceil(cols / 4) * 4, fit >= 16 ? Math.floor(fit / 16) * 16 : Math.floor(fit / 4) * 4);
  for (let j0 = 0; j0 < cols; j0 += band) {
    const width = Math.min(band, cols - j0);
    const stride = Math.ceil(width / 4) * 4;
    const group = Math.max(1, Math.min(rows, Math.floor(B_FLOATS / rank), Math.floor(W_FLOATS / stride)));
    for (let l = 0; l < rank; l++) {
      heap.set(a.subarray(l * cols + j0, l * cols + j0 + width), A + l * stride);
      // Padding lanes are computed and ignored; zeros keep them finite and fast.
      if (stride > width) heap.fill(0, A + l * stride + width, A + (l + 1) * stride);
    }
    for (let i0 = 0; i0 < rows; i0 += group) {
      const n = Math.min(group, rows - i0);
      heap.set(b.subarray(i0 * rank, (i0 + n) * rank), B);
      if (step.accumulate) {
        if (stride === cols) heap.set(w.subarray(i0 * cols, (i0 + n) * cols), W);
        else for (let i = 0; i < n; i++) heap.set(w.subarray((i0 + i) * cols + j0, (i0 + i) * cols + j0 + width), W + i * stride);
      }
      wasm.low_rank_merge(n, rank, stride, step.scale, mode, 0);
      if (stride === cols) w.set(heap.subarray(W, W + n * cols), i0 * cols);
      else for (let i = 0; i < n; i++) w.set(heap.subarray(W + i * stride, W + i * stride + width), (i0 + i) * cols + j0);
    }
  }
}

export function mergeLowRankRows(b: Float32Array, a: Float32Array, rank: number, cols: number, w: Float32Array, step: LowRankStep): void {
  // torch's matrix-vector path (one column) keeps the other operands' NaN.
  mergeTiles(b, a, rank, cols, w, step, cols === 1, cols === 1);
}

export function mergeLowRankColumns(b: Float32Array, a: Float32Array, rank: number, cols: number, first: number, count: number, w: Float32Array, step: LowRankStep): void {
  const rows = b.length / rank;
  // out[t][i] = sum_l A[l][first + t] * B[i][l]: the rows of A's columns times B's transpose,
  // each element summed over l in the same order. torch's product keeps A's NaN first: A
  // is the kernel's B side here.
  const aColumns = new Float32Array(count * rank);
  for (let t = 0; t < count; t++) for (let l = 0; l < rank; l++) aColumns[t * rank + l] = a[l * cols + first + t]!;
  const bTransposed = new Float32Array(rank * rows);
  for (let i = 0; i < rows; i++) for (let l = 0; l < rank; l++) bTransposed[l * rows + i] = b[i * rank + l]!;
  mergeTiles(aColumns, bTransposed, rank, rows, w, step, cols !== 1, cols === 1);
}
