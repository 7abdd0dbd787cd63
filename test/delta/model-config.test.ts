/**
 * config.json fitted to the tensors an output holds (src/delta/engine/model-config.ts):
 * torch_dtype and vocab_size as save_pretrained writes them, every other byte
 * as the publisher wrote it, a config its own model contradicts refused.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fitConfig } from "../../src/delta/engine/model-config.js";
import { REPO_ROOT } from "../helpers/realdata.js";

const BASE_CONFIG = join(REPO_ROOT, "test/fixtures/conventions/base/safetensors/config.json");
const own = (rows: number | undefined) => ({ rows, label: "the base's config.json" });

describe("fitConfig", () => {
  it("rewrites a float32 base's torch_dtype for float16 tensors and leaves every other byte (1e-06, 10000.0) alone", async () => {
    const text = (await readFile(BASE_CONFIG, "utf8")).replace('"torch_dtype": "float16"', '"torch_dtype": "float32"');
    const fitted = fitConfig(text, { vocabRows: 512, floatDtype: "F16" }, own(512));
    expect(fitted.changes).toEqual(['torch_dtype "float32" -> "float16"']);
    expect(fitted.text).toBe(await readFile(BASE_CONFIG, "utf8"));
    expect(fitted.text).toContain('"rms_norm_eps": 1e-06');
    expect(fitted.text).toContain('"rope_theta": 10000.0');
  });

  it("leaves a config that agrees with the tensors as it is", async () => {
    const text = await readFile(BASE_CONFIG, "utf8");
    expect(fitConfig(text, { vocabRows: 512, floatDtype: "F16" }, own(512))).toEqual({ text, changes: [] });
  });

  it("grows vocab_size with the rows, as resize_token_embeddings does", () => {
    const fitted = fitConfig('{\n  "torch_dtype": "float16",\n  "vocab_size": 32000\n}\n', { vocabRows: 32001, floatDtype: "F16" }, own(32000));
    expect(fitted.text).toBe('{\n  "torch_dtype": "float16",\n  "vocab_size": 32001\n}\n');
    expect(fitted.changes).toEqual(["vocab_size 32000 -> 32001"]);
  });

  it("adds the members save_pretrained always writes when a config lacks them, in the file's indentation", () => {
    const fitted = fitConfig('{\n    "model_type": "llama"\n}\n', { vocabRows: 512, floatDtype: "BF16" }, own(undefined));
    expect(fitted.text).toBe('{\n    "model_type": "llama",\n    "vocab_size": 512,\n    "torch_dtype": "bfloat16"\n}\n');
    expect(JSON.parse(fitted.text)).toEqual({ model_type: "llama", vocab_size: 512, torch_dtype: "bfloat16" });
  });

  it("refuses a config whose vocab_size its own model contradicts (transformers could not load it)", () => {
    expect(() => fitConfig('{"vocab_size": 32000}', { vocabRows: 32001, floatDtype: "F16" }, own(32001))).toThrow(
      /the base's config\.json says vocab_size 32000, but the model it came with has 32001 embedding rows/,
    );
  });

  it("refuses a vocab_size that is not a whole number, and a config with a key twice", () => {
    expect(() => fitConfig('{"vocab_size": 32000.5}', { vocabRows: 32000, floatDtype: "F16" }, own(32000))).toThrow(/vocab_size is 32000\.5, not a whole number/);
    expect(() => fitConfig('{"torch_dtype": "float16", "torch_dtype": "float32"}', { vocabRows: undefined, floatDtype: "F16" }, own(undefined))).toThrow(/not valid JSON: duplicate key "torch_dtype"/);
  });
});
