/**
 * Bounded memory: tensor bytes are only ever read in ranges of at most
 * chunkBytes, for contiguous and strided views alike, and a storage shared
 * by several tensors is one entry read in place, never copied.
 */
import { describe, expect, it } from "vitest";
import { readCheckpoint } from "../../src/pytorch/checkpoint.js";
import { isContiguous, readStrided } from "../../src/pytorch/strided-read.js";
import { checkpointZip, memoryReader, tensorDictPickle } from "./build.js";

const ROWS = 300;
const COLS = 200;

/** A [ROWS, COLS] f32 storage holding 0, 1, 2, ... and views of it. */
function bigCheckpoint() {
  const values = new Float32Array(ROWS * COLS).map((_, i) => i);
  const storage = new Uint8Array(values.buffer);
  const pickle = tensorDictPickle([
    { name: "w", storageType: "FloatStorage", key: "0", numel: ROWS * COLS, offset: 0, shape: [ROWS, COLS], strides: [COLS, 1] },
    { name: "w.T", storageType: "FloatStorage", key: "0", numel: ROWS * COLS, offset: 0, shape: [COLS, ROWS], strides: [1, COLS] },
    { name: "cols", storageType: "FloatStorage", key: "0", numel: ROWS * COLS, offset: 5, shape: [ROWS, 7], strides: [COLS, 1] },
    { name: "wide_cols", storageType: "FloatStorage", key: "0", numel: ROWS * COLS, offset: 3, shape: [ROWS, 40], strides: [COLS, 1] },
  ]);
  return checkpointZip(pickle, { "0": storage });
}

async function collect(gen: AsyncIterable<Uint8Array>): Promise<Float32Array> {
  const parts: Uint8Array[] = [];
  for await (const p of gen) parts.push(p);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return new Float32Array(out.buffer);
}

describe("readStrided", () => {
  it("recognizes contiguous layouts, size-1 dimensions included", () => {
    expect(isContiguous([2, 3], [3, 1])).toBe(true);
    expect(isContiguous([2, 1, 3], [3, 99, 1])).toBe(true);
    expect(isContiguous([], [])).toBe(true);
    expect(isContiguous([3, 2], [1, 3])).toBe(false);
    expect(isContiguous([3, 4], [1, 0])).toBe(false);
  });

  it("reads a transposed view in reads of at most chunkBytes, touching the storage about once", async () => {
    const zip = bigCheckpoint();
    const reads: number[] = [];
    const read = memoryReader(zip, reads);
    const { tensors } = await readCheckpoint(read, zip.length, "mem.bin");
    const t = tensors.find((x) => x.name === "w.T")!;
    expect(t.view.storage).toBe(tensors[0]!.view.storage); // one storage object for all three views
    reads.length = 0;
    const chunkBytes = 16 * 1024;
    const layout = { dataStart: t.view.storage.dataStart, itemSize: 4, storageOffset: 0, shape: t.view.shape, strides: t.view.strides };
    const out = await collect(readStrided(read, layout, 0, t.byteLength, chunkBytes));
    for (let r = 0; r < COLS; r++) for (let c = 0; c < ROWS; c++) if (out[r * ROWS + c] !== c * COLS + r) throw new Error(`wrong element at ${r},${c}`);
    expect(Math.max(...reads)).toBeLessThanOrEqual(chunkBytes);
    const total = reads.reduce((a, b) => a + b, 0);
    expect(total).toBeLessThanOrEqual(2 * ROWS * COLS * 4);
  });

  it("reads a contiguous tensor in chunkBytes ranges straight from its entry", async () => {
    const zip = bigCheckpoint();
    const reads: number[] = [];
    const read = memoryReader(zip, reads);
    const { tensors } = await readCheckpoint(read, zip.length, "mem.bin");
    const t = tensors[0]!;
    reads.length = 0;
    const layout = { dataStart: t.view.storage.dataStart, itemSize: 4, storageOffset: 0, shape: t.view.shape, strides: t.view.strides };
    const out = await collect(readStrided(read, layout, 0, t.byteLength, 10_000));
    expect(out.every((v, i) => v === i)).toBe(true);
    expect(reads.every((n) => n <= 10_000)).toBe(true);
    expect(reads.reduce((a, b) => a + b, 0)).toBe(t.byteLength);
  });

  it("reads a column slice (offset and row stride) as runs, not whole rows", async () => {
    const zip = bigCheckpoint();
    const reads: number[] = [];
    const read = memoryReader(zip, reads);
    const { tensors } = await readCheckpoint(read, zip.length, "mem.bin");
    const t = tensors.find((x) => x.name === "cols")!;
    reads.length = 0;
    const layout = { dataStart: t.view.storage.dataStart, itemSize: 4, storageOffset: 5, shape: t.view.shape, strides: t.view.strides };
    const out = await collect(readStrided(read, layout, 0, t.byteLength, 1 << 20));
    for (let r = 0; r < ROWS; r++) for (let c = 0; c < 7; c++) expect(out[r * 7 + c]).toBe(r * COLS + 5 + c);
    // runs closer than the gap bound are merged, so far less than the storage is read
    expect(reads.reduce((a, b) => a + b, 0)).toBeLessThan(ROWS * COLS * 4);
  });

  // Both gather paths: runs of 16+ contiguous elements are read whole, shorter
  // ones element by element; chunk sizes here pick one or the other.
  const cases: [string, number, (r: number, c: number) => number, number, number][] = [
    ["w.T", 64 * 1024, (r, c) => c * COLS + r, COLS, ROWS], // runs of 54 output rows
    ["w.T", 4 * 1024, (r, c) => c * COLS + r, COLS, ROWS], // runs of 3: per element
    ["wide_cols", 16 * 1024, (r, c) => r * COLS + 3 + c, ROWS, 40], // runs of 40, gaps of 160
    ["wide_cols", 100, (r, c) => r * COLS + 3 + c, ROWS, 40], // boxes smaller than a row
  ];
  for (const [name, chunkBytes, value, rows, cols] of cases) {
    it(`reads ${name} by ${chunkBytes}-byte chunks, whole and in ranges`, async () => {
      const zip = bigCheckpoint();
      const reads: number[] = [];
      const read = memoryReader(zip, reads);
      const { tensors } = await readCheckpoint(read, zip.length, "mem.bin");
      const t = tensors.find((x) => x.name === name)!;
      const layout = { dataStart: t.view.storage.dataStart, itemSize: 4, storageOffset: t.view.storageOffset, shape: t.view.shape, strides: t.view.strides };
      reads.length = 0;
      const out = await collect(readStrided(read, layout, 0, t.byteLength, chunkBytes));
      expect(out.length).toBe(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (out[r * cols + c] !== value(r, c)) throw new Error(`wrong element at ${r},${c}`);
      expect(Math.max(...reads)).toBeLessThanOrEqual(chunkBytes);
      expect(reads.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(2 * t.byteLength + 256 * reads.length);
      // ranges that start and end mid-row, mid-element
      for (const [start, end] of [[6, 4003], [t.byteLength - 999, t.byteLength - 1], [1234, 1234 + 5 * 1024 + 2]] as const) {
        const bytes = new Uint8Array(out.buffer).subarray(start, end);
        const parts: Uint8Array[] = [];
        for await (const p of readStrided(read, layout, start, end, chunkBytes)) parts.push(p);
        expect(Buffer.concat(parts)).toEqual(Buffer.from(bytes));
      }
    });
  }
});
