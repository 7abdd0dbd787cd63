/**
 * The LoRA merge with every read pooled and every chunk poisoned as it is
 * given back (src/io/chunk-pool.ts): a block given back while still in use
 * (by the kernel, the hashes or the writer) would spoil the output, which
 * must still be torch's merge bit for bit (test/fixtures/lora, made with
 * PyTorch by scripts/make-lora-fixtures.py).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { chunkPool } from "../../src/io/chunk-pool.js";
import { readAll } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join(REPO_ROOT, "test/fixtures/lora");
const BASE = join(FIXTURES, "base-f16");
interface Expected { merges: Record<string, Record<string, Record<string, string>>> }
const expected = JSON.parse(await readFile(join(FIXTURES, "expected.json"), "utf8")) as Expected;

describe("the LoRA merge with every read pooled and poisoned on give-back", () => {
  afterEach(() => {
    chunkPool.poisonOnGiveBack = false;
    chunkPool.minPooledBytes = chunkPool.chunkBytes / 4;
  });

  const runs = [
    { name: "fp16-bin, lora", delta: "fp16-bin", chained: [], convention: "lora", want: () => expected.merges["fp16-bin"]!.lora! },
    { name: "bf16-rslora (an embedding LoRA, transposed), lora-base-dtype", delta: "bf16-rslora", chained: [], convention: "lora-base-dtype", want: () => expected.merges["bf16-rslora"]!["lora-base-dtype"]! },
    { name: "fp32-qlora, lora", delta: "fp32-qlora", chained: [], convention: "lora", want: () => expected.merges["fp32-qlora"]!.lora! },
    { name: "two adapters, one after the other", delta: "fp16-bin", chained: ["fp32-qlora"], convention: "lora", want: () => expected.merges["chain-fp16-bin-fp32-qlora"]!.lora! },
    { name: "Chinese-LLaMA-Alpaca's two adapters (whole tensors replaced, grown vocabulary)", delta: "chinese-1", chained: ["chinese-2"], convention: "chinese-llama-alpaca", want: () => (expected.merges.chinese as unknown as Record<string, Record<string, string>>)["chinese-llama-alpaca"]! },
  ];
  for (const r of runs) {
    it(`${r.name}: every tensor bit-identical to torch's merge`, async () => {
      chunkPool.poisonOnGiveBack = true;
      chunkPool.minPooledBytes = 1; // the fixtures' tensors are small: pool every read
      const before = { ...chunkPool.stats };
      const target = join(await makeTempDir("lora-pooled-"), "out");
      const result = await applyDelta({ base: BASE, delta: join(FIXTURES, r.delta), chained: r.chained.map((c) => join(FIXTURES, c)), target, ...(r.chained.length === 0 ? { convention: r.convention } : {}) });
      expect(result.convention).toBe(r.convention);
      const want = r.want();
      const got = Object.fromEntries((await readAll(target)).map((t) => [t.name, sha256Bytes(t.data)]));
      expect(Object.keys(want).filter((name) => got[name] !== want[name])).toEqual([]);
      expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
      // The pool was used: chunks came back and went out again.
      expect(chunkPool.stats.reused - before.reused).toBeGreaterThan(0);
    });
  }
});
