/**
 * Serves a strided view's bytes as if it were contiguous (row-major), in
 * bounded chunks. A contiguous view is one file range. Anything else
 * (transposed, sliced, permuted, expanded) is gathered block by block:
 *
 * - The requested elements are cut into boxes of at most a block's worth
 *   (some leading indices fixed, one index over a range, the rest full), so
 *   each box can be walked in any dimension order.
 * - A box is walked largest stride first, which visits the storage in
 *   increasing order for any view torch makes (a hostile stride pattern that
 *   does not is sorted instead), so nearby elements form runs.
 * - Runs are read (a few at a time, each at most chunkBytes, never much more
 *   than they keep) and scattered into the block.
 *
 * Memory per block is a small multiple of chunkBytes, never the tensor or
 * the storage.
 */
import type { ReadAt } from "./zip.js";

export interface StridedLayout {
  /** File position of storage element 0. */
  dataStart: number;
  itemSize: number;
  storageOffset: number;
  shape: readonly number[];
  strides: readonly number[];
}

/** Elements gathered one by one at most at once: bounds the per-element
 * index arrays' memory (12 bytes each). */
const MAX_ELEMENT_GATHER = 1 << 20;
/** Runs shorter than this are gathered element by element: the per-run
 * arrays (16 bytes a run) then stay within a byte per element. */
const MIN_RUN_ELEMENTS = 16;
/** Bytes a run may read past the ones it wants, beyond as many as it wants:
 * short gaps are read through (fewer reads), but a run never reads more than
 * about twice what it keeps, so a strided view costs about its own size in
 * I/O, not the whole storage per block. */
const SLACK_BYTES = 256;
/** Reads in flight at once while gathering a block. */
const MAX_READS_IN_FLIGHT = 16;

export function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

/**
 * Yields bytes [start, end) of the view laid out contiguously, as fresh
 * buffers of at most `chunkBytes` (element-aligned when chunkBytes allows).
 */
export async function* readStrided(
  read: ReadAt,
  layout: StridedLayout,
  start: number,
  end: number,
  chunkBytes: number,
): AsyncGenerator<Uint8Array> {
  const { itemSize, shape, strides } = layout;
  const step = chunkBytes >= itemSize ? chunkBytes - (chunkBytes % itemSize) : chunkBytes;
  if (isContiguous(shape, strides)) {
    const base = layout.dataStart + layout.storageOffset * itemSize;
    for (let at = start; at < end; at += step) yield await read(base + at, Math.min(step, end - at));
    return;
  }

  const firstElement = Math.floor(start / itemSize);
  const endElement = Math.ceil(end / itemSize);
  const blockElements = Math.max(1, Math.floor(step / itemSize));
  let e0 = firstElement;
  for (const box of boxes(shape, firstElement, endElement, blockElements)) {
    const block = new Uint8Array(box.elements * itemSize);
    if (!(await gatherRuns(read, layout, box, chunkBytes, block))) {
      // Short or overlapping runs: element by element, in bounded pieces.
      let offset = 0;
      for (const piece of boxes(shape, e0, e0 + box.elements, MAX_ELEMENT_GATHER)) {
        await gatherElements(read, layout, piece, chunkBytes, block, offset);
        offset += piece.elements * itemSize;
      }
    }
    // Trim the partial elements at the requested byte range's edges.
    const from = e0 === firstElement ? start - firstElement * itemSize : 0;
    e0 += box.elements;
    const to = e0 === endElement ? block.length - (endElement * itemSize - end) : block.length;
    for (let at = from; at < to; at += step) {
      yield at === 0 && to <= step && to === block.length ? block : block.slice(at, Math.min(to, at + step));
    }
  }
}

/** Indices idx[0..d) fixed, index d over [idx[d], idx[d] + n), the dimensions after d in full. */
interface Box {
  idx: readonly number[];
  d: number;
  n: number;
  elements: number;
}

/**
 * Cuts the row-major element range [first, end) into consecutive boxes of at
 * most `limit` elements: at most a few small boxes at each end of the range,
 * large ones in between.
 */
function* boxes(shape: readonly number[], first: number, end: number, limit: number): Generator<Box> {
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let rest = first;
  for (let k = rank - 1; k >= 0; k--) {
    idx[k] = rest % shape[k]!;
    rest = Math.floor(rest / shape[k]!);
  }
  if (rank === 0) {
    if (first < end) yield { idx: [], d: -1, n: 1, elements: 1 };
    return;
  }
  let pos = first;
  while (pos < end) {
    const room = Math.min(limit, end - pos);
    // The outermost d whose inner dimensions start at 0 and fit in the room.
    let d = 0;
    let inner = 1;
    for (let k = 0; k < rank; k++) {
      inner = 1;
      for (let j = k + 1; j < rank; j++) inner *= shape[j]!;
      let aligned = true;
      for (let j = k + 1; j < rank; j++) if (idx[j] !== 0) aligned = false;
      if (aligned && inner <= room) {
        d = k;
        break;
      }
    }
    const n = Math.min(shape[d]! - idx[d]!, Math.floor(room / inner));
    yield { idx: [...idx], d, n, elements: n * inner };
    pos += n * inner;
    // Advance the index by n along d, carrying outward.
    idx[d] = idx[d]! + n;
    for (let k = d; k > 0 && idx[k]! >= shape[k]!; k--) {
      idx[k] = 0;
      idx[k - 1] = idx[k - 1]! + 1;
    }
  }
}

/** A box's varying dimensions: storage and output strides, and the walk order. */
interface BoxGeometry {
  /** Storage index of the box's first element. */
  base: number;
  extents: number[];
  sourceStrides: number[];
  outStrides: number[];
  /** Dimensions (indices into the arrays above) from largest storage stride to smallest. */
  walk: number[];
}

function boxGeometry(layout: StridedLayout, box: Box): BoxGeometry {
  const { shape, strides } = layout;
  const rank = shape.length;
  let base = layout.storageOffset;
  for (let k = 0; k < rank; k++) base += box.idx[k]! * strides[k]!;
  const extents: number[] = [];
  const sourceStrides: number[] = [];
  const outStrides: number[] = [];
  let outStride = 1;
  for (let k = rank - 1; k >= box.d && k >= 0; k--) {
    const extent = k === box.d ? box.n : shape[k]!;
    if (extent > 1) {
      extents.push(extent);
      sourceStrides.push(strides[k]!);
      outStrides.push(outStride);
    }
    outStride *= extent;
  }
  // Largest storage stride first (ties: the outer dimension first).
  const walk = extents.map((_, i) => i).sort((a, b) => sourceStrides[b]! - sourceStrides[a]! || b - a);
  return { base, extents, sourceStrides, outStrides, walk };
}

/**
 * Steps through a box's elements, the last of `dims` fastest, tracking each
 * element's storage index and its position in the output.
 */
class Odometer {
  source: number;
  position = 0;
  readonly #counter: number[];

  constructor(private readonly geometry: BoxGeometry, private readonly dims: readonly number[]) {
    this.source = geometry.base;
    this.#counter = new Array<number>(dims.length).fill(0);
  }

  next(): void {
    const { extents, sourceStrides, outStrides } = this.geometry;
    for (let w = this.dims.length - 1; w >= 0; w--) {
      const dim = this.dims[w]!;
      this.source += sourceStrides[dim]!;
      this.position += outStrides[dim]!;
      const next = this.#counter[w]! + 1;
      if (next < extents[dim]!) {
        this.#counter[w] = next;
        return;
      }
      this.#counter[w] = 0;
      this.source -= extents[dim]! * sourceStrides[dim]!;
      this.position -= extents[dim]! * outStrides[dim]!;
    }
  }
}

/**
 * The fast path: when the box's smallest-stride dimension is contiguous in
 * storage and long enough, the box is a set of runs (one per combination of
 * the other indices), each one read and copied whole. Returns false, having
 * read nothing, when the runs are short or not in increasing storage order.
 */
async function gatherRuns(read: ReadAt, layout: StridedLayout, box: Box, chunkBytes: number, out: Uint8Array): Promise<boolean> {
  const { itemSize, dataStart } = layout;
  const geometry = boxGeometry(layout, box);
  const { extents, sourceStrides, outStrides, walk } = geometry;
  if (walk.length === 0) return false;
  const inner = walk[walk.length - 1]!;
  const runLength = extents[inner]!;
  if (sourceStrides[inner] !== 1 || runLength < MIN_RUN_ELEMENTS) return false;
  const outStep = outStrides[inner]!;
  const runs = box.elements / runLength;
  const runSources = new Float64Array(runs);
  const runPositions = new Float64Array(runs);
  const odometer = new Odometer(geometry, walk.slice(0, -1));
  for (let r = 0; r < runs; r++) {
    runSources[r] = odometer.source;
    runPositions[r] = odometer.position;
    // Each run must start after the previous one ends: otherwise overlapping strides.
    if (r > 0 && odometer.source < runSources[r - 1]! + runLength) return false;
    odometer.next();
  }

  const slack = Math.max(1, Math.floor(SLACK_BYTES / itemSize));
  const maxRead = Math.max(runLength, Math.floor(chunkBytes / itemSize));
  const inFlight: Promise<void>[] = [];
  let r = 0;
  while (r < runs) {
    const first = runSources[r]!;
    let q = r + 1;
    while (q < runs) {
      const span = runSources[q]! + runLength - first;
      if (span > maxRead || span > 2 * (q - r + 1) * runLength + slack) break;
      q++;
    }
    const groupStart = r;
    const groupEnd = q;
    const length = runSources[q - 1]! + runLength - first;
    const task = read(dataStart + first * itemSize, length * itemSize).then((bytes) => {
      for (let g = groupStart; g < groupEnd; g++) {
        copyRun(bytes, (runSources[g]! - first) * itemSize, out, runPositions[g]! * itemSize, runLength, outStep * itemSize, itemSize);
      }
    });
    task.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
    inFlight.push(task);
    if (inFlight.length >= MAX_READS_IN_FLIGHT) await inFlight.shift();
    r = q;
  }
  await Promise.all(inFlight);
  return true;
}

/** Copies `count` consecutive elements from `from` to `out`, `outStepBytes` apart. */
function copyRun(from: Uint8Array, fromOffset: number, out: Uint8Array, outOffset: number, count: number, outStepBytes: number, itemSize: number): void {
  if (outStepBytes === itemSize) {
    out.set(from.subarray(fromOffset, fromOffset + count * itemSize), outOffset);
    return;
  }
  for (let e = 0; e < count; e++) {
    const src = fromOffset + e * itemSize;
    const dst = outOffset + e * outStepBytes;
    for (let b = 0; b < itemSize; b++) out[dst + b] = from[src + b]!;
  }
}

/** The general path: every element's storage index, sorted when the walk does not give storage order. */
async function gatherElements(read: ReadAt, layout: StridedLayout, box: Box, chunkBytes: number, out: Uint8Array, outOffset: number): Promise<void> {
  const { itemSize, dataStart } = layout;
  const count = box.elements;
  const geometry = boxGeometry(layout, box);
  const sources = new Float64Array(count);
  const positions = new Uint32Array(count);
  const odometer = new Odometer(geometry, geometry.walk);
  let sorted = true;
  for (let p = 0; p < count; p++) {
    sources[p] = odometer.source;
    positions[p] = odometer.position;
    if (p > 0 && odometer.source < sources[p - 1]!) sorted = false;
    odometer.next();
  }
  const order = sorted ? null : sortBySource(sources);
  const at = (k: number): number => (order === null ? k : order[k]!);

  const slack = Math.max(1, Math.floor(SLACK_BYTES / itemSize));
  const maxRun = Math.max(1, Math.floor(chunkBytes / itemSize));
  const inFlight: Promise<void>[] = [];
  let k = 0;
  while (k < count) {
    const first = sources[at(k)]!;
    let last = first;
    let j = k + 1;
    while (j < count) {
      const s = sources[at(j)]!;
      const span = s - first + 1;
      if (span > maxRun || span > 2 * (j - k + 1) + slack) break;
      last = s;
      j++;
    }
    const runStart = k;
    const runEnd = j;
    const task = read(dataStart + first * itemSize, (last - first + 1) * itemSize).then((run) => {
      for (let q = runStart; q < runEnd; q++) {
        const from = (sources[at(q)]! - first) * itemSize;
        const to = outOffset + positions[at(q)]! * itemSize;
        for (let b = 0; b < itemSize; b++) out[to + b] = run[from + b]!;
      }
    });
    task.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
    inFlight.push(task);
    if (inFlight.length >= MAX_READS_IN_FLIGHT) await inFlight.shift();
    k = j;
  }
  await Promise.all(inFlight);
}

/**
 * Walk positions ordered by source. Packed into one float64 key so the
 * native numeric sort does it when (source - min) * count + k stays below
 * 2^53; otherwise a comparator sort.
 */
function sortBySource(sources: Float64Array): Float64Array | Uint32Array {
  const count = sources.length;
  let min = Infinity;
  let max = -Infinity;
  for (const s of sources) {
    if (s < min) min = s;
    if (s > max) max = s;
  }
  if ((max - min + 1) * count < Number.MAX_SAFE_INTEGER) {
    const keys = new Float64Array(count);
    for (let k = 0; k < count; k++) keys[k] = (sources[k]! - min) * count + k;
    keys.sort();
    for (let k = 0; k < count; k++) keys[k] = keys[k]! % count;
    return keys;
  }
  const order = new Uint32Array(count);
  for (let k = 0; k < count; k++) order[k] = k;
  return order.sort((a, b) => sources[a]! - sources[b]!);
}
