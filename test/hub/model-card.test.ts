import { describe, expect, it } from "vitest";
import { makeModelCard } from "../../src/hub/model-card.js";

const sum = "a".repeat(64);

describe("model card", () => {
  it("names a Hub base in the front matter and the apply command, as given (with revision)", () => {
    const card = makeModelCard({ repo: "me/delta", manifest: { codec: "add", base: { source: "hf://org/base@v2" }, target: { source: "org/tuned", files: {} } } });
    expect(card.split("\n").slice(0, 6)).toEqual(["---", "base_model: org/base", "license: other", "tags:", "- delta-weights", "---"]);
    expect(card).toContain("npx -p delta-weights apply-delta --base org/base@v2 --delta me/delta --target ./model");
  });

  it("leaves base_model out for a local base and says what to pass instead", () => {
    const card = makeModelCard({ repo: "me/delta", manifest: { base: { source: "/models/base" } } });
    expect(card).not.toContain("base_model");
    expect(card).toContain("--base <path-or-repo-of-the-base-model>");
  });

  it("lists the target's files sorted, with sizes and sha256, and keeps hostile names inside their cell", () => {
    const card = makeModelCard({
      repo: "me/delta",
      manifest: { target: { files: { "b.safetensors": { size: 2, sha256: sum }, "a|b\nc.json": { size: 1, sha256: sum }, "bad.json": { size: 1, sha256: "nothex" } } } },
    });
    const rows = card.split("\n").filter((l) => l.startsWith("| "));
    expect(rows).toEqual(["| file | size (bytes) | sha256 |", `| a\\|b c.json | 1 | \`${sum}\` |`, `| b.safetensors | 2 | \`${sum}\` |`]);
  });

  it("describes the xor codec", () => {
    expect(makeModelCard({ repo: "me/d", manifest: { codec: "xor" } })).toContain("XOR");
  });
});
