/**
 * LoRA merges from the command line: --delta repeated merges adapters in
 * order, the summary says unverified (and why) and names the convention; a
 * refusal is one error line, exit 1, nothing written.
 */
import { existsSync } from "node:fs";
import { cp, writeFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join(REPO_ROOT, "test/fixtures/lora");
const BASE = join(FIXTURES, "base-f16");

describe("apply-delta with LoRA adapters", () => {
  it("--delta twice merges both, in order; the summary says unverified and what was merged", async () => {
    const target = join(await makeTempDir("lora-cli-"), "out");
    const run = runCli(["--base", BASE, "--delta", join(FIXTURES, "chinese-1"), "--delta", join(FIXTURES, "chinese-2"), "--target", target], "apply-delta");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const lines = run.stdout.split("\n");
    expect(lines[0]).toBe("unverified: nothing the publisher gave can check this result; pass --checksums FILE with their published checksums");
    expect(run.stdout).toMatch(/^convention: chinese-llama-alpaca /m);
    expect(run.stdout).toMatch(/merged 18 LoRA updates, 4 tensors replaced whole/);
    expect(JSON.parse(await readFile(join(target, "config.json"), "utf8")).vocab_size).toBe(109);
  });

  it("--json reports the convention and the files", async () => {
    const target = join(await makeTempDir("lora-cli-"), "out");
    const run = runCli(["--base", BASE, "--delta", join(FIXTURES, "fp16-bin"), "--target", target, "--json"], "apply-delta");
    expect(run.status).toBe(0);
    const result = JSON.parse(run.stdout) as { convention: string; verified: boolean; files: Record<string, unknown> };
    expect(result.convention).toBe("lora");
    expect(result.verified).toBe(false);
    expect(Object.keys(result.files)).toContain("delta-weights-merge.json");
  });

  const refusals: [string, () => Promise<string[]>, RegExp][] = [
    ["an adapter given as --base", async () => ["--base", join(FIXTURES, "fp16-bin"), "--delta", join(FIXTURES, "fp32-qlora")], /--base .*fp16-bin is a LoRA adapter \(adapter_config\.json.*\): not a model/],
    ["a quantized base", async () => {
      const base = join(await makeTempDir("lora-cli-"), "base");
      await cp(BASE, base, { recursive: true });
      const config = JSON.parse(await readFile(join(base, "config.json"), "utf8")) as Record<string, unknown>;
      await writeFile(join(base, "config.json"), JSON.stringify({ ...config, quantization_config: { load_in_4bit: true } }));
      return ["--base", base, "--delta", join(FIXTURES, "fp16-bin")];
    }, /is a quantized model \(quantization_config in config\.json\): a delta needs the unquantized base/],
    ["another PEFT type", async () => ["--base", BASE, "--delta", join(FIXTURES, "refused-loha")], /peft_type "LOHA" \(LoHa\)/],
  ];
  for (const [what, args, message] of refusals) {
    it(`refuses ${what}: one line, exit 1, nothing written`, async () => {
      const target = join(await makeTempDir("lora-cli-"), "out");
      const run = runCli([...(await args()), "--target", target], "apply-delta");
      expect(run.status).toBe(1);
      expect(oneErrorLine(run)).toMatch(message);
      expect(existsSync(target)).toBe(false);
    });
  }
});
