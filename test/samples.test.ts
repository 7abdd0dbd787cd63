import { spawnSync } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { sha256Bytes } from "./helpers/sha256.js";
import { runCli } from "./helpers/cli.js";
import { REPO_ROOT } from "./helpers/realdata.js";
import { makeTempDir } from "./helpers/temp-dir.js";

async function hashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const sub of ["base", "delta"]) {
    for (const name of (await readdir(join(dir, sub))).sort()) out[`${sub}/${name}`] = sha256Bytes(await readFile(join(dir, sub, name)));
  }
  return out;
}

describe("samples/", () => {
  it("is exactly what scripts/make-samples.mjs makes", async () => {
    const dir = await makeTempDir();
    const run = spawnSync(process.execPath, [join(REPO_ROOT, "scripts/make-samples.mjs"), dir], { encoding: "utf8" });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(await hashes(dir)).toEqual(await hashes(join(REPO_ROOT, "samples")));
  });

  it("applies to a verified, byte-exact model that carries config and tokenizer", async () => {
    const out = join(await makeTempDir(), "target");
    const run = runCli(["--base", "samples/base", "--delta", "samples/delta", "--target", out, "--json"], "apply-delta");
    expect(run.status).toBe(0);
    const result = JSON.parse(run.stdout) as { verified: boolean; kind: string; files: Record<string, unknown>; fixups: number };
    expect(result.verified).toBe(true);
    expect(result.kind).toBe("manifest");
    expect(Object.keys(result.files).sort()).toEqual(
      ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"],
    );
    expect(result.fixups).toBeGreaterThan(0);
    // The recovered config has the grown vocabulary, the base's does not.
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")) as { vocab_size: number };
    expect(config.vocab_size).toBe(513);
  });
});
