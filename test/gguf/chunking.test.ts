/**
 * GGUF output split into small chunks: q_proj/k_proj read several heads at
 * a time (or one head over several reads) and permuted and converted row by
 * row straight into the output chunk, other tensors in pieces of whole
 * Q8_0 blocks. Every split must give the bytes gguf-py wrote
 * (test/fixtures/gguf/expected.json), and the pooled chunks must go back
 * to the pool only once their bytes were written.
 */
import { afterEach, describe, expect, it } from "vitest";
import { chunkPool } from "../../src/io/chunk-pool.js";
import { convertChunk, convertPermutedHeads, permuteHeadRows } from "../../src/gguf/quantize.js";
import { expectedTensorHashes, ggufInMemory, tensorHashes } from "../helpers/gguf-in-memory.js";

describe("GGUF output in small chunks", () => {
  const saved = { poison: chunkPool.poisonOnGiveBack, min: chunkPool.minPooledBytes };
  afterEach(() => {
    chunkPool.poisonOnGiveBack = saved.poison;
    chunkPool.minPooledBytes = saved.min;
  });

  // The tiny model's q_proj heads are 16 rows of 64 F16 values (2 KB each), k_proj has 2 such heads.
  for (const outtype of ["f16", "q8_0", "bf16", "f32"] as const) {
    it(`${outtype}: the bytes gguf-py wrote whether a chunk holds many heads, one, or part of one`, async () => {
      chunkPool.poisonOnGiveBack = true;
      chunkPool.minPooledBytes = 1;
      const want = expectedTensorHashes[outtype]!.map(({ name, sha256 }) => ({ name, sha256 }));
      const whole = await ggufInMemory(outtype, 4 * 1024 * 1024);
      expect(tensorHashes(whole)).toEqual(want);
      for (const chunkBytes of [4096, 1024, 128]) {
        const split = await ggufInMemory(outtype, chunkBytes);
        expect(Buffer.from(split).equals(Buffer.from(whole)), `chunks of ${chunkBytes} bytes`).toBe(true);
      }
    });
  }

  it("permutes and converts whole heads in one pass as permuting, then converting does", () => {
    const headRows = 6, rowElements = 64, heads = 3;
    const values = new Float32Array(heads * headRows * rowElements).map((_, i) => Math.sin(i * 0.37) * (i % 7));
    const f16 = convertChunk("F32", "F16", new Uint8Array(values.buffer));
    const rowBytes = rowElements * 2, headBytes = headRows * rowBytes;
    const permuted = new Uint8Array(f16.length);
    for (let h = 0; h < heads; h++) permuted.set(permuteHeadRows(f16.subarray(h * headBytes, (h + 1) * headBytes), headRows, rowBytes), h * headBytes);
    for (const type of ["F16", "Q8_0"] as const) {
      const direct = convertPermutedHeads("F16", type, f16, headRows, rowBytes, (n) => new Uint8Array(n));
      expect(direct, type).toBeDefined();
      expect(Buffer.from(direct!).equals(Buffer.from(convertChunk("F16", type, permuted))), type).toBe(true);
    }
    // Conversions that do not go row by row are left to the caller.
    expect(convertPermutedHeads("F16", "BF16", f16, headRows, rowBytes, (n) => new Uint8Array(n))).toBeUndefined();
    expect(() => convertPermutedHeads("F16", "F16", f16.subarray(0, 5 * rowBytes), 5, rowBytes, (n) => new Uint8Array(n))).toThrow(/rotary halves/);
  });
});
