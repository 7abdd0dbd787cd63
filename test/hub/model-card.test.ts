import { describe, expect, it } from "vitest";
import { makeModelCard } from "../../src/hub/huggingface/model-card.js";
import { VERSION } from "../../src/version.js";

const sum = "a".repeat(64);

describe("model card", () => {
  it("names a Hub base in the front matter and the apply command, as given (with revision)", () => {
    const card = makeModelCard({ repo: "me/delta", manifest: { codec: "add", base: { source: "hf://org/base@v2" }, target: { source: "org/tuned", files: {} } } });
    expect(card.split("\n").slice(0, 6)).toEqual(["---", "base_model: org/base", "license: other", "tags:", "- delta-weights", "---"]);
    expect(card).toContain("node bin/apply-delta --base org/base@v2 --delta me/delta --target ./model");
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

  // delta-weights is on no registry: a registry name would fail today and run whoever takes the name tomorrow.
  it("says how to get the tool without a registry name anyone could take: its source at the version that made the delta, then npm ci", () => {
    const card = makeModelCard({ repo: "me/delta", manifest: { tool: "delta-weights 0.3.1", base: { source: "org/base" }, target: { files: {} } } });
    const recover = card.slice(card.indexOf("## Recover the model"), card.indexOf("Every recovered file"));
    expect(recover).toBe([
      "## Recover the model",
      "",
      "This delta was made with delta-weights 0.3.1. delta-weights is not published on the npm registry: do not install or `npx` a package of that name from it, " +
        "as anyone may publish one. Get the delta-weights source at version 0.3.1 and, in its folder, with Node.js 22, 24 or 26:",
      "",
      "```bash",
      "npm ci    # the dependencies its package-lock.json pins by integrity hash; builds the tool",
      "node bin/apply-delta --base org/base --delta me/delta --target ./model",
      "```",
      "",
      "",
    ].join("\n"));
    // No command anywhere fetches a package by name from a registry.
    for (const card_ of [card, makeModelCard({ repo: "me/folder" })]) {
      const commands = card_.split("\n").filter((line) => /^(npx|npm (i|install|exec)|pnpm|yarn|bunx?)\b/.test(line));
      expect(commands).toEqual([]);
      expect(card_).not.toMatch(/npmjs\.com|npx -p|npm exec/);
    }
  });

  it("names this tool's version when delta.json's tool says nothing usable, and on a plain folder's card", () => {
    for (const tool of [undefined, "something else 1.0", "delta-weights latest", 7]) {
      expect(makeModelCard({ repo: "me/delta", manifest: { tool } })).toContain(`made with delta-weights ${VERSION}. `);
    }
    expect(makeModelCard({ repo: "me/folder" })).toContain(`Uploaded with delta-weights ${VERSION}.`);
  });
});
