/**
 * The LoRA merge's float32 product against PyTorch's (test/fixtures/lora/expected.json,
 * made by scripts/make-lora-fixtures.py): for each case both sides make the same
 * factors from a seed, torch's `(B @ A) * scale` (and its transpose) is recorded
 * by sha256, and the kernel must give the same bytes. Ranks 1-256, float16,
 * bfloat16 and float32 values, scales whose float32 value differs from the double.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { f16ToF32, f32ToF16, bf16ToF32, f32ToBf16 } from "../../src/dtypes.js";
import { lowRankColumns, lowRankRows } from "../../src/kernels/low-rank.js";
import { REPO_ROOT } from "../helpers/realdata.js";

interface Case { m: number; k: number; n: number; kind: "F16" | "BF16" | "F32"; seedB: number; seedA: number; scale: number; sha256: string; transposedSha256: string; first: number[] }
interface Probe { matmul: { shapes: number; mismatched: unknown[] }; elementwise: Record<string, boolean> }
const expected = JSON.parse(await readFile(join(REPO_ROOT, "test/fixtures/lora/expected.json"), "utf8")) as { kernel: Case[]; probe: Probe };

/** The script's generator: xorshift32, float32 values in (-0.02, 0.02), rounded to the kind. */
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

describe("low-rank product, bit for bit against torch's CPU matmul", () => {
  it("the recorded probe found torch's order on every shape it tried", () => {
    expect(expected.probe.matmul.shapes).toBeGreaterThan(200);
    expect(expected.probe.matmul.mismatched).toEqual([]);
    expect(expected.probe.elementwise).toEqual({ scalar_multiply_in_float32: true, half_plus_float_rounds_float32_sum: true });
  });

  it(`matches all ${expected.kernel.length} recorded products, and their transposes`, () => {
    const wrong: string[] = [];
    for (const c of expected.kernel) {
      const b = generated(c.seedB, c.m * c.k, c.kind);
      const a = generated(c.seedA, c.k * c.n, c.kind);
      const out = new Float32Array(c.m * c.n);
      lowRankRows(b, a, c.k, c.n, Math.fround(c.scale), out);
      if (sha(out) !== c.sha256) wrong.push(`${c.m}x${c.k}x${c.n} ${c.kind}: ${[...out.subarray(0, 4)].join(",")} vs torch ${c.first.join(",")}`);
      const t = new Float32Array(c.n * c.m);
      // In two column blocks, as the merge streams an embedding.
      const half = Math.floor(c.n / 2);
      lowRankColumns(b, a, c.k, c.n, 0, half, Math.fround(c.scale), t.subarray(0, half * c.m));
      lowRankColumns(b, a, c.k, c.n, half, c.n - half, Math.fround(c.scale), t.subarray(half * c.m));
      if (sha(t) !== c.transposedSha256) wrong.push(`${c.m}x${c.k}x${c.n} ${c.kind} transposed`);
    }
    expect(wrong).toEqual([]);
  });

  it("a block of B's rows gives those rows of the whole product", () => {
    const c = expected.kernel.find((x) => x.m >= 64 && x.k >= 64)!;
    const b = generated(c.seedB, c.m * c.k, c.kind);
    const a = generated(c.seedA, c.k * c.n, c.kind);
    const whole = new Float32Array(c.m * c.n);
    lowRankRows(b, a, c.k, c.n, 1, whole);
    const block = new Float32Array(5 * c.n);
    lowRankRows(b.subarray(7 * c.k, 12 * c.k), a, c.k, c.n, 1, block);
    expect(block).toEqual(whole.subarray(7 * c.n, 12 * c.n));
  });

  it("refuses factors whose shapes do not multiply", () => {
    expect(() => lowRankRows(new Float32Array(6), new Float32Array(5), 2, 3, 1, new Float32Array(9))).toThrow(RangeError);
  });
});
