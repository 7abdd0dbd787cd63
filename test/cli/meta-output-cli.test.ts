/** convert --format meta from the command line: the files and their digests; a refusal is one line, exit 1. */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join(REPO_ROOT, "test/fixtures/meta-output");
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as Record<string, Record<string, string>>;

describe("convert --format meta", () => {
  it("writes Meta's layout with --num-shards and prints each file's SHA-256", async () => {
    const out = join(await makeTempDir("meta-cli-"), "model");
    const run = runCli(["convert", join(FIXTURES, "hf"), out, "--format", "meta", "--num-shards", "2"]);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    for (const [name, digest] of Object.entries(EXPECTED["2"]!)) {
      expect(run.stdout).toContain(`${digest}  ${name}`);
      expect(createHash("sha256").update(readFileSync(join(out, name))).digest("hex")).toBe(digest);
    }
  });

  it("refuses a rank count that does not divide the model: one line, nothing written", async () => {
    const out = join(await makeTempDir("meta-cli-"), "model");
    const run = runCli(["convert", join(FIXTURES, "hf"), out, "--format", "meta", "--num-shards", "3"]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/3 ranks do not divide the hidden size \(32\)/);
    expect(existsSync(join(out, "consolidated.00.pth"))).toBe(false);
  });

  it("refuses --num-shards with another format (a usage error)", async () => {
    const out = join(await makeTempDir("meta-cli-"), "model");
    const run = runCli(["convert", join(FIXTURES, "hf"), out, "--num-shards", "2"]);
    expect(run.status).toBe(2);
    expect(oneErrorLine(run)).toMatch(/--num-shards is for Meta's LLaMA layout output \(--format meta\), not safetensors/);
  });
});
