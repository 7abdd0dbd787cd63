import { createHash } from "node:crypto";
import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { convertModel } from "../../src/model/convert.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const MODEL = join(REPO_ROOT, "test", "fixtures", "gguf", "model");
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

/** A base the tiny LLaMA could have been fine-tuned from: every 97th weight byte nudged. */
async function baseOf(root: string): Promise<string> {
  const base = join(root, "base");
  cpSync(MODEL, base, { recursive: true });
  const path = join(base, "model.safetensors");
  const bytes = readFileSync(path);
  const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
  for (let i = dataStart; i < bytes.length; i += 97) bytes[i]! ^= 1;
  writeFileSync(path, bytes);
  return base;
}

describe("apply-delta --format gguf", () => {
  it("recovers the model, verifies it, and leaves one GGUF file identical to converting the publisher's model", async () => {
    const root = await makeTempDir();
    const base = await baseOf(root);
    const delta = join(root, "delta");
    await makeDelta({ base, target: MODEL, delta });
    const target = join(root, "out", "model");
    const result = await applyDelta({ base, delta, target, format: "gguf", outtype: "q8_0" });
    expect(result.verified).toBe(true);
    expect(readdirSync(target)).toEqual(["model.gguf"]);
    expect(result.gguf?.outtype).toBe("q8_0");
    const direct = join(root, "direct", "model.gguf");
    await convertModel(MODEL, direct, { outtype: "q8_0" });
    expect(sha256(join(target, "model.gguf"))).toBe(sha256(direct));
    expect(result.gguf?.file.sha256).toBe(sha256(direct));
    // the same file, said generically beside the GGUF-named field
    expect(result.modelFile).toEqual({ format: "gguf", file: result.gguf?.file, outtype: "q8_0" });
  });

  it("refuses a model it cannot write as GGUF before any output", async () => {
    const root = await makeTempDir();
    const base = await baseOf(root);
    const delta = join(root, "delta");
    await makeDelta({ base, target: MODEL, delta });
    const config = JSON.parse(readFileSync(join(delta, "config.json"), "utf8")) as Record<string, unknown>;
    config.architectures = ["FalconForCausalLM"];
    writeFileSync(join(delta, "config.json"), JSON.stringify(config));
    const target = join(root, "out");
    await expect(applyDelta({ base, delta, target, format: "gguf" })).rejects.toThrow(/not FalconForCausalLM/);
    expect(existsSync(target)).toBe(false);
  });
});
