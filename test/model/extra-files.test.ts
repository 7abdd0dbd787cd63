import { describe, expect, it } from "vitest";
import { isExtraFile } from "../../src/model/extra-files.js";

describe("which files travel with a model", () => {
  it.each([
    "config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.jinja", "chat_template.json", "preprocessor_config.json", "LICENSE",
  ])("carries %s", (name) => {
    expect(isExtraFile(name)).toBe(true);
  });

  it.each([
    "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json",
    "delta.json", "delta-fixups.safetensors", "README.md", "readme.md", ".gitattributes", ".model.safetensors.partial",
    "consolidated.00.pth", "model.gguf", "flax_model.msgpack", "tf_model.h5", "training_args.bin",
  ])("leaves %s behind", (name) => {
    expect(isExtraFile(name)).toBe(false);
  });
});
