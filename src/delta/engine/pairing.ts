import { DeltaError } from "../../errors.js";

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
