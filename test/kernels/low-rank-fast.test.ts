/**
 * The LoRA merge step's WebAssembly SIMD kernel (fast-low-rank.ts) against
 * torch and against the scalar reference (low-rank.ts + the scalar
 * conversions and add): bit for bit on torch's recorded products
 * (expected.json), on factors full of special values with torch's NaN bits
 * (special-values.json, scripts/make-lora-nan-fixtures.py), and on random
 * shapes: ranks 1-256, odd column counts, subnormals, infinities.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bf16ToF32, f16BitsToF32Bits, f16ToF32, f32BitsToF16, f32ToBf16, f32ToF16, type FloatDType } from "../../src/dtypes.js";
import { MAX_FAST_RANK, mergeLowRankColumns, mergeLowRankRows } from "../../src/kernels/fast-low-rank.js";
import { lowRankColumns, lowRankRows } from "../../src/kernels/low-rank.js";
import {
  lowRankImplementation, lowRankStepRows, referenceLowRankStepColumns, referenceLowRankStepRows, type LowRankStep,
} from "../../src/kernels/low-rank-step.js";
import { loraFactors, xorshift } from "../helpers/lora-factors.js";
import { REPO_ROOT } from "../helpers/realdata.js";

interface Case { m: number; k: number; n: number; kind: "F16" | "BF16" | "F32"; seedB: number; seedA: number; scale: number; sha256: string; transposedSha256: string }
const expected = JSON.parse(await readFile(join(REPO_ROOT, "test/fixtures/lora/expected.json"), "utf8")) as { kernel: Case[] };
interface Special {
  m: number; k: number; n: number; scale: number; b: number[]; a: number[];
  product: number[]; scaled: number[]; w16: number[]; w16PlusFloat: number[]; w16PlusHalf: number[];
}
const special = JSON.parse(await readFile(join(REPO_ROOT, "test/fixtures/lora/special-values.json"), "utf8")) as { cases: Special[] };

/** make-lora-fixtures.py's generator (as in low-rank.test.ts). */
function generated(seed: number, count: number, kind: Case["kind"]): Float32Array {
  let state = seed >>> 0 || 1;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    const v = Math.fround(((state >>> 8) / 16777216 - 0.5) * 0.04);
    out[i] = kind === "F16" ? f16ToF32(f32ToF16(v)) : kind === "BF16" ? bf16ToF32(f32ToBf16(v)) : v;
  }
  return out;
}

const sha = (values: Float32Array) => createHash("sha256").update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest("hex");
const bitsOf = (values: Float32Array) => [...new Uint32Array(values.buffer, values.byteOffset, values.length)];
const floats = (bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);
const hex = (list: number[]) => list.map((x) => x.toString(16));
const product = (scale: number): LowRankStep => ({ scale, deltaDType: "F32", outDType: "F32", accumulate: false });

/** Seeded float32 bit patterns: mostly LoRA-sized normals, some subnormals, zeros, huge values, infinities and products below float32's normals. */
const randomFactors = (seed: number, count: number, specials: boolean) => loraFactors(xorshift(seed), count, specials, "tiny");

describe("LoRA merge kernel (WebAssembly SIMD)", () => {
  it("is the kernel that runs here", () => {
    expect(lowRankImplementation).toBe("wasm-simd");
  });

  it(`gives torch's bytes for all ${expected.kernel.length} recorded products, and their transposes`, () => {
    const wrong: string[] = [];
    for (const c of expected.kernel) {
      const b = generated(c.seedB, c.m * c.k, c.kind);
      const a = generated(c.seedA, c.k * c.n, c.kind);
      const out = new Float32Array(c.m * c.n);
      mergeLowRankRows(b, a, c.k, c.n, out, product(Math.fround(c.scale)));
      if (sha(out) !== c.sha256) wrong.push(`${c.m}x${c.k}x${c.n} ${c.kind}`);
      const t = new Float32Array(c.n * c.m);
      const half = Math.floor(c.n / 2);
      mergeLowRankColumns(b, a, c.k, c.n, 0, half, t.subarray(0, half * c.m), product(Math.fround(c.scale)));
      mergeLowRankColumns(b, a, c.k, c.n, half, c.n - half, t.subarray(half * c.m), product(Math.fround(c.scale)));
      if (sha(t) !== c.transposedSha256) wrong.push(`${c.m}x${c.k}x${c.n} ${c.kind} transposed`);
    }
    expect(wrong).toEqual([]);
  });

  it(`gives torch's bits, NaN payloads included, on ${special.cases.length} products of special values`, () => {
    const wrong: string[] = [];
    for (const [index, c] of special.cases.entries()) {
      const b = floats(c.b), a = floats(c.a);
      for (const [scale, want] of [[1, c.product], [c.scale, c.scaled]] as const) {
        const fast = new Float32Array(c.m * c.n);
        mergeLowRankRows(b, a, c.k, c.n, fast, product(Math.fround(scale)));
        if (bitsOf(fast).join() !== want.join()) wrong.push(`case ${index} ${c.m}x${c.k}x${c.n} scale ${scale}: ${hex(bitsOf(fast))} vs torch ${hex(want)}`);
        // The transpose holds the same elements.
        const t = new Float32Array(c.n * c.m);
        mergeLowRankColumns(b, a, c.k, c.n, 0, c.n, t, product(Math.fround(scale)));
        for (let i = 0; i < c.m; i++) {
          for (let j = 0; j < c.n; j++) {
            if (new Uint32Array(t.buffer)[j * c.m + i] !== want[i * c.n + j]) wrong.push(`case ${index} transposed [${i}, ${j}]`);
          }
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it("gives torch's bits for a float16 W plus the scaled product, cast to float16 or not", () => {
    const isNaN16 = (bits: number) => (bits & 0x7fff) > 0x7c00;
    const wrong: string[] = [];
    for (const [index, c] of special.cases.entries()) {
      const b = floats(c.b), a = floats(c.a);
      for (const [deltaDType, want] of [["F32", c.w16PlusFloat], ["F16", c.w16PlusHalf]] as const) {
        // Bits, not numbers: a NaN read into a JS number may lose its sign.
        const w = floats(c.w16.map(f16BitsToF32Bits));
        mergeLowRankRows(b, a, c.k, c.n, w, { scale: Math.fround(c.scale), deltaDType, outDType: "F16", accumulate: true });
        const got = bitsOf(w).map(f32BitsToF16);
        for (let e = 0; e < got.length; e++) {
          // float16 + float16 with both NaN: torch keeps the update's NaN in its vectorized
          // loop (which this kernel follows, as the add kernels do) but W's in the scalar loop
          // it runs on a tensor's last numel % 32 elements, all of these tiny ones: the sign
          // may differ there, and only there.
          const bothNaN = deltaDType === "F16" && isNaN16(c.w16[e]!) && isNaN16(f32BitsToF16(c.scaled[e]!));
          const ok = bothNaN ? isNaN16(got[e]!) && isNaN16(want[e]!) : got[e] === want[e];
          if (!ok) wrong.push(`case ${index} ${c.m}x${c.k}x${c.n} + ${deltaDType} [${e}]: ${hex([got[e]!])} vs torch ${hex([want[e]!])}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it("the scalar reference gives the same bits on the special values", () => {
    const wrong: string[] = [];
    for (const [index, c] of special.cases.entries()) {
      const out = new Float32Array(c.m * c.n);
      lowRankRows(floats(c.b), floats(c.a), c.k, c.n, Math.fround(c.scale), out);
      if (bitsOf(out).join() !== c.scaled.join()) wrong.push(`case ${index} ${c.m}x${c.k}x${c.n}: ${hex(bitsOf(out))} vs torch ${hex(c.scaled)}`);
      const t = new Float32Array(c.n * c.m);
      lowRankColumns(floats(c.b), floats(c.a), c.k, c.n, 0, c.n, Math.fround(c.scale), t);
      for (let i = 0; i < c.m; i++) {
        for (let j = 0; j < c.n; j++) if (new Uint32Array(t.buffer)[j * c.m + i] !== c.scaled[i * c.n + j]) wrong.push(`case ${index} transposed [${i}, ${j}]`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("equals the scalar reference on random shapes, ranks 1-256, every dtype combination", () => {
    const dtypes: FloatDType[] = ["F32", "F16", "BF16"];
    const wrong: string[] = [];
    let seed = 1;
    for (const rank of [1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 100, 128, 255, 256]) {
      for (const [rows, cols] of [[1, 1], [3, 5], [7, 17], [33, 130], [5, 1031], [2, 4099]] as const) {
        const specials = seed % 2 === 0;
        const b = randomFactors(seed++, rows * rank, specials), a = randomFactors(seed++, rank * cols, specials);
        const w0 = randomFactors(seed++, rows * cols, specials);
        const step: LowRankStep = {
          scale: Math.fround(seed % 3 === 0 ? 1 : 16 / Math.sqrt(rank)),
          deltaDType: dtypes[seed % 3]!, outDType: dtypes[(seed >> 2) % 3]!, accumulate: seed % 5 !== 0,
        };
        const fast = w0.slice(), reference = w0.slice();
        mergeLowRankRows(b, a, rank, cols, fast, step);
        referenceLowRankStepRows(b, a, rank, cols, reference, step);
        if (sha(fast) !== sha(reference)) wrong.push(`rows ${rows} rank ${rank} cols ${cols} ${JSON.stringify(step)}`);
        // The transpose, in two blocks of output rows.
        const first = Math.floor(cols / 3);
        const tw0 = randomFactors(seed++, cols * rows, specials);
        const tFast = tw0.slice(), tReference = tw0.slice();
        mergeLowRankColumns(b, a, rank, cols, 0, first, tFast.subarray(0, first * rows), step);
        mergeLowRankColumns(b, a, rank, cols, first, cols - first, tFast.subarray(first * rows), step);
        referenceLowRankStepColumns(b, a, rank, cols, 0, cols, tReference, step);
        if (sha(tFast) !== sha(tReference)) wrong.push(`transposed: rows ${rows} rank ${rank} cols ${cols} ${JSON.stringify(step)}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("tiles a wide product (many column bands and row groups) without changing it", () => {
    const rank = 64, rows = 300, cols = 4101;
    const b = randomFactors(7, rows * rank, false), a = randomFactors(8, rank * cols, false);
    const fast = new Float32Array(rows * cols), reference = new Float32Array(rows * cols);
    lowRankStepRows(b, a, rank, cols, fast, product(Math.fround(0.25)));
    lowRankRows(b, a, rank, cols, Math.fround(0.25), reference);
    expect(sha(fast)).toBe(sha(reference));
  });

  it("leaves ranks beyond its tiles to the scalar kernels, with the same results", () => {
    const rank = MAX_FAST_RANK + 1, rows = 2, cols = 3;
    const b = randomFactors(9, rows * rank, false), a = randomFactors(10, rank * cols, false);
    const got = new Float32Array(rows * cols), want = new Float32Array(rows * cols);
    lowRankStepRows(b, a, rank, cols, got, product(1));
    lowRankRows(b, a, rank, cols, 1, want);
    expect(sha(got)).toBe(sha(want));
  });
});
