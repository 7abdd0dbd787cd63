import { cp, readdir, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { TINY_LLAMA, convert, finetune, readAll, writeModel } from "../helpers/finetune.js";
import { runCli } from "../helpers/cli.js";
import { REALDATA, hasRealdata } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

let work: string;
let target: string;
let delta: string;

beforeAll(async () => {
  if (!hasRealdata) return;
  work = await makeTempDir();
  target = join(work, "target");
  delta = join(work, "delta");
  await writeModel(target, finetune(await readAll(TINY_LLAMA), { seed: 3, scale: 0.03 }), { maxShardBytes: 200_000 });
  await makeDelta({ base: TINY_LLAMA, target, delta });
});

/** One `error:` line, no stack trace. */
function expectOneLineError(stderr: string): string {
  const lines = stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

async function finalFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => !f.startsWith("."));
  } catch {
    return [];
  }
}

describe.skipIf(!hasRealdata)("apply-delta refuses bad input, names it, and writes nothing wrong", () => {
  it("refuses a wrong base, naming the tensor and what the delta expects", async () => {
    const wrong = join(work, "wrong-base");
    await writeModel(wrong, finetune(await readAll(TINY_LLAMA), { seed: 11, scale: 1e-3 }), { metadata: null });
    const out = join(work, "out-wrong-base");
    const run = runCli(["--base", wrong, "--delta", delta, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    const line = expectOneLineError(run.stderr);
    expect(line).toMatch(/wrong base: tensor "[^"]+"/);
    expect(line).toMatch(/BF16 \[\d+(,\d+)*\] with sha256 [0-9a-f]{12}/);
    expect(line).toContain("tiny-llama-bf16");
    expect(await finalFiles(out)).toEqual([]);
  });

  it("refuses a base whose tensors have other shapes", async () => {
    const out = join(work, "out-qwen");
    const run = runCli(["--base", join(REALDATA, "tiny-qwen2-bf16/model.safetensors"), "--delta", delta, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(expectOneLineError(run.stderr)).toMatch(/wrong base: tensor "[^"]+" .* (is missing|has shape)/);
  });

  it("accepts an F32 copy of the right base", async () => {
    const f32 = join(work, "base-f32");
    await writeModel(f32, (await readAll(TINY_LLAMA)).map((t) => convert(t, "F32")));
    const out = join(work, "out-f32");
    const run = runCli(["--base", f32, "--delta", delta, "--target", out], "apply-delta");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^verified/);
    for (const f of await finalFiles(target)) {
      expect(sha256Bytes(await readFile(join(out, f))), f).toBe(sha256Bytes(await readFile(join(target, f))));
    }
  });

  it("refuses a corrupted delta file, naming it", async () => {
    const bad = join(work, "delta-corrupt");
    await cp(delta, bad, { recursive: true });
    const shard = join(bad, "model-00002-of-00002.safetensors");
    const bytes = await readFile(shard);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0x40;
    await writeFile(shard, bytes);
    const out = join(work, "out-corrupt");
    const run = runCli(["--base", TINY_LLAMA, "--delta", bad, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(expectOneLineError(run.stderr)).toMatch(/model-00002-of-00002\.safetensors.*corrupted/);
    // Files finished before the damage was found are verified and kept; the damaged one is not there.
    const left = await finalFiles(out);
    expect(left).not.toContain("model-00002-of-00002.safetensors");
    for (const f of left) expect(sha256Bytes(await readFile(join(out, f))), f).toBe(sha256Bytes(await readFile(join(target, f))));
  });

  it("refuses a truncated delta file, naming it", async () => {
    const bad = join(work, "delta-truncated");
    await cp(delta, bad, { recursive: true });
    const shard = join(bad, "model-00001-of-00002.safetensors");
    await truncate(shard, 1000);
    const run = runCli(["--base", TINY_LLAMA, "--delta", bad, "--target", join(work, "out-truncated")], "apply-delta");
    expect(run.status).toBe(1);
    expect(expectOneLineError(run.stderr)).toMatch(/model-00001-of-00002\.safetensors is 1000 bytes.*truncated/);
  });

  it("refuses a damaged delta.json", async () => {
    const bad = join(work, "delta-bad-manifest");
    await cp(delta, bad, { recursive: true });
    await writeFile(join(bad, "delta.json"), (await readFile(join(bad, "delta.json"), "utf8")).slice(0, 500));
    const run = runCli(["--base", TINY_LLAMA, "--delta", bad, "--target", join(work, "out-bad-manifest")], "apply-delta");
    expect(run.status).toBe(1);
    expect(expectOneLineError(run.stderr)).toMatch(/delta\.json: not valid JSON/);
  });

  it("refuses a target inside the base", async () => {
    const base = join(work, "base-copy");
    await writeModel(base, await readAll(TINY_LLAMA), { metadata: null });
    const run = runCli(["--base", base, "--delta", delta, "--target", join(base, "out")], "apply-delta");
    expect(run.status).toBe(1);
    expect(expectOneLineError(run.stderr)).toMatch(/is, or is inside, the base/);
    expect(await finalFiles(join(base, "out"))).toEqual([]);
  });

  it("refuses a target that is the delta", async () => {
    const run = runCli(["--base", TINY_LLAMA, "--delta", delta, "--target", delta], "apply-delta");
    expect(run.status).toBe(1);
    expect(expectOneLineError(run.stderr)).toMatch(/is, or is inside, the delta/);
  });

  it("takes FastChat's flag names", async () => {
    const out = join(work, "out-aliases");
    const run = runCli(["--base-model-path", TINY_LLAMA, "--delta-path", delta, "--target-model-path", out], "apply-delta");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^verified/);
  });

  it("is a usage error (exit 2) without --target", () => {
    const run = runCli(["--base", TINY_LLAMA, "--delta", delta], "apply-delta");
    expect(run.status).toBe(2);
    expect(expectOneLineError(run.stderr)).toMatch(/--target/);
  });
});

describe.skipIf(!hasRealdata)("verify", () => {
  it("re-checks a recovered model and names a damaged file and tensor", async () => {
    const out = join(work, "out-verify");
    expect(runCli(["--base", TINY_LLAMA, "--delta", delta, "--target", out], "apply-delta").status).toBe(0);
    const ok = runCli(["verify", out, "--manifest", delta]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^verified: \d+ files/);

    const shard = join(out, "model-00001-of-00002.safetensors");
    const bytes = await readFile(shard);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 1;
    await writeFile(shard, bytes);
    const bad = runCli(["verify", out, "--manifest", join(delta, "delta.json")]);
    expect(bad.status).toBe(1);
    expect(expectOneLineError(bad.stderr)).toMatch(/model-00001-of-00002\.safetensors has sha256 .* tensor "[^"]+" differs/);
  });
});
