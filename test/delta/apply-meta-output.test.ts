import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta, makeDelta } from "../../src/api.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join("test", "fixtures", "meta-output");
const HF = join(FIXTURES, "hf");
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as Record<string, Record<string, string>>;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

describe("apply-delta --format meta", () => {
  it("recovers, verifies, then writes Meta's layout in the target, byte-identical to the script's torch.save files", async () => {
    const work = await makeTempDir("apply-meta-");
    // A delta whose target is the fixture model itself: the recovered model is the fixture, proven by delta.json.
    await makeDelta({ base: HF, target: HF, delta: join(work, "delta") });
    const target = join(work, "out");
    const result = await applyDelta({ base: HF, delta: join(work, "delta"), target, format: "meta", numShards: 2 });
    expect(result.verified).toBe(true);
    for (const [name, digest] of Object.entries(EXPECTED["2"]!)) expect(sha256(readFileSync(join(target, name))), name).toBe(digest);
    expect(readdirSync(target).filter((f) => !f.startsWith(".")).sort()).toEqual(["consolidated.00.pth", "consolidated.01.pth", "params.json", "tokenizer.model"]);
    expect(result.gguf).toBeUndefined();
    expect(result.modelFile?.format).toBe("meta");
    expect(result.modelFile?.files?.map((f) => f.path)).toEqual(["consolidated.00.pth", "consolidated.01.pth", "params.json", "tokenizer.model"]);
    expect(result.notes).toContainEqual(expect.stringMatching(/^Meta's LLaMA layout: consolidated\.00\.pth, consolidated\.01\.pth, params\.json, tokenizer\.model written from the verified model/));
  });

  it("refuses --num-shards for another format", async () => {
    const work = await makeTempDir("apply-meta-refuse-");
    await makeDelta({ base: HF, target: HF, delta: join(work, "delta") });
    await expect(applyDelta({ base: HF, delta: join(work, "delta"), target: join(work, "out"), format: "safetensors", numShards: 2 })).rejects.toThrow(/--num-shards is for Meta's LLaMA layout output \(--format meta\), not safetensors/);
  });

  it("refuses, before recovering anything, a model the layout cannot hold (a Chinese-LLaMA-Alpaca merge of a base whose intermediate size is not Meta's)", async () => {
    const work = await makeTempDir("apply-meta-lora-");
    const lora = join("test", "fixtures", "lora");
    const target = join(work, "out");
    await expect(applyDelta({ base: join(lora, "base-f16"), delta: [join(lora, "chinese-1"), join(lora, "chinese-2")], target, format: "meta" }))
      .rejects.toThrow(/config\.json: intermediate_size 128 is not what params\.json \(dim 64, multiple_of 256\) gives, 256/);
    expect(existsSync(join(target, ".delta-weights-recovered"))).toBe(false);
  });

  it("refuses a rank count that does not divide the model before recovering anything", async () => {
    const work = await makeTempDir("apply-meta-ranks-");
    await makeDelta({ base: HF, target: HF, delta: join(work, "delta") });
    const target = join(work, "out");
    await expect(applyDelta({ base: HF, delta: join(work, "delta"), target, format: "meta", numShards: 3 })).rejects.toThrow(/3 ranks do not divide the hidden size \(32\)/);
    expect(existsSync(join(target, ".delta-weights-recovered"))).toBe(false);
  });
});
