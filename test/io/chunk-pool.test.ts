import { createHash } from "node:crypto";
import { cpSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { HashPool } from "../../src/hash/hash-pool.js";
import { ChunkPool, POISON, chunkPool, lentToConsumer } from "../../src/io/chunk-pool.js";
import { prefetch } from "../../src/io/chunk-streams.js";
import { convertModel } from "../../src/model/convert.js";
import { finetune, noise, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const MB = 1024 * 1024;

describe("ChunkPool", () => {
  it("hands a given-back buffer out again, and fresh memory only when none is idle", () => {
    const pool = new ChunkPool(MB, 2);
    const a = pool.take(MB);
    const b = pool.take(MB / 2);
    expect(a.buffer).not.toBe(b.buffer);
    expect(pool.stats).toEqual({ allocated: 2, reused: 0, deferred: 0, unpooled: 0 });
    pool.giveBack(a);
    const c = pool.take(MB);
    expect(c.buffer).toBe(a.buffer);
    expect(c).not.toBe(a); // a new view: the old one can no longer be given back
    expect(pool.stats).toEqual({ allocated: 2, reused: 1, deferred: 0, unpooled: 0 });
  });

  it("ignores what it did not hand out, subarrays, and a second give-back of the same chunk", () => {
    const pool = new ChunkPool(MB, 4);
    const a = pool.take(MB);
    pool.giveBack(new Uint8Array(MB));
    pool.giveBack(a.subarray(0, MB / 2));
    expect(pool.idle).toBe(0);
    pool.giveBack(a);
    pool.giveBack(a);
    expect(pool.idle).toBe(1);
    // Had the second give-back counted, two takers would share one buffer.
    const x = pool.take(MB);
    const y = pool.take(MB);
    expect(x.buffer).not.toBe(y.buffer);
  });

  it("keeps at most maxFree idle buffers, and pools only reads of chunk size", () => {
    const pool = new ChunkPool(MB, 2);
    const taken = [pool.take(MB), pool.take(MB), pool.take(MB)];
    for (const t of taken) pool.giveBack(t);
    expect(pool.idle).toBe(2);
    const small = pool.take(100);
    const large = pool.take(2 * MB);
    expect(pool.isOut(small) || pool.isOut(large)).toBe(false);
    expect(large.length).toBe(2 * MB);
  });

  it("hands out buffers of their own once maxLive shared buffers are alive (V8 does not collect garbage for shared memory)", () => {
    const pool = new ChunkPool(MB, 2, 3);
    const taken = Array.from({ length: 5 }, () => pool.take(MB));
    expect(taken.map((t) => pool.isOut(t))).toEqual([true, true, true, false, false]);
    expect(taken.slice(0, 3).every((t) => t.buffer instanceof SharedArrayBuffer)).toBe(true);
    expect(taken[3]!.buffer instanceof SharedArrayBuffer).toBe(false);
    expect(pool.stats).toEqual({ allocated: 3, reused: 0, deferred: 0, unpooled: 2 });
    // A given-back buffer is alive and idle: it is handed out again.
    pool.giveBack(taken[0]);
    const again = pool.take(MB);
    expect(again.buffer).toBe(taken[0]!.buffer);
    // The hash pool's copies are shared whatever the count (they go back as soon as they are read).
    expect(pool.takeShared(100).buffer instanceof SharedArrayBuffer).toBe(true);
  });

  it("poisons a given-back chunk, so a later reader of it sees garbage", () => {
    const pool = new ChunkPool(MB, 2);
    pool.poisonOnGiveBack = true;
    const a = pool.take(MB);
    a.fill(7);
    pool.giveBack(a);
    expect(a.every((byte) => byte === POISON)).toBe(true);
  });

  it("lentToConsumer gives each chunk back once the consumer asks for the next, and none in flight on an early end", async () => {
    const pool = new ChunkPool(MB, 4);
    const chunks = [pool.take(MB), pool.take(MB), pool.take(MB)];
    async function* source() {
      yield* chunks;
    }
    const seen: boolean[] = [];
    for await (const chunk of lentToConsumer(source(), pool)) {
      seen.push(pool.isOut(chunk)); // still ours while we hold it
      if (seen.length === 2) break;
    }
    expect(seen).toEqual([true, true]);
    expect(pool.isOut(chunks[0]!)).toBe(false);
    expect(pool.isOut(chunks[1]!)).toBe(true); // the loop ended holding it: not given back
  });
});

describe("prefetch and the pool", () => {
  it("gives back the chunks it read ahead when its consumer stops early, and nothing it yielded", async () => {
    const chunks = [chunkPool.take(chunkPool.chunkBytes), chunkPool.take(chunkPool.chunkBytes), chunkPool.take(chunkPool.chunkBytes)];
    async function* source() {
      yield* chunks;
    }
    for await (const chunk of prefetch(source(), 2)) {
      expect(chunk).toBe(chunks[0]);
      break;
    }
    expect(chunkPool.isOut(chunks[0]!)).toBe(true); // yielded: its holder decides
    expect(chunkPool.isOut(chunks[1]!)).toBe(false);
    expect(chunkPool.isOut(chunks[2]!)).toBe(false);
  });
});

/** A model whose tensors span several 4 MB chunks, with tails, in three dtypes. */
function largeTensors(seed: number): Tensor[] {
  const next = rng(seed);
  return [
    { name: "embed.weight", dtype: "F16", shape: [1280, 2048], data: noise("F16", 1280 * 2048, 0.02, next) }, // 5 MB: a chunk and a 1 MB tail
    { name: "layers.0.weight", dtype: "BF16", shape: [1024, 1024], data: noise("BF16", 1024 * 1024, 0.02, next) },
    { name: "layers.1.weight", dtype: "F32", shape: [768, 2048], data: noise("F32", 768 * 2048, 0.02, next) }, // 6 MB
    { name: "norm.weight", dtype: "F32", shape: [2048], data: noise("F32", 2048, 1, next) },
  ];
}

/**
 * make-delta from a base of largeTensors(tensorSeed) to a fine-tune of it in
 * 9 MB shards, `checkDelta` on the delta, then apply-delta: verified, and
 * every file of the target (the oracle) back bit for bit. Returns the chunk
 * pool's stats from just before make-delta.
 */
async function makeThenApply(tensorSeed: number, finetuneSeed: number, checkDelta?: (delta: string, target: string) => void): Promise<ChunkPool["stats"]> {
  const root = await makeTempDir();
  const tensors = largeTensors(tensorSeed);
  const base = await writeModel(join(root, "base"), tensors);
  const target = await writeModel(join(root, "target"), finetune(tensors, { seed: finetuneSeed, scale: 0.05 }), { maxShardBytes: 9 * MB });
  const delta = join(root, "delta");
  const before = { ...chunkPool.stats };
  await makeDelta({ base, target, delta });
  checkDelta?.(delta, target);
  const out = join(root, "out");
  const result = await applyDelta({ base, delta, target: out });
  expect(result.verified).toBe(true);
  const files = readdirSync(target).sort();
  expect(readdirSync(out).sort()).toEqual(files);
  for (const f of files) expect(sha256(join(out, f)), f).toBe(sha256(join(target, f)));
  return before;
}

describe("the chunk pool in make-delta and apply-delta", () => {
  afterEach(() => {
    chunkPool.poisonOnGiveBack = false;
    chunkPool.minPooledBytes = chunkPool.chunkBytes / 4;
    HashPool.slowUpdatesMs = 0;
  });

  it("recovers every byte with chunks poisoned as they are given back (no chunk is given back while in use)", async () => {
    chunkPool.poisonOnGiveBack = true;
    const before = await makeThenApply(3, 5);
    // The pool was used: buffers came back and went out again.
    expect(chunkPool.stats.reused - before.reused).toBeGreaterThan(10);
  });

  it("recovers every byte when the hashes lag behind: chunks hashed where they are are neither reused nor written before their hash read them", async () => {
    // Every hash waits before it reads its chunk, so the main thread is always
    // ahead: a target chunk written with the delta, a base chunk or an output
    // chunk handed out again before its hash read it would spoil a digest
    // (make-delta records a wrong sum, apply-delta refuses its own output),
    // and the pool's check reports a held chunk written meanwhile.
    HashPool.slowUpdatesMs = 15;
    chunkPool.poisonOnGiveBack = true;
    chunkPool.minPooledBytes = 1;
    const before = await makeThenApply(11, 13, (delta, target) => {
      // make-delta recorded the target's own sums, not those of chunks changed under its hashes.
      const manifest = JSON.parse(readFileSync(join(delta, "delta.json"), "utf8")) as { target: { files: Record<string, { sha256: string }> } };
      for (const [name, entry] of Object.entries(manifest.target.files)) expect(entry.sha256, name).toBe(sha256(join(target, name)));
    });
    // Chunks were given back while their hashes still read them: the in-place path ran.
    expect(chunkPool.stats.deferred - before.deferred).toBeGreaterThan(10);
  });

  it("writes the same GGUF with every read pooled and poisoned on give-back (Q8_0 and F16, the q/k permutation)", async () => {
    const model = join(REPO_ROOT, "test", "fixtures", "gguf", "model");
    const root = await makeTempDir();
    const expected: Record<string, string> = {};
    for (const outtype of ["q8_0", "f16"] as const) {
      const file = join(root, `plain-${outtype}.gguf`);
      await convertModel(model, file, { outtype });
      expected[outtype] = sha256(file);
    }
    chunkPool.poisonOnGiveBack = true;
    chunkPool.minPooledBytes = 1; // the fixture's tensors are small: pool every read
    const before = { ...chunkPool.stats };
    for (const outtype of ["q8_0", "f16"] as const) {
      const file = join(root, `pooled-${outtype}.gguf`);
      await convertModel(model, file, { outtype });
      expect(sha256(file), outtype).toBe(expected[outtype]);
    }
    expect(chunkPool.stats.reused - before.reused).toBeGreaterThan(0);
  });

  it("applies a delta with every read pooled and poisoned on give-back", async () => {
    const model = join(REPO_ROOT, "test", "fixtures", "gguf", "model");
    const root = await makeTempDir();
    const base = join(root, "base");
    cpSync(model, base, { recursive: true });
    const weights = join(base, "model.safetensors");
    const bytes = readFileSync(weights);
    const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
    for (let i = dataStart; i < bytes.length; i += 89) bytes[i]! ^= 1;
    writeFileSync(weights, bytes);
    chunkPool.poisonOnGiveBack = true;
    chunkPool.minPooledBytes = 1;
    const before = { ...chunkPool.stats };
    const delta = join(root, "delta");
    await makeDelta({ base, target: model, delta });
    const out = join(root, "out");
    const result = await applyDelta({ base, delta, target: out });
    expect(result.verified).toBe(true);
    expect(sha256(join(out, "model.safetensors"))).toBe(sha256(join(model, "model.safetensors")));
    expect(chunkPool.stats.reused - before.reused).toBeGreaterThan(0);
  });

  it("a chunk given back too early is caught: the poisoned bytes reach the output", async () => {
    // The negative control for the tests above: a consumer that gives a chunk back before writing it.
    const pool = new ChunkPool(MB, 4);
    pool.poisonOnGiveBack = true;
    const chunk = pool.take(MB);
    chunk.fill(1);
    const written: Uint8Array[] = [];
    async function* premature() {
      pool.giveBack(chunk);
      yield chunk;
    }
    for await (const c of premature()) written.push(c.slice());
    expect(written[0]!.every((b) => b === 1)).toBe(false);
  });
});
