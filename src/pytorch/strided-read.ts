/**
 * Serves a strided view's bytes as if it were contiguous (row-major), in
 * bounded chunks. A contiguous view is one file range. Anything else
 * (transposed, sliced, expanded) is gathered block by block: each block of
 * output elements is mapped to its storage indices, which are sorted and
 * coalesced into runs of nearby elements; each run is read once (at most
 * chunkBytes) and scattered. Memory per block is a few times chunkBytes,
 * never the tensor or the storage.
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

/** Elements gathered per block at most: bounds the index arrays' memory. */
const MAX_BLOCK_ELEMENTS = 1 << 20;
/** Bytes a run may read past the ones it wants, beyond as many as it wants:
 * short gaps are read through (fewer reads), but a run never reads more than
 * about twice what it keeps, so a strided view costs about its own size in
 * I/O per block, not the whole storage. */
const SLACK_BYTES = 256;

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
  const blockElements = Math.max(1, Math.min(MAX_BLOCK_ELEMENTS, Math.floor(step / itemSize)));
  const counter = new IndexCounter(shape, strides, layout.storageOffset, firstElement);
  for (let e0 = firstElement; e0 < endElement; e0 += blockElements) {
    const count = Math.min(blockElements, endElement - e0);
    const block = await gatherBlock(read, layout, counter, count, chunkBytes);
    // Trim the partial elements at the requested byte range's edges.
    const from = e0 === firstElement ? start - firstElement * itemSize : 0;
    const to = e0 + count === endElement ? block.length - (endElement * itemSize - end) : block.length;
    for (let at = from; at < to; at += step) {
      const piece = at === 0 && to - at <= step && to === block.length ? block : block.slice(at, Math.min(to, at + step));
      yield piece;
    }
  }
}

/** Walks a view's elements in row-major order, giving each one's storage index. */
class IndexCounter {
  readonly #index: number[];
  #storageIndex: number;
  constructor(
    private readonly shape: readonly number[],
    private readonly strides: readonly number[],
    storageOffset: number,
    firstElement: number,
  ) {
    this.#index = new Array<number>(shape.length).fill(0);
    this.#storageIndex = storageOffset;
    let rest = firstElement;
    for (let d = shape.length - 1; d >= 0; d--) {
      const i = rest % shape[d]!;
      rest = Math.floor(rest / shape[d]!);
      this.#index[d] = i;
      this.#storageIndex += i * strides[d]!;
    }
  }

  /** The current element's storage index, then moves to the next element. */
  next(): number {
    const current = this.#storageIndex;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      const i = this.#index[d]! + 1;
      if (i < this.shape[d]!) {
        this.#index[d] = i;
        this.#storageIndex += this.strides[d]!;
        break;
      }
      this.#index[d] = 0;
      this.#storageIndex -= (i - 1) * this.strides[d]!;
    }
    return current;
  }
}

async function gatherBlock(read: ReadAt, layout: StridedLayout, counter: IndexCounter, count: number, chunkBytes: number): Promise<Uint8Array> {
  const { itemSize, dataStart } = layout;
  const out = new Uint8Array(count * itemSize);
  const sources = new Float64Array(count);
  let sorted = true;
  let min = Infinity;
  for (let p = 0; p < count; p++) {
    const s = counter.next();
    sources[p] = s;
    if (p > 0 && s < sources[p - 1]!) sorted = false;
    if (s < min) min = s;
  }

  // Order (source, position) pairs by source. Packed into one float64 key so
  // the native numeric sort does it: (source - min) * count + position stays
  // below 2^53 when the span is small enough, else fall back to a comparator.
  let order: Float64Array | Uint32Array;
  let keyed = false;
  if (sorted) {
    order = sources;
  } else {
    let max = 0;
    for (let p = 0; p < count; p++) if (sources[p]! > max) max = sources[p]!;
    if ((max - min + 1) * count < Number.MAX_SAFE_INTEGER) {
      order = new Float64Array(count);
      for (let p = 0; p < count; p++) order[p] = (sources[p]! - min) * count + p;
      order.sort();
      keyed = true;
    } else {
      const positions = new Uint32Array(count);
      for (let p = 0; p < count; p++) positions[p] = p;
      order = positions.sort((a, b) => sources[a]! - sources[b]!);
    }
  }
  const sourceAt = (k: number): number => (sorted ? sources[k]! : keyed ? Math.floor(order[k]! / count) + min : sources[order[k]!]!);
  const positionAt = (k: number): number => (sorted ? k : keyed ? order[k]! % count : order[k]!);

  const slack = Math.max(1, Math.floor(SLACK_BYTES / itemSize));
  const maxRun = Math.max(1, Math.floor(chunkBytes / itemSize));
  let k = 0;
  while (k < count) {
    const first = sourceAt(k);
    let last = first;
    let j = k + 1;
    while (j < count) {
      const s = sourceAt(j);
      const span = s - first + 1;
      if (span > maxRun || span > 2 * (j - k + 1) + slack) break;
      last = s;
      j++;
    }
    const run = await read(dataStart + first * itemSize, (last - first + 1) * itemSize);
    for (let q = k; q < j; q++) {
      const from = (sourceAt(q) - first) * itemSize;
      const to = positionAt(q) * itemSize;
      for (let b = 0; b < itemSize; b++) out[to + b] = run[from + b]!;
    }
    k = j;
  }
  return out;
}
