/**
 * Inputs that do not belong together never become a model: a base missing a
 * tensor the convention needs, a base of another shape or size, a LlamaModel
 * checkpoint without its head, weights of a foreign format (Meta's original
 * checkpoint, a GPTQ model, a LoRA adapter, GGUF) as a base or a delta, base
 * and delta swapped. Each is refused at plan time, with exit 1 and one line
 * naming the tensor and both shapes (or the missing name, or the format),
 * and the target holds no file under a final name.
 *
 * The deltas are the publishers' (test/fixtures/conventions); the wrong
 * inputs are laid out as the tools that make them write them
 * (test/fixtures/mismatch, scripts/make-mismatch-fixtures.py).
 */
import { cp, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { DeltaError } from "../../src/errors.js";
import { oneErrorLine, runCli, type CliRun } from "../helpers/cli.js";
import { readAll, writeModel } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const CONVENTIONS = join(REPO_ROOT, "test/fixtures/conventions");
const MISMATCH = join(REPO_ROOT, "test/fixtures/mismatch");
const BASE = join(CONVENTIONS, "base/safetensors");
const delta = (convention: string): string => join(CONVENTIONS, convention, "delta");
const wrong = (name: string): string => join(MISMATCH, name);

/** Files of a directory not hidden (a run's own scratch and job files are hidden): none may be an output under its final name. */
async function visibleFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => !f.startsWith(".")).sort();
}

/** apply-delta as a user runs it: exit 1, one error line (returned), no output under a final name. */
async function refused(base: string, deltaDir: string, extra: string[] = []): Promise<string> {
  const target = join(await makeTempDir(), "out");
  const run: CliRun = runCli(["--base", base, "--delta", deltaDir, "--target", target, "--no-progress", ...extra], "apply-delta");
  expect(run.status, run.stderr).toBe(1);
  const line = oneErrorLine(run);
  expect(await visibleFiles(target)).toEqual([]);
  return line;
}

/** The library's error, for its rule. */
async function ruleOf(base: string, deltaDir: string): Promise<string | undefined> {
  const target = join(await makeTempDir(), "out");
  const err: unknown = await applyDelta({ base, delta: deltaDir, target }).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(DeltaError);
  return (err as DeltaError).rule;
}

describe("a base missing a tensor the convention needs", () => {
  for (const convention of ["llava", "ziya", "alpaca", "fastchat", "fastchat-v0"]) {
    it(`${convention}: refused naming the tensor, instead of the delta's values written as it`, async () => {
      const line = await refused(wrong("base-missing-tensor"), delta(convention));
      expect(line).toContain('has no tensor "model.layers.1.mlp.up_proj.weight"');
      expect(line).toMatch(/the base is incomplete/);
      expect(await ruleOf(wrong("base-missing-tensor"), delta(convention))).toBe("base-tensor-missing");
    });
  }

  it("alpaca: no crash, and no shard left under a final name (it used to fail on an undefined shape after writing two)", async () => {
    const target = join(await makeTempDir(), "out");
    const run = runCli(["--base", wrong("base-missing-tensor"), "--delta", delta("alpaca"), "--target", target], "apply-delta");
    expect(run.stderr).not.toMatch(/unexpected failure/);
    expect(run.status).toBe(1);
    expect(await visibleFiles(target)).toEqual([]);
  });

  it("a base with fewer layers names the missing layer's tensor and both model sizes", async () => {
    const work = await makeTempDir();
    const oneLayer = (await readAll(BASE)).filter((t) => !t.name.startsWith("model.layers.1."));
    await writeModel(join(work, "base"), oneLayer, { companions: { "config.json": await readFile(join(BASE, "config.json"), "utf8") } });
    const line = await refused(join(work, "base"), delta("llava"));
    expect(line).toContain('has no tensor "model.layers.1.');
    expect(line).toMatch(/the base has hidden size 64, 1 layer and intermediate size 176; the delta was made from one with hidden size 64, 2 layers and intermediate size 176: a different model size/);
  });
});

describe("a LlamaModel checkpoint (no \"model.\" prefix, no lm_head) as the base", () => {
  // transformers would load it into the causal LM with a random lm_head: no exact mapping gives the model, so every convention refuses it.
  for (const convention of ["llava", "ziya", "alpaca", "fastchat", "fastchat-v0"]) {
    it(`${convention}: refused, saying what the base is`, async () => {
      const line = await refused(wrong("base-llamamodel"), delta(convention));
      expect(line).toMatch(/has no tensor "(model\.embed_tokens|lm_head)\.weight"/);
      expect(line).toMatch(/without the "model\." prefix and has no "lm_head\.weight": it is a LlamaModel checkpoint/);
    });
  }
});

describe("a base of another model size", () => {
  it("FastChat: refused naming the tensor, both shapes and both sizes (it used to write a 1-layer model with 64-wide embeddings)", async () => {
    const line = await refused(wrong("base-smaller"), delta("fastchat"));
    expect(line).toContain('tensor "model.embed_tokens.weight" is F16 [512,32]');
    expect(line).toContain("needs [512,64]");
    expect(line).toMatch(/the base has hidden size 32, 1 layer and intermediate size 88; the delta was made from one with hidden size 64, 2 layers and intermediate size 176: a different model size/);
    expect(await ruleOf(wrong("base-smaller"), delta("fastchat"))).toBe("base-shape-mismatch");
  });

  for (const convention of ["llava", "ziya", "alpaca", "fastchat-v0"]) {
    it(`${convention}: refused as a different model size`, async () => {
      expect(await refused(wrong("base-smaller"), delta(convention))).toMatch(/\[.*32\].*a different model size/);
    });
  }

  it("the JSON error carries the rule", async () => {
    const target = join(await makeTempDir(), "out");
    const run = runCli(["--base", wrong("base-smaller"), "--delta", delta("fastchat"), "--target", target, "--json"], "apply-delta");
    expect(run.status).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ error: { code: "E_DELTA", rule: "base-shape-mismatch" } });
  });
});

describe("Meta's original checkpoint as the base", () => {
  // A Meta directory is a base like any other (test/delta/meta-base.test.ts); this one is of another size.
  for (const convention of ["fastchat", "alpaca", "llava"]) {
    it(`${convention} delta: read as transformers converts it, then refused as a different model size`, async () => {
      expect(await refused(wrong("meta-checkpoint"), delta(convention))).toMatch(/tensor "model\.embed_tokens\.weight" is F16 \[32,16\].*a different model size/);
    });
  }
});

describe("weights of a foreign format as the base", () => {
  const cases = [
    ["Meta's consolidated.00.pth named as a file", join(wrong("meta-checkpoint"), "consolidated.00.pth"), /is a Meta checkpoint \(consolidated\.00\.pth.*pass the directory Meta's release came in/],
    ["a GPTQ-quantized model", wrong("gptq"), /is a GPTQ-quantized model \(quantization_config in config\.json.*: a delta needs the unquantized base/],
    ["a LoRA adapter", wrong("lora"), /is a LoRA adapter \(adapter_config\.json.*lora_A.*\): not a model/],
    ["a GGUF file", join(wrong("gguf"), "model.gguf"), /is a GGUF file \(model\.gguf: llama\.cpp's format\)/],
  ] as const;
  for (const [what, base, message] of cases) {
    for (const convention of ["fastchat", "alpaca", "llava"]) {
      it(`${what}, ${convention} delta: refused saying what it is`, async () => {
        const line = await refused(base, delta(convention));
        expect(line).toMatch(/^error: --base /);
        expect(line).toMatch(message);
      });
    }
  }

  it("a converted model with Meta's originals and an adapter's config beside it is a model: applied", async () => {
    const work = await makeTempDir();
    const base = join(work, "llama");
    await cp(BASE, base, { recursive: true });
    for (const f of ["consolidated.00.pth", "params.json"]) await cp(join(wrong("meta-checkpoint"), f), join(base, f));
    await cp(join(wrong("lora"), "adapter_config.json"), join(base, "adapter_config.json"));
    const result = await applyDelta({ base, delta: delta("fastchat"), target: join(work, "out") });
    expect(result.convention).toBe("fastchat");
  });

  it("carries the rule foreign-format", async () => {
    expect(await ruleOf(wrong("gptq"), delta("fastchat"))).toBe("foreign-format");
  });
});

describe("weights of a foreign format as the delta", () => {
  const cases = [
    ["a GPTQ-quantized model", wrong("gptq"), /is a GPTQ-quantized model \(.*\), not a delta: it is a whole model, already quantized/],
    ["a GGUF file", wrong("gguf"), /is a GGUF file \(model\.gguf: llama\.cpp's format\), not a delta/],
    ["Meta's checkpoint", wrong("meta-checkpoint"), /is a Meta checkpoint .*, not a delta: it is Meta's base model itself; pass it as --base/],
  ] as const;
  for (const [what, deltaDir, message] of cases) {
    it(`${what}: refused naming the format`, async () => {
      const line = await refused(BASE, deltaDir);
      expect(line).toMatch(/^error: --delta /);
      expect(line).toMatch(message);
    });
  }

  it("a LoRA adapter is not refused but merged, by the lora convention", async () => {
    const target = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: BASE, delta: wrong("lora"), target });
    expect(result.convention).toBe("lora");
  });

  it("even with a convention forced", async () => {
    expect(await refused(BASE, wrong("lora"), ["--convention", "fastchat"])).toMatch(/is a LoRA adapter .*, not a delta: .*merged into its base by --convention lora/);
  });
});

describe("base and delta swapped", () => {
  it("FastChat as saved by a transformers that writes safetensors (no extra tensor to trip over): refused as swapped", async () => {
    // FastChat's make_delta under transformers >= 4.35 saves safetensors shards; no trl value head, no rotary buffers.
    const work = await makeTempDir();
    const tensors = (await readAll(delta("fastchat"))).filter((t) => t.name.startsWith("model.") || t.name === "lm_head.weight").filter((t) => !t.name.endsWith("inv_freq"));
    await writeModel(join(work, "delta"), tensors, { maxShardBytes: 120_000, companions: { "config.json": await readFile(join(delta("fastchat"), "config.json"), "utf8") } });
    // Given the right way round it applies.
    await applyDelta({ base: BASE, delta: join(work, "delta"), target: join(work, "right") });
    const line = await refused(join(work, "delta"), BASE);
    expect(line).toMatch(/--base .* looks like a delta and --delta .* like the model it applies to: tensor "model\.layers\.0\.input_layernorm\.weight" of the --delta has \d+ times the norm.*look swapped/);
    expect(await ruleOf(join(work, "delta"), BASE)).toBe("inputs-swapped");
  });

  it("a delta whose norm weights the fine-tune left untouched (all zero): applied the right way round, refused swapped", async () => {
    const work = await makeTempDir();
    const tensors = (await readAll(delta("fastchat")))
      .filter((t) => (t.name.startsWith("model.") || t.name === "lm_head.weight") && !t.name.endsWith("inv_freq"))
      .map((t) => (t.shape.length === 1 ? { ...t, data: new Uint8Array(t.data.length) } : t));
    await writeModel(join(work, "delta"), tensors, { companions: { "config.json": await readFile(join(delta("fastchat"), "config.json"), "utf8") } });
    await applyDelta({ base: BASE, delta: join(work, "delta"), target: join(work, "right") });
    expect(await refused(join(work, "delta"), BASE)).toMatch(/tensor "model\.layers\.0\.input_layernorm\.weight" is all zeros in the --base and not in the --delta, .*look swapped/);
  });

  for (const convention of ["fastchat", "fastchat-v0", "alpaca"]) {
    it(`${convention}: the published delta as --base and the model as --delta is refused as swapped`, async () => {
      expect(await refused(delta(convention), BASE)).toMatch(/look swapped/);
    });
  }
});

describe("make-delta with a base that is not the target's", () => {
  it("another hidden size: exit 1, one line naming the tensor and both shapes, nothing written", async () => {
    const out = join(await makeTempDir(), "delta");
    const run = runCli(["--base", wrong("base-smaller"), "--target", BASE, "--delta", out, "--no-progress"], "make-delta");
    expect(run.status, run.stderr).toBe(1);
    const line = oneErrorLine(run);
    expect(line).toContain('tensor "model.embed_tokens.weight" is F16 [512,32], the target');
    expect(line).toContain("needs [512,64]");
    expect(line).toMatch(/the target has hidden size 64, 2 layers and intermediate size 176: a different model size/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });

  it("a LlamaModel checkpoint as the base (no name in common): refused, instead of publishing the whole target as a delta", async () => {
    const out = join(await makeTempDir(), "delta");
    const run = runCli(["--base", wrong("base-llamamodel"), "--target", BASE, "--delta", out, "--no-progress"], "make-delta");
    expect(run.status, run.stderr).toBe(1);
    expect(oneErrorLine(run)).toMatch(/has none of the target .*'s tensors .*so the delta would be the whole target: .*it is a LlamaModel checkpoint/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });

  it("a grown vocabulary and tensors only in the target are still taken", async () => {
    const work = await makeTempDir();
    const base = await readAll(BASE);
    const target = base.map((t) =>
      t.name === "model.embed_tokens.weight" ? { ...t, shape: [t.shape[0]! + 1, t.shape[1]!], data: Buffer.concat([t.data, new Uint8Array(t.shape[1]! * 2)]) } : t);
    target.push({ name: "score.weight", dtype: "F16", shape: [1, 64], data: new Uint8Array(128) });
    await writeModel(join(work, "target"), target);
    const run = runCli(["--base", BASE, "--target", join(work, "target"), "--delta", join(work, "delta"), "--no-progress"], "make-delta");
    expect(run.status, run.stderr).toBe(0);
  });

  it("a LoRA adapter as the base is refused saying what it is", async () => {
    const out = join(await makeTempDir(), "delta");
    const run = runCli(["--base", wrong("lora"), "--target", BASE, "--delta", out], "make-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/--base .* is a LoRA adapter/);
  });
});
