/**
 * A fine-tune published as PyTorch .bin checkpoints comes back as the same
 * files: make-delta records each checkpoint's skeleton
 * (pytorch-checkpoints.json), and apply-delta --format pytorch rebuilds the
 * publisher's shards and index byte for byte, checked against their sha256.
 * The releases are real torch.save files (scripts/make-pytorch-writer-fixtures.py).
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { PYTORCH_CHECKPOINTS_FILE } from "../../src/delta/engine/pytorch-checkpoints.js";
import { noise, readAll, rng, writeModel } from "../helpers/finetune.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const fixtures = fileURLToPath(new URL("../fixtures/pytorch-writer/", import.meta.url));
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const visible = (dir: string) => readdirSync(dir).filter((n) => !n.startsWith(".")).sort();

/** A release dir from fixture files, with a float32 config as such releases carry. */
function release(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, from] of Object.entries(files)) copyFileSync(join(fixtures, from), join(dir, name));
  writeFileSync(join(dir, "config.json"), '{"torch_dtype": "float32"}\n');
  return dir;
}

/** An fp16 safetensors base with the release's float tensors' names and shapes (other values). */
async function fp16Base(dir: string, target: string): Promise<string> {
  const next = rng(3);
  // Float tensors only: the target's integer tensors travel in the delta as they are.
  const tensors = (await readAll(target)).filter((t) => ["F16", "BF16", "F32", "F64"].includes(t.dtype))
    .map((t) => ({ name: t.name, dtype: "F16" as const, shape: t.shape, data: noise("F16", t.shape.reduce((n, d) => n * d, 1), 0.5, next) }));
  return writeModel(dir, tensors, { companions: { "config.json": '{"torch_dtype": "float16"}\n' } });
}

describe("a PyTorch release, recovered byte for byte", () => {
  it("float32/bfloat16 .bin shards against an fp16 safetensors base: the same shards, index and config", async () => {
    const dir = await makeTempDir();
    const target = release(join(dir, "release"), {
      "pytorch_model-00001-of-00002.bin": "sharded/pytorch_model-00001-of-00002.bin",
      "pytorch_model-00002-of-00002.bin": "sharded/pytorch_model-00002-of-00002.bin",
      "pytorch_model.bin.index.json": "sharded/pytorch_model.bin.index.json",
    });
    const base = await fp16Base(join(dir, "base"), target);
    const delta = join(dir, "delta");
    const made = await makeDelta({ base, target, delta });
    expect(made.notes.join("\n")).toMatch(/recorded the target's PyTorch checkpoints .* apply-delta --format pytorch writes them byte for byte/);
    expect(made.files[PYTORCH_CHECKPOINTS_FILE]).toBeDefined();
    // A few hundred bytes per tensor: the skeleton, not the weights.
    expect(made.files[PYTORCH_CHECKPOINTS_FILE]!.size).toBeLessThan(2 * (7299 + 7573 - 7248) + 2000);

    const out = join(dir, "out");
    const result = await applyDelta({ base, delta, target: out, format: "pytorch" });
    expect(result.verified).toBe(true);
    expect(visible(out)).toEqual(visible(target));
    for (const name of visible(target)) {
      expect(sha256(join(out, name)), name).toBe(sha256(join(target, name)));
      expect(result.files[name]!.checkedAgainst, name).toBe("delta.json");
    }

    // Without --format, the same delta still recovers safetensors, as before.
    const plain = join(dir, "plain");
    const plainResult = await applyDelta({ base, delta, target: plain });
    expect(plainResult.notes).toContain("the release was published as PyTorch checkpoints, recorded in pytorch-checkpoints.json: --format pytorch writes those files byte for byte");
    expect(visible(plain)).toEqual(["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]);
  });

  it("a single file torch.save wrote from model.state_dict() (an OrderedDict with _metadata, which our own writer does not write)", async () => {
    const dir = await makeTempDir();
    const target = release(join(dir, "release"), { "pytorch_model.bin": "state-dict/pytorch_model.bin" });
    const base = await fp16Base(join(dir, "base"), target);
    const delta = join(dir, "delta");
    await makeDelta({ base, target, delta });
    const out = join(dir, "out");
    const result = await applyDelta({ base, delta, target: out, format: "pytorch" });
    expect(result.verified).toBe(true);
    expect(sha256(join(out, "pytorch_model.bin"))).toBe(sha256(join(target, "pytorch_model.bin")));
  });

  it("a tampered skeleton is refused by its sha256 in delta.json, before anything is written", async () => {
    const dir = await makeTempDir();
    const target = release(join(dir, "release"), { "pytorch_model.bin": "mixed.bin" });
    const base = await fp16Base(join(dir, "base"), target);
    const delta = join(dir, "delta");
    await makeDelta({ base, target, delta });
    const path = join(delta, PYTORCH_CHECKPOINTS_FILE);
    // Same size, one digit of a recorded sha256 changed: only the skeleton's own sha256 can tell.
    writeFileSync(path, readFileSync(path, "utf8").replace(/"sha256":"(.)/, (_m, c: string) => `"sha256":"${c === "0" ? "1" : "0"}`));
    const out = join(dir, "out");
    await expect(applyDelta({ base, delta, target: out, format: "pytorch" })).rejects.toThrow(/pytorch-checkpoints\.json does not match its sha256 in delta\.json/);
    expect(existsSync(join(out, "pytorch_model.bin"))).toBe(false);
  });

  it("a release whose tensors share storage (tied weights) is not recorded, saying why; --format pytorch then writes checkpoints of its own", async () => {
    const dir = await makeTempDir();
    mkdirSync(join(dir, "release"));
    copyFileSync(fileURLToPath(new URL("../fixtures/pytorch/views.bin", import.meta.url)), join(dir, "release", "pytorch_model.bin"));
    const target = join(dir, "release");
    const base = await fp16Base(join(dir, "base"), target);
    const delta = join(dir, "delta");
    const made = await makeDelta({ base, target, delta });
    expect(made.notes.join("\n")).toMatch(/cannot be rebuilt byte for byte \(pytorch_model\.bin: tensor ".+" (shares its storage|is a view)/);
    expect(existsSync(join(delta, PYTORCH_CHECKPOINTS_FILE))).toBe(false);
    const out = join(dir, "out");
    const result = await applyDelta({ base, delta, target: out, format: "pytorch" });
    expect(result.verified).toBe(true);
    expect(result.files["pytorch_model.bin"]!.checkedAgainst).toBe("delta.json's tensor sha256s");
  });
});
