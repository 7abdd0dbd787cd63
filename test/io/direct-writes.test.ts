import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AtomicFile } from "../../src/io/atomic-file.js";
import { directWrites } from "../../src/io/direct-writes.js";
import { HashPool } from "../../src/hash/hash-pool.js";
import { sha256Bytes as sha256 } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { directWritesSupported } from "../helpers/direct-writes.js";

const dir = await makeTempDir("dw-direct-");
afterEach(() => {
  directWrites.enabled = true;
  directWrites.refuseForTests = false;
});

const MiB = 1024 * 1024;

const direct = directWritesSupported(dir);

/** Writes `content` through an AtomicFile in pieces of the given sizes (cycled), half of them shared memory as pooled chunks are. */
async function writeInPieces(path: string, content: Uint8Array, pieces: number[]): Promise<string> {
  const file = await AtomicFile.create(path);
  for (let at = 0, i = 0; at < content.length; i++) {
    const n = Math.min(pieces[i % pieces.length]!, content.length - at);
    const piece = i % 2 === 0 ? new Uint8Array(new SharedArrayBuffer(n)) : new Uint8Array(n);
    piece.set(content.subarray(at, at + n));
    await file.write(piece);
    at += n;
  }
  return file.commit();
}

describe("output files written past the page cache", () => {
  // Around every boundary the writer cares about: the 4 KiB alignment, the 4 MiB block, several blocks in flight.
  const sizes = [0, 1, 4095, 4096, 4097, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 13 * MiB + 12345];

  it.each(sizes)("a %i-byte file comes out byte for byte, with its sha256", async (size) => {
    const content = randomBytes(size);
    const before = directWrites.stats.direct;
    const path = join(dir, `file-${size}.bin`);
    const digest = await writeInPieces(path, content, [1, 70000, 3 * MiB + 7, 4 * MiB]);
    expect(readFileSync(path).equals(content)).toBe(true);
    expect(digest).toBe(sha256(content));
    // Where the file system takes O_DIRECT, whole 4 KiB units went direct (a smaller file is all tail).
    if (direct) expect(directWrites.stats.direct > before).toBe(size >= 4096);
  });

  it("writes the same bytes through the page cache when direct writes are off", async () => {
    directWrites.enabled = false;
    const content = randomBytes(9 * MiB + 5);
    const before = { ...directWrites.stats };
    const path = join(dir, "buffered.bin");
    expect(await writeInPieces(path, content, [MiB + 3])).toBe(sha256(content));
    expect(readFileSync(path).equals(content)).toBe(true);
    expect(directWrites.stats).toEqual(before);
  });

  it("falls back to the page cache when the file system refuses a direct write, keeping every byte", async () => {
    directWrites.refuseForTests = true;
    const content = randomBytes(10 * MiB + 999);
    const before = directWrites.stats.fallback;
    const path = join(dir, "refused.bin");
    expect(await writeInPieces(path, content, [2 * MiB + 1])).toBe(sha256(content));
    expect(readFileSync(path).equals(content)).toBe(true);
    if (direct) expect(directWrites.stats.fallback).toBeGreaterThan(before);
  });

  it("writes more files at once than there are blocks for: the rest go through the page cache", async () => {
    const contents = Array.from({ length: 7 }, (_, i) => randomBytes(9 * MiB + 17 * i));
    const files = await Promise.all(contents.map((_, i) => AtomicFile.create(join(dir, `many-${i}.bin`))));
    // Interleaved, so every file holds its blocks while the others want theirs.
    for (let at = 0; at < 10 * MiB; at += MiB) {
      await Promise.all(files.map((f, i) => f.write(contents[i]!.subarray(at, at + MiB))));
    }
    const digests = await Promise.all(files.map((f) => f.commit()));
    contents.forEach((content, i) => {
      expect(digests[i]).toBe(sha256(content));
      expect(readFileSync(join(dir, `many-${i}.bin`)).equals(content)).toBe(true);
    });
  });

  it("an aborted file leaves nothing behind and gives its blocks back", async () => {
    const sub = mkdtempSync(join(dir, "abort-"));
    for (let round = 0; round < 8; round++) {
      const file = await AtomicFile.create(join(sub, "out.bin"));
      await file.write(randomBytes(9 * MiB));
      await file.abort();
    }
    expect(readdirSync(sub)).toEqual([]);
    expect(existsSync(join(sub, "out.bin"))).toBe(false);
    // The blocks came back: a file written now still goes direct.
    const before = directWrites.stats.direct;
    const content = randomBytes(8 * MiB);
    expect(await writeInPieces(join(sub, "after.bin"), content, [4 * MiB])).toBe(sha256(content));
    if (direct) expect(directWrites.stats.direct).toBeGreaterThan(before);
  });
});

describe("bytes put in place by a producer (reserve, then writeReserved)", () => {
  afterEach(() => {
    HashPool.slowUpdatesMs = 0;
  });

  /**
   * A file of `content` made as the GGUF writer makes one: a plain header,
   * then pieces reserved up to `ahead` before they are handed over, each
   * filled in place (as the Q8_0 worker does) just before its turn.
   */
  async function writeReserving(file: AtomicFile, content: Uint8Array, header: number, pieces: number[], ahead: number): Promise<{ views: number[] }> {
    await file.write(content.slice(0, header));
    const queue: { at: number; length: number; views: Uint8Array[] | undefined }[] = [];
    const viewCounts: number[] = [];
    let at = header;
    const handOver = async () => {
      const next = queue.shift()!;
      const bytes = content.subarray(next.at, next.at + next.length);
      if (next.views === undefined) return file.write(bytes.slice());
      let done = 0;
      for (const view of next.views) {
        view.set(bytes.subarray(done, done + view.length));
        done += view.length;
      }
      viewCounts.push(next.views.length);
      return file.writeReserved(next.views);
    };
    for (let i = 0; at < content.length; i++) {
      const length = Math.min(pieces[i % pieces.length]!, content.length - at);
      queue.push({ at, length, views: file.reserve(length) });
      at += length;
      if (queue.length > ahead) await handOver();
    }
    while (queue.length > 0) await handOver();
    return { views: viewCounts };
  }

  it.each([
    ["one reservation at a time", 1],
    ["six ahead, as the GGUF writer reserves", 6],
  ])("a file comes out byte for byte, with its sha256, hashed where the bytes lie (%s)", async (_label, ahead) => {
    HashPool.slowUpdatesMs = 3; // the hashes lag: blocks are given back while still held
    const pool = new HashPool(2);
    try {
      const content = randomBytes(14 * MiB + 333);
      const path = join(dir, `reserved-${ahead}.bin`);
      const file = await AtomicFile.create(path, pool.create());
      const before = directWrites.stats.reservations;
      const { views } = await writeReserving(file, content, 1000, [MiB + 7, 34, 3 * MiB + 1, 4 * MiB], ahead);
      expect(await file.commit()).toBe(sha256(content));
      expect(readFileSync(path).equals(content)).toBe(true);
      if (direct) {
        expect(directWrites.stats.reservations - before).toBe(views.length);
        expect(views).toContain(2); // a piece across a block's end comes as two views
      }
    } finally {
      await pool.close();
    }
  });

  it("without direct writes nothing is reserved, and the bytes are written as usual", async () => {
    directWrites.enabled = false;
    const content = randomBytes(5 * MiB + 1);
    const path = join(dir, "unreserved.bin");
    const file = await AtomicFile.create(path);
    const { views } = await writeReserving(file, content, 10, [MiB], 3);
    expect(views).toEqual([]);
    expect(await file.commit()).toBe(sha256(content));
    expect(readFileSync(path).equals(content)).toBe(true);
  });

  it.runIf(direct)("refuses a write that would land before reserved bytes, and bytes handed over out of order", async () => {
    const file = await AtomicFile.create(join(dir, "order.bin"));
    expect(file.reserve(0)).toEqual([]); // an empty piece: reserving goes on
    const first = file.reserve(100)!;
    const second = file.reserve(100)!;
    await expect(file.write(new Uint8Array(10))).rejects.toThrow(/before the reserved bytes/);
    await expect(file.writeReserved(second)).rejects.toThrow(/not the next ones reserved/);
    await file.writeReserved(first);
    await file.writeReserved(second);
    await file.write(new Uint8Array(10));
    expect((await file.commit()).length).toBe(64);
  });

  it.runIf(direct)("an aborted file's reserved blocks are never handed to another file: a late producer cannot spoil it", async () => {
    const aborted = await AtomicFile.create(join(dir, "late.bin"));
    const late = [aborted.reserve(3 * MiB)!, aborted.reserve(3 * MiB)!].flat();
    await aborted.abort();
    const content = randomBytes(9 * MiB);
    const path = join(dir, "after-late.bin");
    const file = await AtomicFile.create(path);
    const views = file.reserve(content.length)!;
    let done = 0;
    for (const view of views) {
      view.set(content.subarray(done, done + view.length));
      done += view.length;
    }
    for (const view of late) view.fill(0xee); // the producer the aborted file had, still writing
    await file.writeReserved(views);
    expect(await file.commit()).toBe(sha256(content));
    expect(readFileSync(path).equals(content)).toBe(true);
  });
});
