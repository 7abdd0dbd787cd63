/**
 * `delta-weights verify`: says which digest it compared (an md5sum list is
 * not SHA-256), and fails on a weight file beside the model that the list or
 * manifest does not name (a loader could load it instead).
 */
import { cp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { CODECS } from "../helpers/codecs.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const OA = join(CODECS, "xor");

let work: string;
let made: SmallDelta;
beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(join(work, "small"));
});

describe("verify", () => {
  it("names the digest it compared: MD5 for an md5sum list, SHA-256 for a sha256sum list", () => {
    const md5 = runCli(["verify", join(OA, "target"), "--checksums", join(OA, "md5sums-output.txt")]);
    expect(md5.stderr).toBe("");
    expect(md5.status).toBe(0);
    expect(md5.stdout).toMatch(/^verified: 10 files of .*target match their MD5\n$/);
    const sha = runCli(["verify", join(OA, "target"), "--checksums", join(OA, "sha256sums-output.txt")]);
    expect(sha.status).toBe(0);
    expect(sha.stdout).toMatch(/^verified: 10 files of .*target match their SHA-256\n$/);
    const json = runCli(["--json", "verify", join(OA, "target"), "--checksums", join(OA, "md5sums-output.txt")]);
    expect((JSON.parse(json.stdout) as { algorithm: string }).algorithm).toBe("md5");
  });

  it("fails on a weight file no checksum list names, naming it", async () => {
    const dir = join(work, "oa-extra");
    await cp(join(OA, "target"), dir, { recursive: true });
    await cp(join(OA, "target", "pytorch_model-00001-of-00003.bin"), join(dir, "pytorch_model.bin"));
    const run = runCli(["verify", dir, "--checksums", join(OA, "md5sums-output.txt")]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/^error: .*oa-extra\/pytorch_model\.bin is a weight file .*md5sums-output\.txt does not name: a loader could load it with the model/);
  });

  it("fails on a weight file or index delta.json does not name; other files beside the model are fine", async () => {
    const dir = join(work, "small-extra");
    await cp(made.target, dir, { recursive: true });
    await writeFile(join(dir, "notes.txt"), "not a weight\n");
    expect(runCli(["verify", dir, "--manifest", made.delta]).status).toBe(0);
    await writeFile(join(dir, "pytorch_model.bin.index.json"), JSON.stringify({ metadata: {}, weight_map: {} }) + "\n");
    const run = runCli(["verify", dir, "--manifest", made.delta]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/^error: .*small-extra\/pytorch_model\.bin\.index\.json is a weight file .*small\/delta\/delta\.json does not name/);
  });

  it("names the manifest it was given when that is not delta.json (a LoRA merge's record)", async () => {
    const dir = join(work, "lora-extra");
    const merged = join(work, "lora-merged");
    const apply = runCli(["--base", fileURLToPath(new URL("../fixtures/lora/base-f16", import.meta.url)), "--delta", fileURLToPath(new URL("../fixtures/lora/fp32-qlora", import.meta.url)), "--target", merged, "--no-progress"], "apply-delta");
    expect(apply.status, apply.stderr).toBe(0);
    await cp(merged, dir, { recursive: true });
    await cp(join(dir, "model-00001-of-00002.safetensors"), join(dir, "pytorch_model.bin"));
    const run = runCli(["verify", dir, "--manifest", join(dir, "delta-weights-merge.json")]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/lora-extra\/pytorch_model\.bin is a weight file .*lora-extra\/delta-weights-merge\.json does not name/);
  });
});
