/**
 * What the README shows a new user is what they get: `npm start`'s output
 * line for line, and `--delta` taking what the README says it takes (a
 * directory or a repo; a lone weight file is refused with what to give), and
 * the codec examples run on the fixtures printing what the README shows.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");

/** The first fenced block after `anchor` in the README. */
function blockAfter(anchor: string): string {
  const at = readme.indexOf(anchor);
  expect(at, `README has no "${anchor}"`).toBeGreaterThanOrEqual(0);
  const match = /```[a-z]*\n([\s\S]*?)```/.exec(readme.slice(at));
  expect(match, `no code block after "${anchor}"`).not.toBeNull();
  return match![1]!;
}

describe("README", () => {
  it("shows exactly what `npm start` prints", () => {
    const run = spawnSync(process.execPath, [join(REPO_ROOT, "scripts/start.mjs")], { cwd: REPO_ROOT, encoding: "utf8", timeout: 60_000, env: { ...process.env, NO_COLOR: "1" } });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(blockAfter("`npm start` applies"));
  });

  // Each block: `$ apply-delta ARGS` then its output; run with the target in a scratch folder.
  for (const anchor of ["The same on the repository's small torch.save fixtures", "and on the fixtures, whose key is"]) {
    it(`the example after "${anchor}" prints what it shows`, async () => {
      const [command, ...shown] = blockAfter(anchor).trimEnd().split("\n");
      const args = command!.replace(/^\$ apply-delta /, "").split(" ");
      const target = args[args.indexOf("--target") + 1]!;
      const scratch = join(await makeTempDir(), "out");
      const run = runCli(args.map((arg) => (arg === target ? scratch : arg)), "apply-delta");
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout.trimEnd().split("\n")).toEqual(shown.map((line) => line.replace(`wrote ${target}:`, `wrote ${scratch}:`)));
    });
  }

  it("--delta: a single weight file is refused (exit 2), naming the directory to give; the directory works", async () => {
    const target = join(await makeTempDir(), "out");
    const refused = runCli(["--base", "samples/base", "--delta", "samples/delta/model.safetensors", "--target", target], "apply-delta");
    expect(refused.status).toBe(2);
    expect(oneErrorLine(refused)).toBe(
      "error: --delta samples/delta/model.safetensors is a file; --delta must be a directory (the delta as published: its weights with their config and tokenizer files, or delta.json) or a Hub repo id: pass the directory that holds it (samples/delta)",
    );
    expect(existsSync(target), "nothing is written").toBe(false);
    const applied = runCli(["--base", "samples/base", "--delta", "samples/delta", "--target", target], "apply-delta");
    expect(applied.status, applied.stderr).toBe(0);
    // The README's words for it.
    expect(readme).toContain("`--delta`: a directory, as the delta was published");
    expect(readme).not.toMatch(/`--base`, `--delta`: a local `\.safetensors` or `\.bin` file/);
  });
});
