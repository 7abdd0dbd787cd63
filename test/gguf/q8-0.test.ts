import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { encodeF32As, Q8_0_NAN_D } from "../../src/gguf/quantize.js";
import { REPO_ROOT } from "../helpers/realdata.js";

const FIXTURES = join(REPO_ROOT, "test", "fixtures", "gguf", "q8_0");

/**
 * The blocks scripts/make-q8-0-fixtures.py wrote and gguf-py's Q8_0 bytes for
 * them. Where gguf-py's d is a NaN (the block holds one), which NaN depends on
 * numpy's SIMD lanes and CPU, not on gguf-py's rule: `q8` has it replaced by
 * the one we write (Q8_0_NAN_D); `nanBlocks` counts them.
 */
function oracle(): { values: Float32Array; q8: Uint8Array; nanBlocks: number } {
  const raw = readFileSync(join(FIXTURES, "values.f32"));
  const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const q8 = new Uint8Array(readFileSync(join(FIXTURES, "q8_0.bin")));
  let nanBlocks = 0;
  for (let o = 0; o < q8.length; o += 34) {
    const d = q8[o]! | (q8[o + 1]! << 8);
    if ((d & 0x7c00) === 0x7c00 && (d & 0x3ff) !== 0) {
      nanBlocks++;
      q8[o] = Q8_0_NAN_D & 0xff;
      q8[o + 1] = Q8_0_NAN_D >>> 8;
    }
  }
  return { values, q8, nanBlocks };
}

/** Indexes of the blocks where two Q8_0 encodings differ, with both blocks in hex. */
function differingBlocks(got: Uint8Array, want: Uint8Array): string[] {
  const out: string[] = [];
  for (let b = 0; b * 34 < want.length; b++) {
    const g = Buffer.from(got.subarray(b * 34, b * 34 + 34)).toString("hex");
    const w = Buffer.from(want.subarray(b * 34, b * 34 + 34)).toString("hex");
    if (g !== w) out.push(`block ${b}: ${g} != ${w}`);
  }
  return out;
}

describe("Q8_0 reference quantizer against gguf-py", () => {
  it("gives gguf-py's bytes for every oracle block: ties, near-ties, zeros, subnormals, infinities, NaNs, random", () => {
    const { values, q8, nanBlocks } = oracle();
    expect(values.length).toBe((q8.length / 34) * 32);
    expect(q8.length / 34).toBeGreaterThan(300);
    expect(nanBlocks).toBeGreaterThan(20);
    const got = encodeF32As("Q8_0", values);
    expect(got.length).toBe(q8.length);
    expect(differingBlocks(got, q8)).toEqual([]);
  });
});
