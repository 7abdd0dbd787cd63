import { DeltaError } from "../../errors.js";
import { permutedSourceRow } from "../../model/meta-checkpoint.js";

/**
 * Which elements of an output tensor pair with a base element, when the
 * output is larger than the base (a grown vocabulary: 32001x4096 against
 * 32000x4096).
 *
 * "block": the base covers the top-left block `[:b0, :b1]` of the output;
 * every other element is unpaired (what it becomes is the recipe's choice:
 * stored as the delta holds it, or added to zero or to the base's mean row).
 * This is the rule of every published additive convention (FastChat, LLaVA,
 * Alpaca), and ours. "same-shape": the base must have the output's shape.
 * The base's elements are consumed in order, so a base tensor is always read
 * sequentially, whole.
 */
export type Pairing = "block" | "same-shape";

/** A run of output elements [start, start+length); paired with base elements or not. */
export interface Segment {
  start: number;
  length: number;
  paired: boolean;
}

/** Why a base of `baseShape` cannot pair with a tensor of `shape` under `pairing`, or undefined. */
export function pairingProblem(shape: readonly number[], baseShape: readonly number[], pairing: Pairing = "block"): string | undefined {
  if (sameShape(shape, baseShape)) return undefined;
  if (pairing === "same-shape") return `shape [${baseShape}] differs from [${shape}]`;
  if (shape.length !== baseShape.length || shape.length === 0 || shape.length > 2) {
    return `shape [${baseShape}] cannot pair with [${shape}] (only the first two dimensions may grow)`;
  }
  for (let i = 0; i < shape.length; i++) {
    if (baseShape[i]! > shape[i]!) return `shape [${baseShape}] is larger than [${shape}] in dimension ${i}`;
  }
  return undefined;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

/** The segments of a tensor of `shape` in flat order, given the base's shape (block rule). */
export function* segments(shape: readonly number[], baseShape: readonly number[] | undefined): Generator<Segment> {
  const total = numel(shape);
  if (total === 0) return;
  if (baseShape === undefined) {
    yield { start: 0, length: total, paired: false };
    return;
  }
  const reason = pairingProblem(shape, baseShape);
  if (reason !== undefined) throw new DeltaError(reason);
  const baseTotal = numel(baseShape);
  if (shape.length < 2 || shape[1] === baseShape[1]) {
    // rows are whole: the block is a prefix
    if (baseTotal > 0) yield { start: 0, length: baseTotal, paired: true };
    if (total > baseTotal) yield { start: baseTotal, length: total - baseTotal, paired: false };
    return;
  }
  const [, cols] = shape as [number, number];
  const [baseRows, baseCols] = baseShape as [number, number];
  for (let row = 0; row < baseRows; row++) {
    if (baseCols > 0) yield { start: row * cols, length: baseCols, paired: true };
    yield { start: row * cols + baseCols, length: cols - baseCols, paired: false };
  }
  if (total > baseRows * cols) yield { start: baseRows * cols, length: total - baseRows * cols, paired: false };
}

/** A window of at most `maxElements` consecutive elements and the segment parts inside it. */
export interface Window {
  start: number;
  length: number;
  parts: Segment[];
}

/**
 * Groups the segments into windows of at most `maxElements` elements, so
 * that I/O happens a window at a time even when segments are short rows.
 */
export function* windows(all: Iterable<Segment>, maxElements: number): Generator<Window> {
  let current: Window | undefined;
  for (const seg of all) {
    let offset = 0;
    while (offset < seg.length) {
      if (current === undefined) current = { start: seg.start + offset, length: 0, parts: [] };
      const take = Math.min(seg.length - offset, maxElements - current.length);
      current.parts.push({ start: seg.start + offset, length: take, paired: seg.paired });
      current.length += take;
      offset += take;
      if (current.length === maxElements) {
        yield current;
        current = undefined;
      }
    }
  }
  if (current !== undefined && current.length > 0) yield current;
}

/** `model.layers.N.self_attn.rotary_emb.inv_freq`: a buffer transformers 4.28-4.30 saved, not a weight. */
export function isRotaryBuffer(name: string): boolean {
  return name.endsWith("rotary_emb.inv_freq");
}

/**
 * How a delta stored in another layout than the output's pairs with it,
 * row by row: `transposed`, the delta is stored [columns, rows] (a Flax
 * kernel [in, out]: output row r is its column r); `headRows`, the rows of
 * each head of this many rows are permuted from Meta's rotary layout to
 * Hugging Face's (output row j * headRows / 2 + i of a head is the stored
 * row 2i + j, as transformers' conversion permutes q and k). Applied
 * transposition first, then permutation. Such a delta pairs same-shape with
 * its base, and is made a block of whole rows (whole heads) at a time:
 * reading a column means one span per stored row, so the block bounds both
 * the memory and the number of reads.
 */
export interface RowOrder {
  transposed: boolean;
  headRows?: number;
}

/** Why a delta stored as `storedShape` cannot make an output of `shape` in `order`, or undefined. */
export function rowOrderProblem(shape: readonly number[], storedShape: readonly number[], order: RowOrder): string | undefined {
  const expected = order.transposed ? [...storedShape].reverse() : [...storedShape];
  if (order.transposed && storedShape.length !== 2) return `only a 2-D delta can be read transposed, and it is [${storedShape}]`;
  if (!sameShape(shape, expected)) return `the delta's [${storedShape}]${order.transposed ? " transposed" : ""} is [${expected}], not [${shape}]`;
  if (order.headRows !== undefined) {
    const rows = shape.length === 2 ? shape[0]! : 0;
    if (!Number.isSafeInteger(order.headRows) || order.headRows < 2 || order.headRows % 2 !== 0 || rows % order.headRows !== 0) {
      return `rows permuted by heads of ${order.headRows} rows need a 2-D tensor whose rows are whole heads of an even number of rows, and it is [${shape}]`;
    }
  }
  return undefined;
}

/**
 * The row of the stored (transposed) delta block that output row `row` is
 * taken from, relative to the block's first row `first`: itself, or its
 * rotary source within its head (blocks hold whole heads).
 */
export function storedRow(order: RowOrder, first: number, row: number): number {
  return (order.headRows === undefined ? row : permutedSourceRow(row, order.headRows)) - first;
}
