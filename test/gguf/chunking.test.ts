/**
 * GGUF output split into small chunks: q_proj/k_proj read several heads at
 * a time (or one head over several reads) and permuted and converted row by
 * row straight into the output chunk, other tensors in pieces of whole
 * Q8_0 blocks. Every split must give the bytes gguf-py wrote
 * (test/fixtures/gguf/expected.json), and the pooled chunks must go back
 * to the pool only once their bytes were written.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { chunkPool } from "../../src/io/chunk-pool.js";
import { openModel } from "../../src/model/open-model.js";
import { planGguf, writeGguf } from "../../src/model/gguf-output.js";
import { convertChunk, convertPermutedHeads, permuteHeadRows } from "../../src/gguf/quantize.js";
import { readGgufBytes, ggmlBytes } from "../helpers/gguf-read.js";
import { REPO_ROOT } from "../helpers/realdata.js";

const FIXTURES = join(REPO_ROOT, "test", "fixtures", "gguf");
const expected = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as { tensors: Record<string, { name: string; sha256: string }[]> };

async function gguf(outtype: "f16" | "q8_0" | "bf16" | "f32", chunkBytes: number): Promise<Uint8Array> {
  const model = await openModel(join(FIXTURES, "model"));
  try {
    const { plan, layout } = await planGguf(model, "model", outtype);
    const parts: Uint8Array[] = [];
    // The sink copies each write: a chunk given back (and poisoned) before it was written would show in the bytes.
    await writeGguf(model, plan, layout, { write: async (bytes) => { parts.push(bytes.slice()); } }, "test", undefined, chunkBytes);
    return new Uint8Array(Buffer.concat(parts));
  } finally {
    await model.close();
  }
}

function tensorHashes(bytes: Uint8Array): { name: string; sha256: string }[] {
  const file = readGgufBytes(bytes);
  return file.tensors.map((t) => {
    const start = file.dataStart + t.offset;
    return { name: t.name, sha256: createHash("sha256").update(bytes.subarray(start, start + ggmlBytes(t.type, t.dims))).digest("hex") };
  });
}

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
      const want = expected.tensors[outtype]!.map(({ name, sha256 }) => ({ name, sha256 }));
      const whole = await gguf(outtype, 4 * 1024 * 1024);
      expect(tensorHashes(whole)).toEqual(want);
      for (const chunkBytes of [4096, 1024, 128]) {
        const split = await gguf(outtype, chunkBytes);
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
