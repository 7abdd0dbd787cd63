/**
 * Q8_0 quantized on the worker thread (src/gguf/q8-worker.ts): the same
 * bytes as gguf-py (test/fixtures/gguf/expected.json) in pieces of any size
 * with a poisoned pool (a chunk given back before the worker or the writer
 * was done with it would spoil the output), the same blocks as the
 * reference quantizer for every kind of value, and a worker that fails
 * rejects the run with a clear line.
 */
import { createHash } from "node:crypto";
import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { convertModel } from "../../src/api.js";
import { chunkPool } from "../../src/io/chunk-pool.js";
import { AtomicFile } from "../../src/io/atomic-file.js";
import { directWrites } from "../../src/io/direct-writes.js";
import { HashPool } from "../../src/hash/hash-pool.js";
import { openModel } from "../../src/model/open-model.js";
import { planGguf, writeGguf } from "../../src/model/gguf-output.js";
import { padded } from "../../src/gguf/format.js";
import { q8Worker } from "../../src/gguf/q8-worker.js";
import { convertPermutedHeads, encodeF32As, widenToF32 } from "../../src/gguf/quantize.js";
import { GGUF_FIXTURES, expectedTensorHashes, ggufInMemory, tensorHashes } from "../helpers/gguf-in-memory.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { buildSafetensors } from "../helpers/safetensors-bytes.js";
import { directWritesSupported } from "../helpers/direct-writes.js";

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

  it("writes into an output of two views as into one run of bytes (a reservation across a block's end), permuted heads too", async () => {
    const source = encodeF32As("F16", awkwardValues(96));
    const whole = shared(new Uint8Array((96 / 1) * 34));
    await q8Worker.quantize("F16", shared(source), whole);
    const rowBytes = 64 * 2;
    const permutedWhole = shared(new Uint8Array(whole.length));
    await q8Worker.quantize("F16", shared(source), permutedWhole, { headRows: 6, rowBytes });
    // Split inside a block (at byte 1,000 of 3,264), and at the very start.
    for (const split of [1000, 1]) {
      for (const [permute, want] of [[undefined, whole], [{ headRows: 6, rowBytes }, permutedWhole]] as const) {
        const memory = new SharedArrayBuffer(whole.length + 64);
        new Uint8Array(memory).fill(0xee);
        // The second view empty (skipped), the third in memory of its own.
        const parts = [new Uint8Array(memory, 40, split), new Uint8Array(memory, 40 + split, 0), new Uint8Array(new SharedArrayBuffer(whole.length - split))];
        await q8Worker.quantize("F16", shared(source), parts, permute);
        const got = Buffer.concat(parts.map((p) => Buffer.from(p)));
        expect(got.equals(Buffer.from(want)), `split at ${split}${permute === undefined ? "" : ", permuted"}`).toBe(true);
        expect(new Uint8Array(memory, 0, 40).every((b) => b === 0xee)).toBe(true); // nothing outside the views
      }
    }
  });

  it("writes into the file's own blocks through a real output file: gguf-py's bytes, hashed where they lie", async () => {
    chunkPool.poisonOnGiveBack = true;
    chunkPool.minPooledBytes = 1;
    HashPool.slowUpdatesMs = 2;
    const pool = new HashPool(2);
    const root = await makeTempDir();
    const model = await openModel(join(GGUF_FIXTURES, "model"));
    try {
      const { plan, layout } = await planGguf(model, "model", "q8_0");
      // The blocks first hold another file's bytes: the worker's must replace every one of them.
      const other = await AtomicFile.create(join(root, "other.bin"));
      await other.write(new Uint8Array(12 * 1024 * 1024).fill(0xee));
      await other.commit();
      for (const chunkBytes of [4096, 640]) {
        const path = join(root, `model-${chunkBytes}.gguf`);
        const file = await AtomicFile.create(path, pool.create());
        const before = { reservations: directWrites.stats.reservations, pieces: q8Worker.stats.pieces };
        await writeGguf(model, plan, layout, file, "test", undefined, chunkBytes);
        const sha = await file.commit();
        const bytes = new Uint8Array(readFileSync(path));
        expect(sha).toBe(createHash("sha256").update(bytes).digest("hex"));
        expect(tensorHashes(bytes)).toEqual(expectedTensorHashes.q8_0!.map(({ name, sha256 }) => ({ name, sha256 })));
        expect(q8Worker.stats.pieces - before.pieces).toBeGreaterThan(0);
        if (directWritesSupported(root)) expect(directWrites.stats.reservations - before.reservations).toBeGreaterThan(q8Worker.stats.pieces - before.pieces);
      }
    } finally {
      HashPool.slowUpdatesMs = 0;
      await model.close();
      await pool.close();
    }
  });

  it("pads between tensors with zeros when the padding is reserved too (a vocabulary of 401: 28 bytes after each embedding)", async () => {
    chunkPool.minPooledBytes = 1;
    const root = await makeTempDir();
    const dir = join(root, "model");
    cpSync(join(GGUF_FIXTURES, "model"), dir, { recursive: true });
    // One more row in the two vocabulary tensors: 401 rows of 68 Q8_0 bytes leave 28 bytes to the next multiple of 32.
    const raw = readFileSync(join(dir, "model.safetensors"));
    const headerLength = Number(raw.readBigUInt64LE(0));
    const header = JSON.parse(raw.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { dtype: "F16"; shape: number[]; data_offsets: [number, number] }>;
    const tensors = Object.entries(header).filter(([name]) => name !== "__metadata__").map(([name, t]) => {
      const data = raw.subarray(8 + headerLength + t.data_offsets[0], 8 + headerLength + t.data_offsets[1]);
      if (t.shape[0] !== 400) return { name, dtype: t.dtype, shape: t.shape, data };
      return { name, dtype: t.dtype, shape: [401, ...t.shape.slice(1)], data: Buffer.concat([data, data.subarray(0, 128)]) };
    });
    writeFileSync(join(dir, "model.safetensors"), buildSafetensors(tensors, { format: "pt" }));
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, vocab_size: 401 }));
    // The blocks first hold another file's bytes: padding must come out as zeros all the same.
    const other = await AtomicFile.create(join(root, "other.bin"));
    await other.write(new Uint8Array(12 * 1024 * 1024).fill(0xee));
    await other.commit();
    const model = await openModel(dir);
    try {
      const { plan, layout } = await planGguf(model, "model", "q8_0");
      const pads = layout.tensors.filter((t) => t.byteLength % 32 !== 0).map((t) => t.name);
      expect(pads).toEqual(["output.weight", "token_embd.weight"]);
      const path = join(root, "model.gguf");
      const file = await AtomicFile.create(path);
      const before = directWrites.stats.reservations;
      await writeGguf(model, plan, layout, file, "test", undefined, 4096);
      await file.commit();
      if (directWritesSupported(root)) expect(directWrites.stats.reservations).toBeGreaterThan(before);
      const reserved = new Uint8Array(readFileSync(path));
      const plainParts: Uint8Array[] = [];
      await writeGguf(model, plan, layout, { write: async (bytes) => { plainParts.push(bytes.slice()); } }, "test", undefined, 4096);
      expect(Buffer.from(reserved).equals(Buffer.concat(plainParts))).toBe(true);
      for (const t of layout.tensors) {
        const end = layout.header.length + t.offset + t.byteLength;
        expect(reserved.subarray(end, layout.header.length + padded(t.offset + t.byteLength)).every((b) => b === 0), `padding after ${t.name}`).toBe(true);
      }
    } finally {
      await model.close();
    }
  });

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
