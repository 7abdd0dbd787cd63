/**
 * Inputs that do not belong together, given to the byte codecs and to the
 * checks around every convention: an output nothing verifies is never called
 * right, a failed run leaves nothing under a final name and no litter, a
 * published check is found however the delta is named, every option is
 * honoured or refused, a damaged download is named as one.
 */
import { cp, mkdir, readdir, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { JOB_FILE } from "../../src/io/output-guard.js";
import { CODECS, expected, finalFiles, sha256Of } from "../helpers/codecs.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeSmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const PYG = join(CODECS, "xor-plain-json");
const ENC = join(CODECS, "enc");
const CONVENTIONS = join(REPO_ROOT, "test/fixtures/conventions");
const BASE_BIN = join(CONVENTIONS, "base/bin");
const LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 115408\n";

let work: string;
beforeAll(async () => {
  work = await makeTempDir();
});

/** Every entry of a directory, hidden ones included (a missing directory has none). */
async function allEntries(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}

describe("an XOR payload on a base of the same layout with one value changed", () => {
  const [shard] = expected["xor-plain-json"].wrong_base_value.differs as [string];

  it("is never called right: the summary says unverified and that the structural checks cannot tell such a base", async () => {
    const out = join(work, "value-no-list");
    const run = runCli(["--base", join(PYG, "wrong-base-value"), "--delta", join(PYG, "payload"), "--target", out], "apply-delta");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    // The output is wrong (the fixture script decoded it with PyTorch and found the changed tensor), and passes every CRC-32.
    expect(sha256Of(await readFile(join(out, shard)))).toBe(expected["xor-plain-json"].wrong_base_value.decoded_sha256[shard]);
    expect(run.stdout).toMatch(/^unverified: nothing the publisher gave can check this result; pass --checksums FILE/);
    expect(run.stdout).not.toMatch(/sound|correct|bit-identical/);
    expect(run.stdout).toMatch(/^not verified: .*only passed checks of their own structure \(torch\.save's zip CRC-32s, JSON syntax\), which a base of the same layout with other values also passes; compare them with the publisher's checksums \(--checksums FILE\)$/m);
  });

  it("is refused against the publisher's list, naming the shard", async () => {
    const out = join(work, "value-list");
    const run = runCli(["--base", join(PYG, "wrong-base-value"), "--delta", join(PYG, "payload"), "--target", out, "--checksums", join(PYG, "sha256sums-output.txt")], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(new RegExp(`^error: recovered .*${shard.replace(/\./g, "\\.")}: its sha256 .* does not match`));
    expect(await finalFiles(out)).not.toContain(shard);
  });

  it("leaves no unverified output under a final name when a later file fails its check, and the error's 'nothing wrong was written' holds", async () => {
    // Files are made smallest first: the wrong (CRC-passing) shard 2 before shard 1, whose payload is damaged.
    const payload = join(work, "value-damaged-payload");
    await cp(join(PYG, "payload"), payload, { recursive: true });
    const later = join(payload, "xor_encoded_files", "pytorch_model-00001-of-00002.bin");
    const bytes = await readFile(later);
    bytes[bytes.length >> 1]! ^= 0x5a;
    await writeFile(later, bytes);
    const out = join(work, "value-later-fails");
    const run = runCli(["--base", join(PYG, "wrong-base-value"), "--delta", payload, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/^error: recovered pytorch_model-00001-of-00002\.bin .*nothing wrong was written$/);
    // Not the wrong shard 2, nor the JSON and tokenizer files no digest checked: nothing at all, not even the job record.
    expect(await allEntries(out)).toEqual([]);
  });
});

describe("a failed run leaves no litter", () => {
  it(".enc with the wrong key: no output, no job record, and no target directory it created", async () => {
    const key = join(work, "wrong-key.pth");
    await writeFile(key, Buffer.alloc(4096, 7));
    const out = join(work, "enc-wrong-key");
    const run = runCli(["--base", key, "--delta", join(ENC, "enc"), "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/does not decrypt to the sha256 in its name and header/);
    expect(await allEntries(out)).toEqual([]);

    // A target that existed stays, empty as it was.
    const existing = join(work, "enc-wrong-key-existing");
    await mkdir(existing);
    expect(runCli(["--base", key, "--delta", join(ENC, "enc"), "--target", existing], "apply-delta").status).toBe(1);
    expect(await readdir(existing)).toEqual([]);
  });

  it("keeps the job record only for verified outputs a rerun needs, naming exactly those", async () => {
    // One damaged .enc among good ones: the good outputs match their headers and stay; the record names them.
    const delta = join(work, "enc-one-damaged");
    await cp(join(ENC, "enc"), delta, { recursive: true });
    const { file } = expected.enc.bad["flipped-byte"];
    await cp(join(ENC, "bad", "flipped-byte", file), join(delta, file));
    const out = join(work, "enc-one-damaged-out");
    const run = runCli(["--base", join(ENC, "key"), "--delta", delta, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    const present = await finalFiles(out);
    expect(present).not.toContain("pytorch_model-00002-of-00003.bin");
    expect(present.length).toBeGreaterThan(0);
    const record = JSON.parse(await readFile(join(out, JOB_FILE), "utf8")) as { written: string[] };
    expect([...record.written].sort()).toEqual(present);
    expect(await allEntries(out)).toEqual([JOB_FILE, ...present].sort());
  });
});

describe("Alpaca's published integrity sum", () => {
  // The fixture diff is not Stanford's: their constant must fail it, wherever the repo's name is read from.
  for (const [how, dir] of [
    ["its Hugging Face cache snapshot", "hub/models--tatsu-lab--alpaca-7b-wdiff/snapshots/0123456789abcdef0123456789abcdef01234567"],
    ["a clone's folder", "clone/alpaca-7b-wdiff"],
  ] as const) {
    it(`is checked when the repo is given as ${how}`, async () => {
      const delta = join(work, "alpaca-named", dir);
      await cp(join(CONVENTIONS, "alpaca/delta"), delta, { recursive: true });
      const out = join(work, "alpaca-named-out", how.replace(/\W+/g, "-"));
      await expect(applyDelta({ base: BASE_BIN, delta, target: out }))
        .rejects.toThrow(/^the recovered model sums to [-\d.e+]+, Stanford Alpaca's published sum \(weight_diff\.py; picked by the delta's (Hugging Face cache folder|directory name) .*\) says 50637\.1836 \(tolerance 0\.01\)/);
      expect(await allEntries(out)).toEqual([]);
    });
  }
});

describe("options a convention does not take are refused, never ignored", () => {
  const cases = [
    ["xor", ["--base", join(PYG, "base"), "--delta", join(PYG, "payload")]],
    ["enc", ["--base", join(ENC, "key"), "--delta", join(ENC, "enc")]],
    ["fastchat", ["--base", BASE_BIN, "--delta", join(CONVENTIONS, "fastchat/delta")]],
  ] as const;
  for (const [convention, inputs] of cases) {
    it(`--expect-sum on a ${convention} delta: exit 2, one line naming the convention and the option, nothing written`, async () => {
      const out = join(work, `expect-sum-${convention}`);
      const run = runCli([...inputs, "--target", out, "--expect-sum", "50637.1836"], "apply-delta");
      expect(run.status).toBe(2);
      expect(oneErrorLine(run)).toMatch(new RegExp(`^error: --expect-sum does not apply to the ${convention} convention this delta follows \\(--expect-sum is Alpaca's integrity sum of the recovered float32 tensors\\); it takes --checksums: leave --expect-sum out$`));
      expect(await allEntries(out)).toEqual([]);
    });
  }

  it("the same for a delta-weights delta (once refused another way)", async () => {
    const made = await makeSmallDelta(join(work, "small-delta"));
    const run = runCli(["--base", made.base, "--delta", made.delta, "--target", join(work, "expect-sum-dw"), "--expect-sum", "1"], "apply-delta");
    expect(run.status).toBe(2);
    expect(oneErrorLine(run)).toMatch(/^error: --expect-sum does not apply to the delta-weights convention this delta follows/);
  });
});

describe("a damaged download of the delta", () => {
  for (const [what, damage, message] of [
    ["a 0-byte shard", (path: string) => truncate(path, 0), /is empty \(0 bytes\): a failed or interrupted download; download it again/],
    ["a Git LFS pointer in place of a shard", (path: string) => writeFile(path, LFS_POINTER), /is a Git LFS pointer, not the file: run git lfs pull/],
  ] as const) {
    it(`${what} is named as such before any convention, and nothing is written`, async () => {
      const delta = join(work, `damaged-${what.replace(/\W+/g, "-")}`);
      await cp(join(CONVENTIONS, "fastchat/delta"), delta, { recursive: true });
      await damage(join(delta, "pytorch_model-00002-of-00003.bin"));
      const out = join(work, `damaged-out-${what.replace(/\W+/g, "-")}`);
      const run = runCli(["--base", BASE_BIN, "--delta", delta, "--target", out], "apply-delta");
      expect(run.status).toBe(1);
      expect(oneErrorLine(run)).toMatch(new RegExp(`^error: delta file .*pytorch_model-00002-of-00003\\.bin ${message.source}`));
      expect(await allEntries(out)).toEqual([]);
    });
  }

  it("a Git LFS pointer in an XOR payload's base is named as such, not blamed on the payload", async () => {
    const base = join(work, "pyg-base-lfs");
    await cp(join(PYG, "base"), base, { recursive: true });
    await writeFile(join(base, "pytorch_model-00001-of-00002.bin"), LFS_POINTER);
    const out = join(work, "pyg-base-lfs-out");
    const run = runCli(["--base", base, "--delta", join(PYG, "payload"), "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/^error: the base's .*pyg-base-lfs\/pytorch_model-00001-of-00002\.bin is a Git LFS pointer, not the file: run git lfs pull/);
    expect(await allEntries(out)).toEqual([]);
  });

  it("a rerun after an earlier failed run leaves exactly the files a clean run leaves", async () => {
    const clean = join(work, "rerun-clean");
    await applyDelta({ base: BASE_BIN, delta: join(CONVENTIONS, "fastchat/delta"), target: clean });
    // What an earlier version left after taking a damaged delta for an XOR payload: raw delta files
    // copied under final names, and its job record naming them.
    const out = join(work, "rerun-stale");
    await mkdir(out);
    const stale = ["pytorch_model-00001-of-00003.bin", "pytorch_model.bin.index.json"];
    for (const name of stale) await cp(join(CONVENTIONS, "fastchat/delta", name), join(out, name));
    await writeFile(join(out, JOB_FILE), JSON.stringify({ command: "apply-delta", written: stale }) + "\n");
    // A file of the user's beside them is not the tool's to remove (--force writes beside it).
    await writeFile(join(out, "notes.txt"), "mine\n");
    const run = runCli(["--base", BASE_BIN, "--delta", join(CONVENTIONS, "fastchat/delta"), "--target", out, "--force"], "apply-delta");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(await allEntries(out)).toEqual([...await allEntries(clean), "notes.txt"].sort());
  });
});
