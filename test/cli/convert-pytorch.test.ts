import { createHash } from "node:crypto";
import { cpSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const fixtures = fileURLToPath(new URL("../fixtures/pytorch-writer/", import.meta.url));
const expected = JSON.parse(readFileSync(join(fixtures, "expected.json"), "utf8")) as { files: Record<string, { sha256: string }>; sharded: { max_shard_size: number } };
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("delta-weights convert --format pytorch", () => {
  it("OUT.bin: torch.save's file, its sha256 printed", async () => {
    const dir = await makeTempDir();
    const run = runCli(["convert", join(fixtures, "mixed.bin"), join(dir, "mixed.bin")]);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(sha256(join(dir, "mixed.bin"))).toBe(expected.files["mixed.bin"]!.sha256);
    expect(run.stdout).toContain(`${expected.files["mixed.bin"]!.sha256}  mixed.bin`);
  });

  it("a directory with --format pytorch --max-shard-size: save_pretrained's shards and index", async () => {
    const dir = await makeTempDir();
    const out = join(dir, "model");
    const run = runCli(["convert", join(fixtures, "sharded"), out, "--format", "pytorch", "--max-shard-size", String(expected.sharded.max_shard_size)]);
    expect(run.status).toBe(0);
    for (const name of readdirSync(join(fixtures, "sharded"))) expect(sha256(join(out, name)), name).toBe(sha256(join(fixtures, "sharded", name)));
  });

  it("a contradicting --format is a usage error naming the file", async () => {
    const dir = await makeTempDir();
    const run = runCli(["convert", join(fixtures, "mixed.bin"), join(dir, "x.safetensors"), "--format", "pytorch"]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain("x.safetensors");
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("make-delta from a .bin release, apply-delta --format pytorch", () => {
  it("says the checkpoints were recorded, and gives back the release's files, verified", async () => {
    const dir = await makeTempDir();
    const release = join(dir, "release");
    cpSync(join(fixtures, "sharded"), release, { recursive: true });
    // The release as its own base (a delta of zeros): what is checked is the files' bytes.
    const made = runCli(["make", "--base", release, "--target", release, "--delta", join(dir, "delta")]);
    expect(made.stderr).toBe("");
    expect(made.status).toBe(0);
    expect(made.stdout).toMatch(/recorded the target's PyTorch checkpoints \(pytorch_model-00001-of-00002\.bin, pytorch_model-00002-of-00002\.bin\) in pytorch-checkpoints\.json/);
    const out = join(dir, "out");
    const applied = runCli(["apply", "--base", release, "--delta", join(dir, "delta"), "--target", out, "--format", "pytorch"]);
    expect(applied.status).toBe(0);
    expect(applied.stdout.split("\n")[0]).toBe("verified: every file and tensor is bit-identical to the publisher's (SHA-256)");
    for (const name of readdirSync(release)) expect(sha256(join(out, name)), name).toBe(sha256(join(release, name)));
  });
});
