/**
 * A clone made without git-lfs holds, instead of each large file, a pointer
 * of about 130 bytes of text. Such a file must be named as what it is, with
 * the command that fetches the real one, not reported as a corrupt weight
 * file or a truncated download.
 */
import { cp, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { isLfsPointer } from "../../src/formats/lfs-pointer.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 9976576152\n";
const LFS_RULE = /is a Git LFS pointer, not the file: run git lfs pull/;

let work: string;
let made: SmallDelta;

beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(work);
});

describe("Git LFS pointers instead of weight files", () => {
  it("recognises a pointer by its first line", () => {
    expect(isLfsPointer(new TextEncoder().encode(POINTER))).toBe(true);
    expect(isLfsPointer(new TextEncoder().encode("version 1\n"))).toBe(false);
  });

  it("names a model.safetensors that is a pointer", async () => {
    const dir = join(work, "st");
    await mkdir(dir);
    await writeFile(join(dir, "model.safetensors"), POINTER);
    const run = runCli(["inspect", dir]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(new RegExp(`${join(dir, "model.safetensors")} ${LFS_RULE.source}`));
  });

  it("names a pytorch_model.bin that is a pointer", async () => {
    const dir = join(work, "bin");
    await mkdir(dir);
    await writeFile(join(dir, "pytorch_model.bin"), POINTER);
    const run = runCli(["inspect", join(dir, "pytorch_model.bin")]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(LFS_RULE);
  });

  it("names a pointer among the shards an index lists (a base cloned without git-lfs)", async () => {
    const base = join(work, "sharded-base");
    await cp(made.target, base, { recursive: true });
    await writeFile(join(base, "model-00002-of-00002.safetensors"), POINTER);
    const run = runCli(["--base", base, "--delta", made.delta, "--target", join(work, "out-base")], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(new RegExp(`model-00002-of-00002\\.safetensors ${LFS_RULE.source}`));
  });

  it("names a delta shard that is a pointer, rather than calling it truncated", async () => {
    const delta = join(work, "pointer-delta");
    await cp(made.delta, delta, { recursive: true });
    await writeFile(join(delta, "model-00001-of-00002.safetensors"), POINTER);
    const run = runCli(["--base", made.base, "--delta", delta, "--target", join(work, "out-delta")], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(new RegExp(`delta file .*model-00001-of-00002\\.safetensors ${LFS_RULE.source}`));
  });
});
