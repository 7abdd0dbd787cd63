import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { describeIdentity, identifyModel } from "../../src/delta/identify.js";
import { runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** The two shards of LLaMA-7B's Hugging Face conversion, as Chinese-LLaMA-Alpaca's SHA256.md and the Pygmalion docs list them. */
const LLAMA_7B = ["0087155d6df07106c1d910bfeb6aab1be8e612dfbf2b56ddfb4ccbde7dbd50d0", "461bc5e50200db7813ff99cc0b9316c48ccbd6aaaa31bf8cf7bee0b64bc3eda3"];

/** A Hugging Face cache snapshot whose files link to blobs named by these digests (the layout huggingface_hub writes). */
async function cachedSnapshot(digests: string[]): Promise<string> {
  const repo = join(await makeTempDir(), "models--huggyllama--llama-7b");
  const snapshot = join(repo, "snapshots", "0".repeat(40));
  await mkdir(join(repo, "blobs"), { recursive: true });
  await mkdir(snapshot, { recursive: true });
  for (const [i, digest] of digests.entries()) {
    await writeFile(join(repo, "blobs", digest), "not read: the cache named it by its sha256 when it checked the download");
    await symlink(`../../blobs/${digest}`, join(snapshot, `pytorch_model-0000${i + 1}-of-0000${digests.length}.bin`));
  }
  return snapshot;
}

describe("identify: which known base a model is", () => {
  it("names LLaMA-7B's Hugging Face conversion from the cache's blob names, without hashing", async () => {
    const result = await identifyModel(await cachedSnapshot(LLAMA_7B));
    expect(result.model).toBe("LLaMA-7B (Hugging Face conversion)");
    expect(result.files.map((f) => f.digestFrom)).toEqual(["cache", "cache"]);
    expect(describeIdentity(result)).toMatch(/^base: LLaMA-7B \(Hugging Face conversion\), every weight file's SHA-256 as listed by Chinese-LLaMA-Alpaca SHA256\.md and the Pygmalion docs$/);
  });

  it("says when only some files match: a different conversion", async () => {
    const result = await identifyModel(await cachedSnapshot([LLAMA_7B[0]!, "1".repeat(64)]));
    expect(result.model).toBeUndefined();
    expect(describeIdentity(result)).toMatch(/1 of 2 weight files match a published conversion \(pytorch_model-00002-of-00002\.bin do not\)/);
  });

  it("hashes local files and says when none is known", async () => {
    const base = join(REPO_ROOT, "test/fixtures/conventions/base/bin");
    const result = await identifyModel(base);
    expect(result.files.map((f) => f.path)).toEqual(["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]);
    for (const f of result.files) {
      expect(f.digestFrom).toBe("hashed");
      expect(f.sha256).toBe(sha256Bytes(await readFile(join(base, f.path))));
    }
    expect(describeIdentity(result)).toMatch(/not a conversion this tool knows/);
  });

  it("is a CLI command, and a legacy apply reports the base it was given", async () => {
    const run = runCli(["identify", await cachedSnapshot(LLAMA_7B)]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^0087155d6df0\w+ {2}pytorch_model-00001-of-00002\.bin {2}LLaMA-7B, Hugging Face conversion \(transformers 4\.28\), shard 1 of 2$/m);
    const fixtures = join(REPO_ROOT, "test/fixtures/conventions");
    const apply = runCli(["--base", join(fixtures, "base/bin"), "--delta", join(fixtures, "fastchat/delta"), "--target", join(await makeTempDir(), "out")], "apply-delta");
    expect(apply.status, apply.stderr).toBe(0);
    expect(apply.stdout).toMatch(/^base: not a conversion this tool knows/m);
  });
});
