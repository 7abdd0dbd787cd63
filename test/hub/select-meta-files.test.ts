import { describe, expect, it } from "vitest";
import { selectModelFiles } from "../../src/hub/select-files.js";

const listing = (paths: string[]) => paths.map((path) => ({ path, size: 1 }));

describe("a Hub repo of Meta's original release", () => {
  it("downloads the rank files, params.json and tokenizer.model, not the card", () => {
    expect(selectModelFiles(listing(["README.md", "checklist.chk", "consolidated.00.pth", "consolidated.01.pth", "params.json", "tokenizer.model"]))).toEqual([
      "checklist.chk",
      "consolidated.00.pth",
      "consolidated.01.pth",
      "params.json",
      "tokenizer.model",
    ]);
  });

  it("prefers a repo's Hugging Face weights to Meta's files beside them", () => {
    expect(selectModelFiles(listing(["config.json", "consolidated.00.pth", "model.safetensors", "params.json"]))).toEqual(["config.json", "model.safetensors", "params.json"]);
  });

  it("takes no .pth without params.json: a lone checkpoint is not Meta's layout", () => {
    expect(selectModelFiles(listing(["config.json", "consolidated.00.pth"]))).toEqual(["config.json"]);
  });
});
