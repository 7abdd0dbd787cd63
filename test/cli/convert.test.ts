import { createHash } from "node:crypto";
import { cpSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { REAL_FILES, hasRealdata, realPath } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir();
});

describe.skipIf(!hasRealdata)("delta-weights convert", () => {
  const samples = REAL_FILES.filter((f) =>
    ["tiny-llama-bf16/model.safetensors", "coffeevampir3-mlp/model.safetensors", "safetensors-jl-dtypes/non_sharded/model.with_metadata.safetensors", "peft-lora-gemma2b-f16/adapter_model.safetensors"].includes(f.path),
  );
  for (const real of samples) {
    it(`convert ${real.path} out.safetensors reproduces it byte for byte`, () => {
      const out = join(dir, `${real.sha256.slice(0, 8)}.safetensors`);
      const run = runCli(["convert", realPath(real.path), out]);
      expect(run.status).toBe(0);
      expect(run.stderr).toBe("");
      expect(sha256(out)).toBe(real.sha256);
      expect(run.stdout).toContain(`${real.sha256}  ${real.sha256.slice(0, 8)}.safetensors`);
    });
  }

  it("shards a directory with --max-shard-size and prints a --json result", () => {
    const out = join(dir, "sharded");
    const run = runCli(["convert", realPath("tiny-llama-bf16"), out, "--max-shard-size", "100KB", "--json"]);
    expect(run.status).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.tensors).toBe(21);
    expect(readdirSync(out).sort()).toEqual([
      "config.json",
      "model-00001-of-00004.safetensors",
      "model-00002-of-00004.safetensors",
      "model-00003-of-00004.safetensors",
      "model-00004-of-00004.safetensors",
      "model.safetensors.index.json",
    ]);
    const index = JSON.parse(readFileSync(join(out, "model.safetensors.index.json"), "utf8"));
    expect(index.metadata.total_size).toBe(316032);
    expect(Object.keys(index.weight_map)).toHaveLength(21);
  });

  it("refuses a malformed --max-shard-size with exit 2", () => {
    const run = runCli(["convert", realPath("tiny-llama-bf16"), join(dir, "x"), "--max-shard-size", "lots"]);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^error: --max-shard-size: "lots" is not a size/);
  });

  it("refuses an output inside the input, writing nothing", () => {
    const src = join(dir, "src-copy");
    cpSync(realPath("tiny-llama-bf16"), src, { recursive: true });
    const before = readdirSync(src).sort();
    const run = runCli(["convert", src, join(src, "converted")]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^error: the output .* is, or is inside, the input/);
    expect(readdirSync(src).sort()).toEqual(before);
  });
});
