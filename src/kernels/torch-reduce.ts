/**
 * float32 `x.sum()` and `x.mean(dim=0)` exactly as PyTorch computes them on
 * CPU, streaming. A publisher convention (Stanford Alpaca's weight_diff.py)
 * makes a new embedding row as the mean of the existing rows and checks a
 * recovered model by summing every tensor; reproducing those bits needs
 * torch's order of float32 additions, not merely an accurate sum.
 *
 * What torch runs: `cascade_sum` in aten/src/ATen/native/cpu/SumKernel.cpp,
 * driven by `parallel_reduce` in TensorIteratorReduce.cpp; `mean` on CPU is
 * `sum_out(...).div_(n)` (ReduceOps.cpp). Checked against torch 1.13's outputs
 * (test/fixtures/reduce); current 2.x sources have the same float32 path.
 * - Every addition is a float32 addition (`acc_type<float, is_cuda = true>`
 *   is float, not double): one rounding each.
 * - multi_row_sum: each lane adds its values into level 0; after every 2^p
 *   values level 0 is added into level 1 and cleared, after every 2^2p level
 *   1 into level 2, after every 2^3p level 2 into level 3, where
 *   p = max(4, floor(CeilLog2(count) / 4)); values after the last whole block
 *   of 2^p stay in level 0. The lane's total is ((L0 + L1) + L2) + L3.
 * - row_sum (ILP 4): value 4i + j feeds lane j of a 4-lane multi_row_sum over
 *   floor(count / 4) values; the count % 4 values left over are then added to
 *   lane 0; the total is ((lane0 + lane1) + lane2) + lane3.
 * - x.sum() of contiguous data is one loop over n elements, 1-D after
 *   TensorIterator coalesces the dims (vectorized_inner_sum): row_sum of
 *   Vectorized<float> loads of V floats (V = 8 for AVX2 and DEFAULT, 16 for
 *   AVX512), i.e. 4V lanes, element e in lane e % 4V; then final = 0, plus
 *   the n % V elements after the last whole vector one by one, plus the V
 *   lanes of the vector total in lane order. With n < V it is the scalar
 *   row_sum (the same with V = 1 and no `final`).
 * - x.sum(dim=0) of a row-major [R, C] matrix (vectorized_outer_sum when
 *   C >= V): one lane per column, straight down the R rows. Columns in whole
 *   blocks of 4V (4 vectors) get multi_row_sum over the R rows; the columns
 *   after the last block (blocks of V, then single columns) get row_sum, ILP
 *   4 over the rows. With C < V (scalar_outer_sum) whole blocks of 4 columns
 *   get multi_row_sum and the rest row_sum. A single column coalesces to the
 *   x.sum() case. Every result is stored as 0 + total (so -0 comes out +0).
 * - Threads: with torch.get_num_threads() = T > 1 and at least GRAIN_SIZE
 *   (32768) input elements, x.sum() is cut into at most T contiguous ranges
 *   (OpenMP's split in at::parallel_for: min(T, ceil(n / 32768)) ranges of
 *   ceil(n / ranges) elements), each summed as above into its own slot of a
 *   T-slot buffer (unused slots stay +0), and the buffer is then summed by the
 *   same loop: the result depends on T. A column sum is cut between columns
 *   instead (parallel_dim_reduction: ceil(C / min(T, C)) columns per thread,
 *   cut points rounded down to multiples of 32 floats), each piece running
 *   vectorized_outer_sum by itself; T shows only where a piece's block layout
 *   differs from the whole matrix's (AVX512's 64-column blocks against the
 *   32-column cuts, or a last piece narrower than V).
 * - mean = float32(sum) / float32(R), one IEEE division per column.
 *
 * Memory never depends on R or the tensor size: a column mean keeps 4
 * levels per column (4 x 4 for each row_sum column, fewer than 4V of them
 * per piece), a full sum 4 levels of 4V lanes and the T slots.
 */

/** at::internal::GRAIN_SIZE: below this many input elements torch reduces on one thread. */
const GRAIN_SIZE = 32768;
/** multi_row_sum's num_levels. */
const LEVELS = 4;
/** row_sum's ilp_factor, and vectorized_outer_sum's nrows (vectors per block). */
const ILP = 4;
/** parallel_dim_reduction rounds column splits to 128 bytes of the input. */
const SPLIT_COLUMN_MULTIPLE = 128 / 4;

/**
 * The CPU kernel torch dispatched to: torch.backends.cpu.get_cpu_capability()
 * in torch 2.x, "CPU capability usage" in torch.__config__.show() ("NO AVX" is
 * DEFAULT). It fixes the width of at::vec::Vectorized<float>, hence the order
 * of the additions: 8 floats for AVX2 and DEFAULT, 16 for AVX512.
 */
export type TorchCpuCapability = "DEFAULT" | "AVX2" | "AVX512";

export interface TorchReduceOptions {
  /**
   * Default "AVX2", what x86-64 builds dispatch to on AVX2 CPUs. Stock torch
   * 2.x builds pick "AVX512" by themselves on CPUs with AVX512 VL/BW/DQ;
   * ATEN_CPU_CAPABILITY overrides either.
   */
  readonly cpuCapability?: TorchCpuCapability;
  /**
   * torch.get_num_threads() where torch ran (default 1). x.sum() of 32768 or
   * more elements depends on it (see the module comment). The split emulated
   * is OpenMP's (torch.__config__.show() lists OpenMP); a build on torch's
   * native thread pool instead splits sums of fewer than 32768 x threads
   * elements differently.
   */
  readonly threads?: number;
}

function floatsPerVector(capability: TorchCpuCapability | undefined): number {
  switch (capability ?? "AVX2") {
    case "DEFAULT": // the generic Vectorized<float> is 32 bytes too
    case "AVX2": return 8;
    case "AVX512": return 16;
    default: throw new RangeError(`unknown torch CPU capability ${String(capability)}`);
  }
}

/** Far above any machine's core count; bounds the per-thread buffer a sum allocates. */
const MAX_THREADS = 1 << 16;

function threadCount(threads: number | undefined): number {
  const count = threads ?? 1;
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_THREADS) {
    throw new RangeError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${count}`);
  }
  return count;
}

function checkCount(what: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum) throw new RangeError(`${what} must be an integer >= ${minimum}, got ${value}`);
}

/** at::native::utils::CeilLog2: 1 for x <= 2, else the bit length of x - 1. */
function ceilLog2(x: number): number {
  if (x <= 2) return 1;
  let bits = 0;
  for (let rest = x - 1; rest >= 1; rest = Math.floor(rest / 2)) bits++;
  return bits;
}

/** The values per level-0 block in multi_row_sum over `count` rows: 2^max(4, ceil(log2(count)) / 4). */
function levelStep(count: number): number {
  return 2 ** Math.max(4, Math.floor(ceilLog2(count) / LEVELS));
}

/**
 * The accumulators of one multi_row_sum: `lanes` independent float32 sums
 * over `count` rows each. The caller adds row values into `level0` itself (the
 * hot loop) and calls `rowsDone` at every multiple of `step` rows.
 */
class MultiRowSum {
  readonly level0: Float32Array;
  private readonly level1: Float32Array;
  private readonly level2: Float32Array;
  private readonly level3: Float32Array;
  /** Rows per level-0 block. */
  readonly step: number;

  constructor(readonly lanes: number, count: number) {
    this.level0 = new Float32Array(lanes);
    this.level1 = new Float32Array(lanes);
    this.level2 = new Float32Array(lanes);
    this.level3 = new Float32Array(lanes);
    this.step = levelStep(count);
  }

  /** The carry after a whole block: `rows` (a multiple of `step`) have been added so far. */
  rowsDone(rows: number): void {
    const { level0, level1, level2, level3, lanes, step } = this;
    for (let k = 0; k < lanes; k++) { level1[k] = level1[k]! + level0[k]!; level0[k] = 0; }
    if (rows % (step * step) !== 0) return;
    for (let k = 0; k < lanes; k++) { level2[k] = level2[k]! + level1[k]!; level1[k] = 0; }
    if (rows % (step * step * step) !== 0) return;
    for (let k = 0; k < lanes; k++) { level3[k] = level3[k]! + level2[k]!; level2[k] = 0; }
  }

  private collapsed = false;

  /** Each lane's total, ((L0 + L1) + L2) + L3, in level0 (which it returns); no rows may follow. */
  collapse(): Float32Array {
    const { level0, level1, level2, level3, lanes } = this;
    if (this.collapsed) return level0;
    this.collapsed = true;
    for (let k = 0; k < lanes; k++) level0[k] = level0[k]! + level1[k]!;
    for (let k = 0; k < lanes; k++) level0[k] = level0[k]! + level2[k]!;
    for (let k = 0; k < lanes; k++) level0[k] = level0[k]! + level3[k]!;
    return level0;
  }
}

/**
 * One call of the reduction loop on `count` contiguous floats reduced to one
 * value: vectorized_inner_sum (count >= V), or scalar row_sum (count < V),
 * which is the same algorithm with V = 1. Fed in any pieces.
 */
class ContiguousRunSum {
  private readonly vector: number;
  private readonly lanes: number;
  /** Elements in whole rows of 4 vectors (the multi_row_sum part). */
  private readonly blockedEnd: number;
  /** Elements in whole vectors. */
  private readonly vectorEnd: number;
  private readonly multiRow: MultiRowSum;
  /** Elements per multi_row_sum carry (step rows of 4 vectors). */
  private readonly stepElements: number;
  private position = 0;
  private finished = false;
  /** vectorized_inner_sum's final_acc: the leftover scalars, then the vector's lanes. */
  private scalarTail = 0;

  constructor(readonly count: number, floatsPerVector: number) {
    this.vector = count >= floatsPerVector ? floatsPerVector : 1;
    this.lanes = ILP * this.vector;
    const vectors = Math.floor(count / this.vector);
    const rows = Math.floor(vectors / ILP);
    this.blockedEnd = rows * this.lanes;
    this.vectorEnd = vectors * this.vector;
    this.multiRow = new MultiRowSum(this.lanes, rows);
    this.stepElements = this.multiRow.step * this.lanes;
  }

  get remaining(): number {
    return this.count - this.position;
  }

  /** Adds data[from, to); to - from <= remaining. */
  add(data: Float32Array, from: number, to: number): void {
    if (this.position < this.blockedEnd) from = this.addBlocked(data, from, to);
    if (from === to) return;
    const lanes = this.collapsedLanes();
    const vector = this.vector;
    while (from < to && this.position < this.vectorEnd) {
      // row_sum: the vectors after the last whole row of 4 go into partial 0.
      const lane = this.position % vector;
      lanes[lane] = lanes[lane]! + data[from++]!;
      this.position++;
    }
    let tail = this.scalarTail;
    while (from < to) { tail = Math.fround(tail + data[from++]!); this.position++; }
    this.scalarTail = tail;
  }

  private addBlocked(data: Float32Array, from: number, to: number): number {
    const { lanes, stepElements, multiRow } = this;
    const level0 = multiRow.level0;
    while (from < to && this.position < this.blockedEnd) {
      const count = Math.min(to - from, stepElements - (this.position % stepElements), this.blockedEnd - this.position);
      let lane = this.position % lanes;
      let i = from;
      const end = from + count;
      if (lane !== 0) {
        while (i < end && lane < lanes) { level0[lane] = level0[lane]! + data[i++]!; lane++; }
        if (lane === lanes) lane = 0;
      }
      if (lane === 0) {
        // Four lanes at a time down the whole rows (at most one carry block,
        // a few KB that stay in cache): the sums stay in registers, rounded to
        // float32 after every addition as the vector add does, and four
        // independent add-and-round chains overlap. lanes is 4, 32 or 64.
        const rows = Math.floor((end - i) / lanes);
        const rowsEnd = i + rows * lanes;
        for (let k = 0; k < lanes; k += 4) {
          let s0 = level0[k]!, s1 = level0[k + 1]!, s2 = level0[k + 2]!, s3 = level0[k + 3]!;
          for (let j = i + k; j < rowsEnd; j += lanes) {
            s0 = Math.fround(s0 + data[j]!);
            s1 = Math.fround(s1 + data[j + 1]!);
            s2 = Math.fround(s2 + data[j + 2]!);
            s3 = Math.fround(s3 + data[j + 3]!);
          }
          level0[k] = s0; level0[k + 1] = s1; level0[k + 2] = s2; level0[k + 3] = s3;
        }
        i = rowsEnd;
        while (i < end) { level0[lane] = level0[lane]! + data[i++]!; lane++; }
      }
      this.position += count;
      from = end;
      if (this.position % stepElements === 0) multiRow.rowsDone(this.position / lanes);
    }
    return from;
  }

  /** The 4V lanes' totals after the multi_row_sum part. */
  private collapsedLanes(): Float32Array {
    return this.multiRow.collapse();
  }

  /** The value the loop stores: 0 + total (CastStoreAccumulate on a zeroed output). */
  finish(): number {
    if (this.position !== this.count) throw new RangeError(`a run of ${this.count} elements got ${this.position}`);
    if (this.finished) throw new Error("a run is finished once");
    this.finished = true;
    const lanes = this.collapsedLanes();
    const vector = this.vector;
    // row_sum's last step: partial 0 += partial 1, += partial 2, += partial 3.
    for (let j = 1; j < ILP; j++) {
      for (let k = 0; k < vector; k++) lanes[k] = lanes[k]! + lanes[j * vector + k]!;
    }
    let total = this.scalarTail;
    if (this.vector === 1) total = lanes[0]!; // scalar row_sum: no final_acc
    else for (let k = 0; k < vector; k++) total = Math.fround(total + lanes[k]!);
    return Math.fround(0 + total);
  }
}

/** The sum torch's reduction loop computes for a small in-memory array (the per-thread buffer). */
function sumOfRun(values: Float32Array, floatsPerVector: number): number {
  const run = new ContiguousRunSum(values.length, floatsPerVector);
  run.add(values, 0, values.length);
  return run.finish();
}

/**
 * at::parallel_for's split under OpenMP (invoke_parallel): min(T, ceil(n /
 * grain)) threads, each taking ceil(n / threads) consecutive indices.
 */
function openMpRanges(count: number, grain: number, threads: number): Array<[number, number]> {
  if (count <= grain || threads === 1) return [[0, count]];
  const used = Math.min(threads, Math.ceil(count / grain));
  const chunk = Math.ceil(count / used);
  const ranges: Array<[number, number]> = [];
  for (let begin = 0; begin < count; begin += chunk) ranges.push([begin, Math.min(count, begin + chunk)]);
  return ranges;
}

/**
 * Streaming float32 `x.sum()` of a contiguous tensor of `elementCount`
 * elements, bit for bit as torch computes it on CPU. Push the elements in
 * order, in chunks of any length; then `result()`.
 */
export class TorchSumAccumulator {
  private readonly floatsPerVector: number;
  private readonly threads: number;
  /** two_pass_reduction: per-thread ranges, then a sum of the thread slots. */
  private readonly twoPass: boolean;
  private readonly ranges: Array<[number, number]>;
  private readonly rangeSums: Float32Array;
  private rangeIndex = 0;
  private run: ContiguousRunSum | undefined;
  private received = 0;

  constructor(readonly elementCount: number, options: TorchReduceOptions = {}) {
    checkCount("elementCount", elementCount, 0);
    this.floatsPerVector = floatsPerVector(options.cpuCapability);
    this.threads = threadCount(options.threads);
    // parallel_reduce: one thread below GRAIN_SIZE, else two_pass_reduction
    // with at::parallel_for(0, numel, GRAIN_SIZE).
    this.twoPass = elementCount >= GRAIN_SIZE && this.threads > 1;
    this.ranges = this.twoPass ? openMpRanges(elementCount, GRAIN_SIZE, this.threads) : [[0, elementCount]];
    this.rangeSums = new Float32Array(this.threads);
    this.run = elementCount > 0 ? new ContiguousRunSum(this.ranges[0]![1], this.floatsPerVector) : undefined;
  }

  /** Elements pushed so far. */
  get elementsReceived(): number {
    return this.received;
  }

  push(chunk: Float32Array): void {
    if (chunk.length > this.elementCount - this.received) {
      throw new RangeError(`pushed ${this.received + chunk.length} elements into a sum of ${this.elementCount}`);
    }
    let from = 0;
    while (from < chunk.length) {
      const run = this.run!;
      const take = Math.min(run.remaining, chunk.length - from);
      run.add(chunk, from, from + take);
      from += take;
      if (run.remaining === 0) this.nextRange();
    }
    this.received += chunk.length;
  }

  private nextRange(): void {
    this.rangeSums[this.rangeIndex] = this.run!.finish();
    this.rangeIndex++;
    const range = this.ranges[this.rangeIndex];
    this.run = range ? new ContiguousRunSum(range[1] - range[0], this.floatsPerVector) : undefined;
  }

  /** torch's float32 result (as a JS number, exactly representable in float32). */
  result(): number {
    if (this.received !== this.elementCount) {
      throw new RangeError(`a sum of ${this.elementCount} elements was given ${this.received}`);
    }
    if (!this.twoPass) return this.rangeSums[0]!;
    // two_pass_reduction's second pass: the T per-thread slots (idle threads
    // left at +0) reduced by the same loop.
    return sumOfRun(this.rangeSums, this.floatsPerVector);
  }
}

/** How one column is summed over the rows. */
const enum ColumnPath {
  /** multi_row_sum straight down the column (blocks of 4V columns, or of 4 in scalar_outer_sum). */
  Blocked = 0,
  /** row_sum: ILP 4 over the rows (the columns after the last whole block). */
  Ilp = 1,
}

/**
 * Which path each column takes: parallel_dim_reduction's split of the columns
 * into pieces (at multiples of 32), then vectorized_outer_sum or
 * scalar_outer_sum on each piece.
 */
function columnPaths(rows: number, columns: number, floatsPerVector: number, threads: number): Uint8Array {
  const paths = new Uint8Array(columns);
  const pieces: Array<[number, number]> = [];
  if (rows * columns < GRAIN_SIZE || threads === 1 || columns === 1) {
    pieces.push([0, columns]);
  } else {
    for (const [begin, end] of openMpRanges(columns, 1, threads)) {
      const roundedBegin = begin - (begin % SPLIT_COLUMN_MULTIPLE);
      const roundedEnd = end === columns ? end : end - (end % SPLIT_COLUMN_MULTIPLE);
      if (roundedBegin !== roundedEnd) pieces.push([roundedBegin, roundedEnd]);
    }
  }
  for (const [begin, end] of pieces) {
    const width = end - begin;
    const block = width >= floatsPerVector ? ILP * floatsPerVector : ILP;
    const blocked = width - (width % block);
    paths.fill(ColumnPath.Ilp, begin, end);
    paths.fill(ColumnPath.Blocked, begin, begin + blocked);
  }
  return paths;
}

/**
 * Streaming float32 `x.sum(dim=0)` and `x.mean(dim=0)` of a contiguous
 * row-major [rows, columns] matrix, bit for bit as torch computes them on
 * CPU. Push whole rows in order, any number per block; then `sums()` or
 * `means()`.
 */
export class TorchColumnMeanAccumulator {
  private readonly floatsPerVector: number;
  private rowsReceived = 0;
  /** A single column is a full reduction in torch (the dims coalesce): threads and all. */
  private readonly singleColumn: TorchSumAccumulator | undefined;
  /** Contiguous [begin, end) spans of Blocked columns. */
  private readonly blockedSpans: Array<[number, number]> = [];
  private readonly blocked: MultiRowSum;
  private readonly ilpColumns: Int32Array;
  /** Lanes column-major by ILP slot: slot s of ilp column j is lane s * ilpColumns.length + j. */
  private readonly ilp: MultiRowSum;
  /** Rows in whole groups of 4 (row_sum's multi_row_sum part). */
  private readonly ilpBlockedRows: number;
  private columnSums: Float32Array | undefined;

  constructor(readonly rows: number, readonly columns: number, options: TorchReduceOptions = {}) {
    checkCount("rows", rows, 1);
    checkCount("columns", columns, 1);
    this.floatsPerVector = floatsPerVector(options.cpuCapability);
    const threads = threadCount(options.threads);
    if (columns === 1) this.singleColumn = new TorchSumAccumulator(rows, options);
    const paths = columnPaths(rows, columns, this.floatsPerVector, threads);
    const ilpColumns: number[] = [];
    for (let c = 0; c < columns; c++) {
      if (paths[c] === ColumnPath.Ilp) { ilpColumns.push(c); continue; }
      const last = this.blockedSpans[this.blockedSpans.length - 1];
      if (last && last[1] === c) last[1] = c + 1;
      else this.blockedSpans.push([c, c + 1]);
    }
    this.blocked = new MultiRowSum(columns, rows);
    this.ilpColumns = Int32Array.from(ilpColumns);
    this.ilp = new MultiRowSum(ILP * ilpColumns.length, Math.floor(rows / ILP));
    this.ilpBlockedRows = Math.floor(rows / ILP) * ILP;
  }

  /** `block` holds whole rows (a multiple of `columns` floats), the next ones in order. */
  push(block: Float32Array): void {
    const { columns } = this;
    if (block.length % columns !== 0) {
      throw new RangeError(`a block of ${block.length} floats is not whole rows of ${columns}`);
    }
    const blockRows = block.length / columns;
    if (blockRows > this.rows - this.rowsReceived) {
      throw new RangeError(`pushed ${this.rowsReceived + blockRows} rows into a mean of ${this.rows}`);
    }
    if (this.singleColumn) {
      this.singleColumn.push(block);
      this.rowsReceived += blockRows;
      return;
    }
    const step = this.blocked.step;
    for (let r = 0; r < blockRows;) {
      // Rows up to the next carry of the blocked columns' levels.
      const rows = Math.min(blockRows - r, step - (this.rowsReceived % step));
      this.addBlockedRows(block, r, rows);
      if (this.ilpColumns.length > 0) {
        for (let k = 0; k < rows; k++) this.addIlpRow(block, (r + k) * columns, this.rowsReceived + k);
      }
      r += rows;
      this.rowsReceived += rows;
      if (this.rowsReceived % step === 0) this.blocked.rowsDone(this.rowsReceived);
    }
  }

  /** Rows [first, first + rows) of the block into level 0 of the blocked columns. */
  private addBlockedRows(block: Float32Array, first: number, rows: number): void {
    const { columns } = this;
    const level0 = this.blocked.level0;
    const start = first * columns;
    const end = start + rows * columns;
    for (const [begin, spanEnd] of this.blockedSpans) {
      // Four columns at a time down the rows (at most one carry block of
      // rows): the sums stay in registers and four add-and-round chains overlap.
      let c = begin;
      for (; c + 4 <= spanEnd; c += 4) {
        let s0 = level0[c]!, s1 = level0[c + 1]!, s2 = level0[c + 2]!, s3 = level0[c + 3]!;
        for (let i = start + c; i < end; i += columns) {
          s0 = Math.fround(s0 + block[i]!);
          s1 = Math.fround(s1 + block[i + 1]!);
          s2 = Math.fround(s2 + block[i + 2]!);
          s3 = Math.fround(s3 + block[i + 3]!);
        }
        level0[c] = s0; level0[c + 1] = s1; level0[c + 2] = s2; level0[c + 3] = s3;
      }
      for (; c < spanEnd; c++) {
        let sum = level0[c]!;
        for (let i = start + c; i < end; i += columns) sum = Math.fround(sum + block[i]!);
        level0[c] = sum;
      }
    }
  }

  private addIlpRow(block: Float32Array, base: number, row: number): void {
    const ilpColumns = this.ilpColumns;
    const count = ilpColumns.length;
    if (row < this.ilpBlockedRows) {
      const level0 = this.ilp.level0;
      const offset = (row % ILP) * count;
      for (let j = 0; j < count; j++) level0[offset + j] = level0[offset + j]! + block[base + ilpColumns[j]!]!;
      if (row % ILP === ILP - 1) {
        const groups = (row + 1) / ILP;
        if (groups % this.ilp.step === 0) this.ilp.rowsDone(groups);
      }
      return;
    }
    // row_sum: rows after the last whole group of 4 go into partial 0.
    const totals = this.ilpLaneTotals();
    for (let j = 0; j < count; j++) totals[j] = totals[j]! + block[base + ilpColumns[j]!]!;
  }

  private ilpLaneTotals(): Float32Array {
    return this.ilp.collapse();
  }

  /** torch's `x.sum(dim=0)`: one float32 per column (a new array each call). */
  sums(): Float32Array {
    if (this.rowsReceived !== this.rows) {
      throw new RangeError(`a mean over ${this.rows} rows was given ${this.rowsReceived}`);
    }
    this.columnSums ??= this.computeSums();
    return this.columnSums.slice();
  }

  private computeSums(): Float32Array {
    const out = new Float32Array(this.columns);
    if (this.singleColumn) {
      out[0] = this.singleColumn.result();
      return out;
    }
    const blockedTotals = this.blocked.collapse();
    for (const [begin, end] of this.blockedSpans) {
      for (let c = begin; c < end; c++) out[c] = 0 + blockedTotals[c]!;
    }
    const count = this.ilpColumns.length;
    if (count > 0) {
      const totals = this.ilpLaneTotals();
      for (let j = 0; j < count; j++) {
        let total = totals[j]!;
        for (let s = 1; s < ILP; s++) total = Math.fround(total + totals[s * count + j]!);
        out[this.ilpColumns[j]!] = 0 + total;
      }
    }
    return out;
  }

  /** torch's `x.mean(dim=0)`: the sums divided by float32(rows) in float32. */
  means(): Float32Array {
    const out = this.sums();
    const divisor = Math.fround(this.rows);
    for (let c = 0; c < out.length; c++) out[c] = out[c]! / divisor;
    return out;
  }
}

/** torch's float32 `x.sum()` of contiguous data held in memory. */
export function torchSum(data: Float32Array, options?: TorchReduceOptions): number {
  const sum = new TorchSumAccumulator(data.length, options);
  sum.push(data);
  return sum.result();
}

/** torch's float32 `x.mean(dim=0)` of a contiguous row-major [rows, data.length / rows] matrix. */
export function torchColumnMean(data: Float32Array, rows: number, options?: TorchReduceOptions): Float32Array {
  checkCount("rows", rows, 1);
  if (data.length % rows !== 0) throw new RangeError(`${data.length} floats are not ${rows} whole rows`);
  const mean = new TorchColumnMeanAccumulator(rows, data.length / rows, options);
  mean.push(data);
  return mean.means();
}
