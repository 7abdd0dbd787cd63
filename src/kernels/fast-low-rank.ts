/**
 * The LoRA merge step in WebAssembly SIMD (the last block of
 * src/kernels/wasm/kernels.c): for a block of W's rows, in one pass,
 * w = round_out(w + round_delta(float32(B @ A) * scale)), the product summed
 * in torch's order (kernels/low-rank.ts is the reference, and the tests hold
 * this to it bit for bit). W is read and written in its own dtype, so a
 * block goes in as the bytes read and comes out as the bytes to write.
 *
 * The operands live in the module's memory past its own data (an arena):
 * the factors of a tensor's steps are loaded there once (`LowRankBlocks`),
 * then each block of W's rows is copied in, merged in place and copied out.
 * Each arena is one instance of the module, used by one merge at a time and
 * kept for the next (its memory grows to the largest tensor's factors).
 */
import type { FloatDType } from "../dtypes.js";
import type { LowRankStep } from "./low-rank.js";
import { KERNELS_WASM_BASE64 } from "./wasm/kernels-wasm.js";

interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const { Module, Instance } = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

interface LowRankExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  lr_heap_base(): number;
  low_rank_merge(
    a: number, aStride: number, b: number, bRow: number, bL: number, wIn: number, wOut: number,
    rows: number, cols: number, rank: number, scale: number, mode: number, zero: number,
  ): void;
}

const module = new Module(Buffer.from(KERNELS_WASM_BASE64, "base64"));
const PAGE = 65536;

/** The kinds of low_rank_merge's mode (kernels.c): 0 float32, 1 float16, 2 bfloat16. */
type FastDType = "F32" | "F16" | "BF16";
const KIND: Record<FastDType, number> = { F32: 0, F16: 1, BF16: 2 };
const ACCUMULATE = 256, NAN_B_FIRST = 512, NAN_ACCUMULATOR_FIRST = 1024;

/**
 * The largest rank the kernel takes. A 16-column strip of A (rank x 64
 * bytes) must stay in the cache while B's rows pass over it; published
 * adapters use ranks 1-256, and beyond this the scalar kernels run.
 */
export const MAX_FAST_RANK = 16384;

/** Whether the kernel reads and writes this dtype. */
export function isFastDType(dtype: FloatDType): dtype is FastDType {
  return dtype === "F32" || dtype === "F16" || dtype === "BF16";
}

/** One instance of the module: its memory past __heap_base is laid out by whoever holds it. */
class Arena {
  readonly #wasm = new Instance(module).exports as LowRankExports;
  readonly base = alignUp(this.#wasm.lr_heap_base(), 64);

  /** Room for `bytes` past the base (the memory grows; views made before are stale after). */
  reserve(bytes: number): void {
    const needed = this.base + bytes - this.#wasm.memory.buffer.byteLength;
    if (needed > 0) this.#wasm.memory.grow(Math.ceil(needed / PAGE));
  }

  floats(offset: number, count: number): Float32Array {
    return new Float32Array(this.#wasm.memory.buffer, offset, count);
  }

  bytes(offset: number, count: number): Uint8Array {
    return new Uint8Array(this.#wasm.memory.buffer, offset, count);
  }

  get merge(): LowRankExports["low_rank_merge"] {
    return this.#wasm.low_rank_merge;
  }
}

const idleArenas: Arena[] = [];
/** Arenas kept for reuse (one per merge running at once; one, in the CLI). */
const MAX_IDLE_ARENAS = 2;

function takeArena(): Arena {
  return idleArenas.pop() ?? new Arena();
}

function giveBackArena(arena: Arena): void {
  if (idleArenas.length < MAX_IDLE_ARENAS) idleArenas.push(arena);
}

const alignUp = (n: number, to: number) => Math.ceil(n / to) * to;

/** One step of a tensor's merge, as the kernels take it (`D`: the dtypes the update may be cast to). */
export interface BlockStep<D extends FloatDType = FloatDType> {
  rank: number;
  /** `lora_A` is rank x aCols, `lora_B` bRows x rank. */
  aCols: number;
  bRows: number;
  /** The update is the transpose of B @ A: its rows are A's columns (embeddings, fan_in_fan_out). */
  transposed: boolean;
  /** The float32 scaling. */
  scale: number;
  /** The dtype the update is cast to before the add ("F32": not cast). */
  deltaDType: D;
}

interface PlacedStep extends BlockStep<FastDType> {
  /** Where the kernel's A operand is, packed in strips (rank x stride floats): lora_A, or lora_B transposed. */
  operand: number;
  stride: number;
  /** Where the other factor is, as stored (row-major float32): lora_B, or for a transposed update lora_A. */
  stored: number;
}

/**
 * A tensor's merge, block by block of rows, in one arena: each step's
 * factors are loaded (as float32) through `setFactor()`, then `merge()` runs
 * for each block, then `close()`. Memory: each factor once (one packed for
 * the kernel as it is loaded), one block of W and, for more than one step,
 * the block as float32 between steps.
 */
export class LowRankBlocks {
  readonly #arena = takeArena();
  readonly #steps: PlacedStep[] = [];
  readonly #out: FastDType;
  readonly #cols: number;
  readonly #w: number;
  readonly #scratch: number;
  #closed = false;

  /** `rows` x `cols` of W in `out` (its dtype); blocks of at most `blockRows` rows. */
  constructor(out: FastDType, readonly rows: number, cols: number, steps: readonly BlockStep<FastDType>[], readonly blockRows: number) {
    this.#out = out;
    this.#cols = cols;
    let at = this.#arena.base;
    const take = (bytes: number) => {
      const where = at;
      at = alignUp(at + bytes, 64);
      return where;
    };
    for (const step of steps) {
      if (step.rank < 1 || step.rank > MAX_FAST_RANK) throw new RangeError(`low-rank blocks: rank ${step.rank} outside 1..${MAX_FAST_RANK}`);
      const columns = step.transposed ? step.bRows : step.aCols;
      const stride = alignUp(columns, 4);
      const operand = take(step.rank * stride * 4);
      const stored = take((step.transposed ? step.aCols : step.bRows) * step.rank * 4);
      this.#steps.push({ ...step, operand, stride, stored });
    }
    this.#w = take(blockRows * cols * dtypeSize(out));
    this.#scratch = steps.length > 1 ? take(blockRows * cols * 4) : this.#w;
    this.#arena.reserve(at - this.#arena.base);
    // Padding lanes of the operands: computed and never stored; zeros keep them finite and fast.
    for (const step of this.#steps) this.#arena.floats(step.operand, step.rank * step.stride).fill(0);
  }

  /**
   * Elements first .. first + values.length - 1 of step `s`'s lora_A (rank x
   * aCols) or lora_B (bRows x rank), float32 as stored: every element of both
   * goes in before the first `merge()`.
   */
  setFactor(s: number, which: "a" | "b", first: number, values: Float32Array): void {
    const step = this.#steps[s]!;
    const total = which === "a" ? step.rank * step.aCols : step.bRows * step.rank;
    if (!Number.isInteger(first) || first < 0 || first + values.length > total) throw new RangeError(`low-rank blocks: elements ${first}..${first + values.length} of a factor of ${total}`);
    const packed = step.transposed ? which === "b" : which === "a";
    if (!packed) this.#arena.floats(step.stored + first * 4, values.length).set(values);
    else packStrips(values, first, step.transposed, step.rank, step.transposed ? step.bRows : step.aCols, this.#arena.floats(step.operand, step.rank * step.stride));
  }

  /**
   * Rows first .. first + n - 1 of W: `w` holds them in the output dtype;
   * the merged rows are written to `out` (the same size; it may be `w`).
   */
  merge(first: number, w: Uint8Array, out: Uint8Array): void {
    const n = w.length / (this.#cols * dtypeSize(this.#out));
    if (!Number.isInteger(n) || n < 1 || n > this.blockRows || first + n > this.rows || out.length !== w.length) {
      throw new RangeError(`low-rank blocks: ${w.length} bytes at row ${first} are not whole rows of a block (${this.blockRows} rows of ${this.#cols})`);
    }
    this.#arena.bytes(this.#w, w.length).set(w);
    const last = this.#steps.length - 1;
    for (let s = 0; s <= last; s++) {
      const step = this.#steps[s]!;
      // Between steps W is float32 (already rounded to its dtype, as torch holds it).
      const from = s === 0 ? this.#w : this.#scratch, to = s === last ? this.#w : this.#scratch;
      const inKind = s === 0 ? KIND[this.#out] : 0, storeKind = s === last ? KIND[this.#out] : 0;
      // A transposed update's rows are A's columns first..: element (t, l) of its B operand is lora_A[l][first + t].
      const [b, bRow, bL] = step.transposed ? [step.stored + first * 4, 1, step.aCols] : [step.stored + first * step.rank * 4, step.rank, 1];
      // torch's matrix-vector path (B @ A with one column) keeps the other operands' NaN; a
      // transposed update's product keeps A's NaN first, and A is the kernel's B side there.
      const gemv = step.aCols === 1;
      const bFirst = step.transposed ? !gemv : gemv;
      const mode = KIND[step.deltaDType] | (KIND[this.#out] << 2) | (inKind << 4) | (storeKind << 6) | ACCUMULATE |
        (bFirst ? NAN_B_FIRST : 0) | (gemv ? NAN_ACCUMULATOR_FIRST : 0);
      this.#arena.merge(step.operand, step.stride, b, bRow, bL, from, to, n, this.#cols, step.rank, step.scale, mode, 0);
    }
    out.set(this.#arena.bytes(this.#w, w.length));
  }

  /** Gives the arena back for the next merge. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    giveBackArena(this.#arena);
  }
}

const dtypeSize = (dtype: FastDType) => (dtype === "F32" ? 4 : 2);

/**
 * Elements first .. of the kernel's A operand (rank x columns), into its
 * strips in `out` (kernels.c): columns j .. j+15 while 16 fit in the padded
 * width, then 4 at a time, each strip rank rows of its width at j * rank.
 * `values` run along A (rank x columns, row-major) or, `transposed`, along
 * B (columns x rank). Padding lanes are left as they are (zero).
 */
function packStrips(values: Float32Array, first: number, transposed: boolean, rank: number, columns: number, out: Float32Array): void {
  const whole = Math.floor(alignUp(columns, 4) / 16) * 16;
  const along = transposed ? rank : columns;
  let outer = Math.floor(first / along), inner = first - outer * along;
  for (let k = 0; k < values.length; k++) {
    const l = transposed ? inner : outer, j = transposed ? outer : inner;
    const width = j < whole ? 16 : 4;
    const strip = j < whole ? j - (j & 15) : j - ((j - whole) & 3);
    out[strip * rank + l * width + (j - strip)] = values[k]!;
    if (++inner === along) {
      inner = 0;
      outer++;
    }
  }
}

/**
 * One step on float32 values (the scalar kernels' interface, low-rank-step.ts):
 * w (rows x cols) = the step applied with u = b (rows x rank) @ a (rank x cols).
 * `nanBFirst` / `nanAccumulatorFirst`: which operand's NaN torch keeps (kernels.c).
 */
function mergeFloat32(operand: Float32Array, columns: number, b: Float32Array, bRow: number, bL: number, rows: number, rank: number, w: Float32Array, step: LowRankStep, nanBFirst: boolean, nanAccumulatorFirst: boolean): void {
  const arena = takeArena();
  try {
    const stride = alignUp(columns, 4);
    const at = arena.base;
    const wAt = at + rank * stride * 4, bAt = alignUp(wAt + w.length * 4, 64);
    arena.reserve(bAt + b.length * 4 - at);
    const packed = arena.floats(at, rank * stride);
    packed.fill(0);
    packStrips(operand, 0, false, rank, columns, packed);
    arena.floats(bAt, b.length).set(b);
    arena.floats(wAt, w.length).set(w);
    const mode = KIND[step.deltaDType as FastDType] | (KIND[step.outDType as FastDType] << 2) | (step.accumulate ? ACCUMULATE : 0) |
      (nanBFirst ? NAN_B_FIRST : 0) | (nanAccumulatorFirst ? NAN_ACCUMULATOR_FIRST : 0);
    arena.merge(at, stride, bAt, bRow, bL, wAt, wAt, rows, columns, rank, step.scale, mode, 0);
    w.set(arena.floats(wAt, w.length));
  } finally {
    giveBackArena(arena);
  }
}

export function mergeLowRankRows(b: Float32Array, a: Float32Array, rank: number, cols: number, w: Float32Array, step: LowRankStep): void {
  // torch's matrix-vector path (one column) keeps the other operands' NaN.
  mergeFloat32(a, cols, b, rank, 1, b.length / rank, rank, w, step, cols === 1, cols === 1);
}

export function mergeLowRankColumns(b: Float32Array, a: Float32Array, rank: number, cols: number, first: number, count: number, w: Float32Array, step: LowRankStep): void {
  const rows = b.length / rank;
  // out[t][i] = sum_l A[l][first + t] * B[i][l]: A's columns times B's transpose, each
  // element summed over l in the same order. torch's product keeps A's NaN first: A is
  // the kernel's B side here.
  const aColumns = new Float32Array(count * rank);
  for (let t = 0; t < count; t++) for (let l = 0; l < rank; l++) aColumns[t * rank + l] = a[l * cols + first + t]!;
  const bTransposed = new Float32Array(rank * rows);
  for (let i = 0; i < rows; i++) for (let l = 0; l < rank; l++) bTransposed[l * rows + i] = b[i * rank + l]!;
  mergeFloat32(bTransposed, rows, aColumns, rank, 1, count, rank, w, step, cols !== 1, cols === 1);
}
