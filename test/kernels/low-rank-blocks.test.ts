/**
 * The merge's fused path (fast-low-rank.ts LowRankBlocks: W read and written
 * in its dtype, factors loaded once per tensor, every step in one pass per
 * block) against the scalar composition it replaced (low-rank-step.ts
 * ReferenceLowRankBlocks: W to float32, each step by the reference kernels,
 * back to W's dtype), bit for bit: every dtype of W and of the update, one to
 * three steps (an adapter after another), transposed updates, odd widths, a
 * row's last few elements, blocks that do not divide the rows, special values
 * (NaN payloads in W, infinities, subnormals, invalid products), in place or
 * into another buffer. The reference is itself held to torch by
 * low-rank.test.ts and low-rank-fast.test.ts, and the whole merge by
 * test/delta/lora.test.ts.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { dtypeBytes, type FloatDType } from "../../src/dtypes.js";
import { LowRankBlocks } from "../../src/kernels/fast-low-rank.js";
import { openLowRankBlocks, ReferenceLowRankBlocks, type BlockStep, type LowRankBlockMerge } from "../../src/kernels/low-rank-step.js";
import * as reference from "../../src/kernels/reference.js";
import { loraFactors, xorshift } from "../helpers/lora-factors.js";

/** LoRA-sized float32 values; with `specials`, some subnormals, zeros, huge values, infinities and NaNs (sign and payload random). */
const factors = (next: () => number, count: number, specials: boolean) => loraFactors(next, count, specials, "nan");

/** W's bytes in `dtype`: weight-sized values; with `specials`, NaNs of both signs and payloads, infinities, subnormals. */
function weights(next: () => number, count: number, dtype: FloatDType, specials: boolean): Uint8Array {
  const values = factors(next, count, false);
  for (let i = 0; i < count; i++) values[i] = values[i]! * 20;
  const out = new Uint8Array(count * dtypeBytes(dtype));
  reference.convertInto("F32", dtype, new Uint8Array(values.buffer), out);
  if (specials) {
    const view = new DataView(out.buffer);
    for (let i = 0; i < count; i++) {
      const pick = next() % 32;
      if (pick > 2) continue;
      const sign = next() & 1;
      if (dtype === "F32") view.setUint32(i * 4, [0x7f800001 + (next() & 0x3fffff), 0x7f800000, next() & 0x7fffff][pick]! | (sign << 31), true);
      else if (dtype === "F16") view.setUint16(i * 2, [0x7c01 + (next() & 0x1ff), 0x7c00, next() & 0x3ff][pick]! | (sign << 15), true);
      else view.setUint16(i * 2, [0x7f81 + (next() & 0x3f), 0x7f80, next() & 0x7f][pick]! | (sign << 15), true);
    }
  }
  return out;
}

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

interface Case { out: FloatDType; rows: number; cols: number; steps: BlockStep[]; blockRows: number; specials: boolean; seed: number }

/** Loads a factor in pieces of uneven sizes (as chunks of a file arrive), in a seeded order of sizes. */
function load(merge: LowRankBlockMerge, s: number, which: "a" | "b", values: Float32Array, next: () => number): void {
  for (let first = 0; first < values.length; ) {
    const n = Math.min(values.length - first, 1 + (next() % Math.max(1, Math.ceil(values.length / 3))));
    merge.setFactor(s, which, first, values.slice(first, first + n));
    first += n;
  }
}

/** Runs a case through a merge: factors loaded, every block merged (in place or not); the output's bytes. */
function run(merge: LowRankBlockMerge, c: Case, w: Uint8Array, inPlace: boolean): Uint8Array {
  const next = xorshift(c.seed * 7919);
  const pieces = xorshift(c.seed * 31 + (inPlace ? 1 : 2));
  c.steps.forEach((step, s) => {
    load(merge, s, "a", factors(next, step.rank * step.aCols, c.specials), pieces);
    load(merge, s, "b", factors(next, step.bRows * step.rank, c.specials), pieces);
  });
  const rowBytes = c.cols * dtypeBytes(c.out);
  const result = new Uint8Array(w.length);
  for (let first = 0; first < c.rows; first += c.blockRows) {
    const n = Math.min(c.blockRows, c.rows - first);
    const block = w.slice(first * rowBytes, (first + n) * rowBytes);
    const out = inPlace ? block : new Uint8Array(block.length);
    merge.merge(first, block, out);
    result.set(out, first * rowBytes);
  }
  merge.close();
  return result;
}

const DTYPES: FloatDType[] = ["F16", "BF16", "F32"];

function cases(): Case[] {
  const list: Case[] = [];
  const next = xorshift(12345);
  let seed = 1;
  for (const out of DTYPES) {
    for (const [rows, cols] of [[1, 1], [5, 3], [7, 17], [33, 130], [6, 4099], [40, 16], [3, 21]] as const) {
      for (const stepCount of [1, 2, 3]) {
        const steps: BlockStep[] = [];
        for (let s = 0; s < stepCount; s++) {
          const rank = [1, 3, 4, 8, 17, 64][next() % 6]!;
          const transposed = next() % 3 === 0;
          const [aCols, bRows] = transposed ? [rows, cols] : [cols, rows];
          const deltaDType = next() % 2 === 0 ? "F32" : DTYPES[next() % 3]!;
          steps.push({ rank, aCols, bRows, transposed, scale: Math.fround([1, 2, 0.5, 16 / Math.sqrt(rank)][next() % 4]!), deltaDType });
        }
        const blockRows = [1, 2, 3, rows][next() % 4]!;
        list.push({ out, rows, cols, steps, blockRows: Math.min(blockRows, rows), specials: seed % 2 === 0, seed: seed++ });
      }
    }
  }
  return list;
}

describe("the merge's fused kernel, block by block", () => {
  it("equals the scalar composition on every dtype, step count, transposed update, odd width and block cut", () => {
    const wrong: string[] = [];
    for (const c of cases()) {
      const w = weights(xorshift(c.seed), c.rows * c.cols, c.out, c.specials);
      const want = sha(run(new ReferenceLowRankBlocks(c.out, c.rows, c.cols, c.steps, c.blockRows), c, w, false));
      for (const inPlace of [true, false]) {
        const got = sha(run(new LowRankBlocks(c.out as "F16" | "BF16" | "F32", c.rows, c.cols, c.steps as (BlockStep & { deltaDType: "F16" | "BF16" | "F32" })[], c.blockRows), c, w, inPlace));
        if (got !== want) wrong.push(`${c.out} ${c.rows}x${c.cols} blocks of ${c.blockRows} ${inPlace ? "in place" : "into another buffer"}: ${JSON.stringify(c.steps)}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("changes W (the test can fail): a merged block is not the block read", () => {
    const c: Case = { out: "F16", rows: 4, cols: 8, steps: [{ rank: 2, aCols: 8, bRows: 4, transposed: false, scale: 1, deltaDType: "F32" }], blockRows: 4, specials: false, seed: 3 };
    const w = weights(xorshift(3), 32, "F16", false);
    expect(sha(run(new LowRankBlocks("F16", 4, 8, c.steps as (BlockStep & { deltaDType: "F32" })[], 4), c, w, false))).not.toBe(sha(w));
  });

  it("is what openLowRankBlocks picks for float16, bfloat16 and float32; a float64 W goes to the scalar composition", () => {
    const step: BlockStep = { rank: 2, aCols: 3, bRows: 2, transposed: false, scale: 1, deltaDType: "F32" };
    for (const out of DTYPES) {
      const merge = openLowRankBlocks(out, 2, 3, [step], 2);
      expect(merge).toBeInstanceOf(LowRankBlocks);
      merge.close();
    }
    expect(openLowRankBlocks("F64", 2, 3, [step], 2)).toBeInstanceOf(ReferenceLowRankBlocks);
  });

  it("refuses factor elements past the factor's end", () => {
    const step: BlockStep = { rank: 2, aCols: 3, bRows: 4, transposed: false, scale: 1, deltaDType: "F32" };
    const merge = new LowRankBlocks("F16", 4, 3, [step as BlockStep & { deltaDType: "F32" }], 2);
    expect(() => merge.setFactor(0, "a", 5, new Float32Array(2))).toThrow(RangeError);
    expect(() => merge.setFactor(0, "b", 0, new Float32Array(9))).toThrow(RangeError);
    merge.setFactor(0, "a", 0, new Float32Array(6));
    merge.close();
  });

  it("refuses a block that is not whole rows, or runs past the tensor", () => {
    const step: BlockStep = { rank: 2, aCols: 3, bRows: 4, transposed: false, scale: 1, deltaDType: "F32" };
    for (const merge of [new LowRankBlocks("F16", 4, 3, [step as BlockStep & { deltaDType: "F32" }], 2), new ReferenceLowRankBlocks("F16", 4, 3, [step], 2)]) {
      expect(() => merge.merge(0, new Uint8Array(5), new Uint8Array(5))).toThrow(RangeError);
      expect(() => merge.merge(3, new Uint8Array(12), new Uint8Array(12))).toThrow(RangeError);
      expect(() => merge.merge(0, new Uint8Array(18), new Uint8Array(18))).toThrow(RangeError);
      merge.close();
    }
  });

  it("two merges at once keep their own factors (each holds an arena of its own)", () => {
    const c: Case = { out: "BF16", rows: 6, cols: 20, steps: [{ rank: 5, aCols: 20, bRows: 6, transposed: false, scale: 0.5, deltaDType: "F32" }], blockRows: 2, specials: false, seed: 11 };
    const w = weights(xorshift(11), 120, "BF16", false);
    const want = sha(run(new ReferenceLowRankBlocks("BF16", 6, 20, c.steps, 2), c, w, false));
    const steps = c.steps as (BlockStep & { deltaDType: "F32" })[];
    const first = new LowRankBlocks("BF16", 6, 20, steps, 2), second = new LowRankBlocks("BF16", 6, 20, steps, 2);
    // The second's factors differ: loading them must not touch the first's.
    const other = { ...c, seed: 12 };
    const next = xorshift(other.seed * 7919);
    second.setFactor(0, "a", 0, factors(next, 100, false));
    second.setFactor(0, "b", 0, factors(next, 30, false));
    expect(sha(run(first, c, w, false))).toBe(want);
    second.close();
  });
});
