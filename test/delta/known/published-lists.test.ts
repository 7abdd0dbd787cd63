import { describe, expect, it } from "vitest";
import { findPublishedList, META_LLAMA_7B_KEY, PUBLISHED_LISTS } from "../../../src/delta/byte-codecs/published-lists.js";
import { isSafeRelativePath } from "../../../src/relative-path.js";

const release = (evidence: Parameters<typeof findPublishedList>[0]) => findPublishedList(evidence)?.list.release;

describe("the built-in published lists", () => {
  it("hold well-formed digests of the algorithm each names, for plain file names", () => {
    const hex = { md5: /^[0-9a-f]{32}$/, sha256: /^[0-9a-f]{64}$/ };
    for (const list of PUBLISHED_LISTS) {
      for (const digests of [list.outputs, list.base ?? {}]) {
        for (const [path, digest] of Object.entries(digests)) {
          expect(isSafeRelativePath(path), `${list.release}: ${path}`).toBe(true);
          expect(digest, `${list.release}: ${path}`).toMatch(hex[list.algorithm]);
        }
      }
      for (const digest of Object.values(list.fingerprints ?? {})) expect(digest).toMatch(hex.sha256);
      for (const digest of Object.values(list.payload ?? {})) expect(digest).toMatch(hex[list.algorithm]);
      expect(list.printedIn.length).toBeGreaterThan(10);
    }
    expect(META_LLAMA_7B_KEY.sha256).toMatch(hex.sha256);
  });

  it("are picked by the delta's Hub repo id, any revision, hf:// or not, in any case", () => {
    expect(release({ hubRepo: "OpenAssistant/oasst-sft-6-llama-30b-xor", dirs: [] })).toBe("Open-Assistant oasst-sft-6-llama-30b");
    expect(release({ hubRepo: "hf://openassistant/OASST-SFT-6-LLAMA-30B-XOR@main", dirs: [] })).toBe("Open-Assistant oasst-sft-6-llama-30b");
    expect(release({ hubRepo: "PygmalionAI/pygmalion-7b@abc123", dirs: [] })).toBe("PygmalionAI Pygmalion-7B");
    expect(release({ hubRepo: "PygmalionAI/metharme-13b", dirs: [] })).toBe("PygmalionAI Metharme-13B");
  });

  it("are picked by the folder a clone or the Hugging Face cache gives the delta", () => {
    expect(release({ dirs: ["/models/oasst-sft-6-llama-30b-xor"] })).toBe("Open-Assistant oasst-sft-6-llama-30b");
    expect(release({ dirs: ["/models/oasst-sft-6-llama-30b-xor/oasst-sft-6-llama-30b-xor"] })).toBe("Open-Assistant oasst-sft-6-llama-30b");
    expect(release({ dirs: ["/cache/hub/models--PygmalionAI--pygmalion-7b/snapshots/0123abcd"] })).toBe("PygmalionAI Pygmalion-7B");
    expect(release({ dirs: ["/models/metharme-13b/xor_encoded_files"] })).toBe("PygmalionAI Metharme-13B");
  });

  it("are not picked for other releases, even sibling ones, nor for a folder that merely contains a release's name", () => {
    expect(release({ hubRepo: "OpenAssistant/oasst-sft-7-llama-30b-xor", dirs: ["/cache/models--OpenAssistant--oasst-sft-7-llama-30b-xor/snapshots/x"] })).toBeUndefined();
    expect(release({ hubRepo: "PygmalionAI/metharme-7b", dirs: [] })).toBeUndefined();
    expect(release({ dirs: ["/models/pygmalion-7b-merged", "/models/my-pygmalion-7b"] })).toBeUndefined();
    expect(release({ dirs: ["/models/xor_encoded_files"] })).toBeUndefined();
  });
});
