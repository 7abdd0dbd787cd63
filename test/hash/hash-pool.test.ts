/**
 * The hash workers: a stream hashed from memory and from a file's ranges
 * (read on the worker, as a download's bytes are) is Node's own sha256 of
 * the same bytes.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { HashPool } from "../../src/hash/hash-pool.js";
import { POISON, chunkPool } from "../../src/io/chunk-pool.js";
import { REPO_ROOT } from "../helpers/realdata.js";

let dir: string;
let pool: HashPool;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "dw-hash-pool-"));
  pool = new HashPool(2);
});

afterAll(async () => {
  await pool.close();
  await rm(dir, { recursive: true, force: true });
});

describe("HashPool", () => {
  it("hashes a file's ranges read on the worker, mixed with bytes from memory, as one stream", async () => {
    const bytes = randomBytes(19 * 1024 * 1024 + 123); // more than one worker read buffer
    const path = join(dir, "blob");
    await writeFile(path, bytes);
    const hasher = pool.create();
    const cuts = [0, 1, 4096, 9 * 1024 * 1024 + 7, 9 * 1024 * 1024 + 7, 17 * 1024 * 1024, bytes.length - 10];
    for (let i = 0; i + 1 < cuts.length; i++) await hasher.updateFromFile!(path, cuts[i]!, cuts[i + 1]!);
    await hasher.update(bytes.subarray(bytes.length - 10));
    expect(await hasher.digest()).toBe(createHash("sha256").update(bytes).digest("hex"));
  });

  it("works in a process started with flags that would make its CommonJS source ESM (node --input-type=module -e)", () => {
    const script = `const { HashPool } = await import(${JSON.stringify(pathToFileURL(join(REPO_ROOT, "dist/hash/hash-pool.js")).href)});
      const pool = new HashPool(1); const h = pool.create(); await h.update(new Uint8Array([1, 2, 3])); console.log(await h.digest()); await pool.close();`;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
    expect(run.stderr).toBe("");
    expect(run.stdout.trim()).toBe(createHash("sha256").update(new Uint8Array([1, 2, 3])).digest("hex"));
  });

  it("feeds one copy of the bytes to several hashers, on one worker or on several, each its own stream", async () => {
    const one = new HashPool(1);
    try {
      for (const p of [pool, one]) {
        // Parts of more than one slot each, more of them than the ring has slots, interleaved with single updates.
        const chunks = [randomBytes(9 * 1024 * 1024 + 5), randomBytes(3), randomBytes(30 * 1024 * 1024)];
        const tensor = p.create();
        const file = p.create();
        const md5 = p.create("md5");
        const local = createHash("sha256");
        const elsewhere = { update: async (b: Uint8Array) => { local.update(b); }, digest: async () => local.digest("hex") };
        await file.update(new Uint8Array([7]));
        for (const c of chunks) await p.updateAll(c, [tensor, file, md5, elsewhere]);
        const all = Buffer.concat(chunks);
        expect(await tensor.digest()).toBe(createHash("sha256").update(all).digest("hex"));
        expect(await file.digest()).toBe(createHash("sha256").update(Buffer.concat([Buffer.from([7]), all])).digest("hex"));
        expect(await md5.digest()).toBe(createHash("md5").update(all).digest("hex"));
        expect(await elsewhere.digest()).toBe(createHash("sha256").update(all).digest("hex"));
        await expect(p.updateAll(new Uint8Array(1), [tensor])).rejects.toThrow(/already finished/);
      }
    } finally {
      await one.close();
    }
  });

  it("refuses a range past the end of the file", async () => {
    const path = join(dir, "short");
    await writeFile(path, randomBytes(1000));
    const hasher = pool.create();
    await expect(hasher.updateFromFile!(path, 0, 2000)).rejects.toThrow(/ends at byte 1000, before 2000/);
    await hasher.digest();
  });
});

/** A pooled chunk of `length` bytes filled with `seed`'s pattern. */
function pooledChunk(length: number, seed: number): Uint8Array {
  const chunk = chunkPool.takeShared(length);
  for (let i = 0; i < length; i++) chunk[i] = (i * 31 + seed) & 0xff;
  return chunk;
}

describe("HashPool hashing pooled chunks where they are", () => {
  afterEach(() => {
    HashPool.slowUpdatesMs = 0;
    chunkPool.poisonOnGiveBack = false;
  });

  it("keeps a chunk given back right after update until its (slow) hash has read it: the digest is of the bytes as handed over", async () => {
    HashPool.slowUpdatesMs = 50; // the worker is busy: every give-back below comes before the hash read the chunk
    chunkPool.poisonOnGiveBack = true;
    const slow = new HashPool(1);
    try {
      const hasher = slow.create();
      const expected = createHash("sha256");
      const before = { ...chunkPool.stats };
      for (let k = 0; k < 3; k++) {
        const chunk = pooledChunk(chunkPool.chunkBytes, k);
        expected.update(chunk);
        await hasher.update(chunk);
        chunkPool.giveBack(chunk); // at once: the pool holds it, it is neither poisoned nor handed out again yet
        expect(chunk.every((b) => b === POISON)).toBe(false);
        // Taken now, it would be a buffer of its own: the held one is not idle.
        const next = chunkPool.takeShared(16);
        expect(next.buffer).not.toBe(chunk.buffer);
        chunkPool.giveBack(next);
      }
      expect(await hasher.digest()).toBe(expected.digest("hex"));
      expect(chunkPool.stats.deferred - before.deferred).toBe(3);
    } finally {
      await slow.close();
    }
  });

  it("reports a held chunk written before its hash read it (the tests' check of the read-only rule)", async () => {
    HashPool.slowUpdatesMs = 50;
    chunkPool.poisonOnGiveBack = true;
    const slow = new HashPool(1);
    try {
      const hasher = slow.create();
      const chunk = pooledChunk(1024 * 1024, 1);
      await hasher.update(chunk);
      chunk.fill(0); // what make-delta did when it wrote the delta over the target chunk it had just hashed
      await expect(hasher.digest()).rejects.toThrow(/written while a hash was reading it/);
      chunkPool.giveBack(chunk);
    } finally {
      await slow.close();
    }
  });

  it("copies bytes that are not a pooled chunk before update resolves: the caller may reuse its buffer at once", async () => {
    HashPool.slowUpdatesMs = 20;
    const slow = new HashPool(1);
    try {
      const hasher = slow.create();
      const expected = createHash("sha256");
      const own = new Uint8Array(chunkPool.chunkBytes + 123); // more than a chunk: copied in two parts
      for (let k = 0; k < 3; k++) {
        own.fill(k + 1);
        expected.update(own);
        await hasher.update(own);
      }
      expect(await hasher.digest()).toBe(expected.digest("hex"));
    } finally {
      await slow.close();
    }
  });

  it("holds a bounded number of chunks: update waits for the worker, so memory does not grow with the bytes hashed", async () => {
    HashPool.slowUpdatesMs = 10;
    const slow = new HashPool(1);
    try {
      const hasher = slow.create();
      const expected = createHash("sha256");
      const before = chunkPool.stats.allocated;
      for (let k = 0; k < 40; k++) {
        const chunk = pooledChunk(chunkPool.chunkBytes, k);
        expected.update(chunk);
        await hasher.update(chunk);
        chunkPool.giveBack(chunk);
      }
      expect(await hasher.digest()).toBe(expected.digest("hex"));
      // 40 chunks went through; fresh buffers were made only for those held at once (6 per worker) and the one being filled.
      expect(chunkPool.stats.allocated - before).toBeLessThanOrEqual(7);
    } finally {
      await slow.close();
    }
  });

  it("feeds one held chunk to hashers on two workers, and lets it go after both read it", async () => {
    HashPool.slowUpdatesMs = 20;
    chunkPool.poisonOnGiveBack = true;
    const two = new HashPool(2);
    try {
      const [a, b] = [two.create(), two.create()];
      const chunk = pooledChunk(2 * 1024 * 1024, 9);
      const expected = createHash("sha256").update(chunk).digest("hex");
      await two.updateAll(chunk, [a, b]);
      chunkPool.giveBack(chunk);
      expect(await a.digest()).toBe(expected);
      expect(await b.digest()).toBe(expected);
    } finally {
      await two.close();
    }
  });
});
