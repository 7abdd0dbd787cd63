/**
 * Q8_0 quantized on the worker thread (src/gguf/q8-worker.ts): the same
 * bytes as gguf-py (test/fixtures/gguf/expected.json) in pieces of any size
 * with a poisoned pool (a chunk given back before the worker or the writer
 * was done with it would spoil the output), the same blocks as the
 * reference quantizer for every kind of value, and a worker that fails
 * rejects the run with a clear line.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { convertModel } from "../../src/api.js";
import { chunkPool } from "../../src/io/chunk-pool.js";
import { q8Worker } from "../../src/gguf/q8-worker.js";
import { convertPermutedHeads, encodeF32As, widenToF32 } from "../../src/gguf/quantize.js";
import { GGUF_FIXTURES, expectedTensorHashes, ggufInMemory, tensorHashes } from "../helpers/gguf-in-memory.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** `bytes` copied into shared memory, as a pooled chunk holds them. */
function shared(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(new SharedArrayBuffer(bytes.length));
  out.set(bytes);
  return out;
}

/** F32 values of every kind the quantizer treats apart: zeros, subnormals, huge, Inf, NaN, ties after scaling. */
function awkwardValues(blocks: number): Float32Array {
  const values = new Float32Array(blocks * 32).map((_, i) => Math.sin(i * 0.71) * 10 ** ((i % 11) - 5));
  values.fill(0, 32, 64); // an all-zero block
  values[70] = Infinity;
  values[100] = -Infinity;
  values[130] = NaN;
  for (let i = 160; i < 192; i++) values[i] = (i - 176) * 2 ** -140; // subnormals
  for (let i = 192; i < 224; i++) values[i] = i % 2 === 0 ? 127 : 0.5 + (i - 192); // x * (1/d) lands on halves
  values[230] = 3.4e38;
  return values;
}

describe("Q8_0 on the worker thread", () => {
  const saved = { poison: chunkPool.poisonOnGiveBack, min: chunkPool.minPooledBytes };
  afterEach(() => {
    chunkPool.poisonOnGiveBack = saved.poison;
    chunkPool.minPooledBytes = saved.min;
    q8Worker.crashNextForTests = false;
  });

  it("writes the bytes gguf-py wrote, in pieces of any size, with a poisoned pool", async () => {
    chunkPool.poisonOnGiveBack = true;
    chunkPool.minPooledBytes = 1; // every read pooled, so every piece goes to the worker
    const want = expectedTensorHashes.q8_0!.map(({ name, sha256 }) => ({ name, sha256 }));
    for (const chunkBytes of [4 * 1024 * 1024, 4096, 1024, 128]) {
      const before = q8Worker.stats.pieces;
      const bytes = await ggufInMemory("q8_0", chunkBytes);
      expect(q8Worker.stats.pieces - before, `chunks of ${chunkBytes} bytes went to the worker`).toBeGreaterThan(0);
      expect(tensorHashes(bytes), `chunks of ${chunkBytes} bytes`).toEqual(want);
    }
  });

  it("quantizes on the calling thread, to the same bytes, what is not shared memory", async () => {
    chunkPool.minPooledBytes = 1024 * 1024; // the fixture's reads are all smaller: buffers of their own
    const before = q8Worker.stats.pieces;
    const bytes = await ggufInMemory("q8_0", 4096);
    expect(q8Worker.stats.pieces).toBe(before);
    expect(tensorHashes(bytes)).toEqual(expectedTensorHashes.q8_0!.map(({ name, sha256 }) => ({ name, sha256 })));
    expect(q8Worker.quantize("F16", new Uint8Array(64), shared(new Uint8Array(34)))).toBeUndefined();
  });

  for (const from of ["F16", "BF16", "F32"] as const) {
    it(`${from}: the reference quantizer's blocks, whole or as permuted heads`, async () => {
      const f32 = awkwardValues(96);
      const source = from === "F32" ? new Uint8Array(f32.buffer) : encodeF32As(from, f32);
      const wantBlocks = encodeF32As("Q8_0", widenToF32(from, source));
      const out = shared(new Uint8Array(wantBlocks.length).fill(0xee));
      await q8Worker.quantize(from, shared(source), out);
      expect(Buffer.from(out).equals(Buffer.from(wantBlocks))).toBe(true);

      // Heads of 6 rows of 64 elements: rows reordered as the converter's permute, each quantized.
      const rowBytes = 64 * (from === "F32" ? 4 : 2);
      const permuted = convertPermutedHeads(from, "Q8_0", source, 6, rowBytes, (n) => new Uint8Array(n))!;
      const outPermuted = shared(new Uint8Array(permuted.length).fill(0xee));
      await q8Worker.quantize(from, shared(source), outPermuted, { headRows: 6, rowBytes });
      expect(Buffer.from(outPermuted).equals(Buffer.from(permuted))).toBe(true);
    });
  }

  it("refuses pieces that are not whole blocks, before posting them", () => {
    expect(() => q8Worker.quantize("F16", shared(new Uint8Array(60)), shared(new Uint8Array(34)))).toThrow(/not whole blocks/);
    expect(() => q8Worker.quantize("F16", shared(new Uint8Array(64 * 3)), shared(new Uint8Array(34 * 3)), { headRows: 2, rowBytes: 64 })).toThrow(/do not fit/);
  });

  it("a worker that fails rejects the run with one clear line; the next run starts a new one", async () => {
    chunkPool.minPooledBytes = 1;
    q8Worker.crashNextForTests = true;
    await expect(ggufInMemory("q8_0", 4096)).rejects.toThrow(/^the Q8_0 quantization worker failed: told to fail \(tests\)$/);
    const bytes = await ggufInMemory("q8_0", 4096);
    expect(tensorHashes(bytes)).toEqual(expectedTensorHashes.q8_0!.map(({ name, sha256 }) => ({ name, sha256 })));
  });

  it("convert: a worker failure exits with that line and leaves no file under the final name", async () => {
    chunkPool.minPooledBytes = 1;
    const root = await makeTempDir();
    const out = join(root, "model.gguf");
    q8Worker.crashNextForTests = true;
    await expect(convertModel(join(GGUF_FIXTURES, "model"), out, { outtype: "q8_0" })).rejects.toThrow(/Q8_0 quantization worker failed/);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(root)).toEqual([]); // no partial file left behind either
  });
});
