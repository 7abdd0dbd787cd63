import { cp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { planXor, xorPayload } from "../../src/delta/byte-codecs/xor-payload.js";
import { CODECS, expected, finalFiles, fixtureList, recoverWith, sha256Of } from "../helpers/codecs.js";
import { runCli } from "../helpers/cli.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** Open-Assistant's layout (xor/) and Pygmalion's (xor-plain-json/: payload in xor_encoded_files/, JSON plain). */
const OA = join(CODECS, "xor");
const PYG = join(CODECS, "xor-plain-json");

let work: string;
beforeAll(async () => {
  work = await makeTempDir();
});

async function expectTargetFiles(out: string, targetDir: string, names: string[]): Promise<void> {
  expect(await finalFiles(out)).toEqual([...names].sort());
  for (const name of names) {
    expect(sha256Of(await readFile(join(out, name))), name).toBe(sha256Of(await readFile(join(targetDir, name))));
  }
}

const oaOutputs = Object.entries(expected.xor.files).filter(([, f]) => f.target !== null).map(([name]) => name);
const pygOutputs = Object.keys(expected["xor-plain-json"].files);

describe("Open-Assistant XOR payloads", () => {
  it("are recognised without a flag and recovered byte-identical: short and long base files, plain added_tokens.json, a base-only file left alone", async () => {
    const out = join(work, "oa");
    const result = await applyDelta({ base: join(OA, "base"), delta: join(OA, "payload"), target: out });
    expect(result.convention).toBe("xor");
    expect(result.reason).toBe("checkpoint files with no zip, pickle or safetensors header (pytorch_model-00001-of-00003.bin, and 2 more): XOR payloads (Open-Assistant / Pygmalion)");
    await expectTargetFiles(out, join(OA, "target"), oaOutputs);
    expect(oaOutputs).not.toContain("tokenizer.json");
    // No list: nothing the publisher gave checks these outputs.
    expect(result.verified).toBe(false);
    expect(result.unchecked.sort()).toEqual([...oaOutputs].sort());
    expect(result.notes).toContainEqual("payload: 9 files XORed with the base's same-named files, 1 copied as published (plain): added_tokens.json");
    // Without a list, each XORed checkpoint and JSON file is still checked as a file of its kind, and the note says how little that proves.
    expect(result.notes.join("\n")).toMatch(/^not verified: .* and 5 more only passed checks of their own structure \(torch\.save's zip CRC-32s, JSON syntax\), which a base of the same layout with other values also passes; compare them with the publisher's checksums \(--checksums FILE\)$/m);
  });

  it("without any list, still refuses a wrong base and a damaged payload by the files' own structure (zip CRC-32s, JSON syntax)", async () => {
    const out = join(work, "oa-wrong-base-no-list");
    await expect(applyDelta({ base: join(OA, "wrong-base"), delta: join(OA, "payload"), target: out }))
      .rejects.toThrow(/^recovered pytorch_model-00002-of-00003\.bin has a zip member "[^"]+" whose bytes fail the CRC-32 torch\.save recorded for them: either the payload file .*payload\/pytorch_model-00002-of-00003\.bin is damaged .* or the base's .*wrong-base\/pytorch_model-00002-of-00003\.bin is not the file it was XORed with/);
    expect(await finalFiles(out)).not.toContain("pytorch_model-00002-of-00003.bin");

    const payload = join(work, "oa-damaged-json");
    await cp(join(OA, "payload"), payload, { recursive: true });
    const config = await readFile(join(payload, "config.json"));
    config[3]! ^= 0x22;
    await writeFile(join(payload, "config.json"), config);
    await expect(applyDelta({ base: join(OA, "base"), delta: payload, target: join(work, "oa-damaged-json-out") }))
      .rejects.toThrow(/^recovered config\.json is not valid JSON: either the payload file .*oa-damaged-json\/config\.json is damaged/);
  });

  it("are checked against an md5sum list and a sha256sum list, and rerun keeps what is done", async () => {
    for (const list of ["md5sums-output.txt", "sha256sums-output.txt"]) {
      const out = join(work, `oa-${list}`);
      const result = await applyDelta({ base: join(OA, "base"), delta: join(OA, "payload"), target: out, checksums: join(OA, list) });
      expect(result.verified).toBe(true);
      expect(new Set(Object.values(result.files).map((f) => f.checkedAgainst))).toEqual(new Set(["the checksums list"]));
      await expectTargetFiles(out, join(OA, "target"), oaOutputs);
      const again = await applyDelta({ base: join(OA, "base"), delta: join(OA, "payload"), target: out, checksums: join(OA, list) });
      expect(Object.values(again.files).every((f) => f.status === "kept")).toBe(true);
    }
  });

  it("refuses a base of another conversion, naming the file, and writes nothing wrong; a rerun with the right base resumes", async () => {
    const out = join(work, "oa-wrong-base");
    const [wrong] = expected.xor.wrong_base.differs as [string];
    await expect(applyDelta({ base: join(OA, "wrong-base"), delta: join(OA, "payload"), target: out, checksums: join(OA, "md5sums-output.txt") }))
      .rejects.toThrow(new RegExp(`${wrong.replace(/\./g, "\\.")}.*does not match.*the base's .*wrong-base/${wrong.replace(/\./g, "\\.")} is not the file it was XORed with`));
    expect(await finalFiles(out)).not.toContain(wrong);
    const rerun = await applyDelta({ base: join(OA, "base"), delta: join(OA, "payload"), target: out, checksums: join(OA, "md5sums-output.txt") });
    expect(rerun.files[wrong]!.status).toBe("written");
    expect(Object.values(rerun.files).filter((f) => f.status === "kept").length).toBeGreaterThan(0);
    await expectTargetFiles(out, join(OA, "target"), oaOutputs);
  });

  it("says plainly that the base is the wrong conversion when the publisher listed the base's md5", async () => {
    const list = await fixtureList({ release: "fixture OA", outputs: "xor/md5sums-output.txt", base: "xor/md5sums-base.txt" });
    const out = join(work, "oa-wrong-base-listed");
    await expect(recoverWith((view) => planXor(view, [{ ...list, repos: ["fixtures/payload"] }]), join(OA, "wrong-base"), join(OA, "payload"), out))
      .rejects.toThrow(/^wrong base: .*wrong-base\/pytorch_model-00002-of-00003\.bin has md5 [0-9a-f]{32}, but the fixture list xor\/md5sums-output\.txt gives 843021501d6b27c7e31289348fe7e419 for the base's pytorch_model-00002-of-00003\.bin: your base is not the conversion/);
    expect(await finalFiles(out)).not.toContain("pytorch_model-00002-of-00003.bin");
  });

  it("checks the base files against a published base list while reading them, and the outputs against the published output list", async () => {
    const list = await fixtureList({ release: "fixture OA", outputs: "xor/md5sums-output.txt", base: "xor/md5sums-base.txt", repos: ["fixtures/payload"] });
    const out = join(work, "oa-listed");
    const { files, notes } = await recoverWith((view) => planXor(view, [list]), join(OA, "base"), join(OA, "payload"), out);
    expect([...files.values()].every((f) => f.checkedAgainst === "the fixture list xor/md5sums-output.txt")).toBe(true);
    expect(notes.join("\n")).toMatch(/published list: the fixture list .*picked by the delta's directory name \(payload.*9 base files XORed with are checked against its base list/);
    await expectTargetFiles(out, join(OA, "target"), oaOutputs);
  });

  it("names a damaged payload file (with the base list it can tell the base is right)", async () => {
    const payload = join(work, "oa-damaged-payload");
    await cp(join(OA, "payload"), payload, { recursive: true });
    const shard = join(payload, "pytorch_model-00003-of-00003.bin");
    const bytes = await readFile(shard);
    bytes[20_000]! ^= 0x40;
    await writeFile(shard, bytes);

    const out = join(work, "oa-damaged-out");
    await expect(applyDelta({ base: join(OA, "base"), delta: payload, target: out, checksums: join(OA, "md5sums-output.txt") }))
      .rejects.toThrow(/pytorch_model-00003-of-00003\.bin: its md5 .* does not match .*either the payload file .*oa-damaged-payload\/pytorch_model-00003-of-00003\.bin is damaged/);
    expect(await finalFiles(out)).not.toContain("pytorch_model-00003-of-00003.bin");

    const list = await fixtureList({ release: "fixture OA", outputs: "xor/md5sums-output.txt", base: "xor/md5sums-base.txt" });
    await expect(recoverWith((view) => planXor(view, [{ ...list, repos: ["x/oa-damaged-payload"] }]), join(OA, "base"), payload, join(work, "oa-damaged-out-2")))
      .rejects.toThrow(/matches the fixture list .*, so the payload file .*pytorch_model-00003-of-00003\.bin is damaged: download it again/);
  });

  it("refuses, before writing anything, a base that lacks a file the payload is XORed with", async () => {
    const base = join(work, "oa-base-without-tokenizer");
    await cp(join(OA, "base"), base, { recursive: true });
    await rm(join(base, "tokenizer.model"));
    const out = join(work, "oa-missing-out");
    await expect(applyDelta({ base, delta: join(OA, "payload"), target: out }))
      .rejects.toThrow(/the base .*oa-base-without-tokenizer has no tokenizer\.model, which the payload's file of that name is XORed with.*nothing was written/);
    expect(await finalFiles(out)).toEqual([]);
  });

  it("never XORs a file that already is plain of its kind, even when the base has one of that name", async () => {
    const base = join(work, "oa-base-with-added-tokens");
    await cp(join(OA, "base"), base, { recursive: true });
    await writeFile(join(base, "added_tokens.json"), '{"<pad>": 0}\n');
    const out = join(work, "oa-added-tokens-out");
    await applyDelta({ base, delta: join(OA, "payload"), target: out, checksums: join(OA, "sha256sums-output.txt") });
    await expectTargetFiles(out, join(OA, "target"), oaOutputs);
  });
});

describe("Pygmalion / Metharme XOR payloads (xor_encoded_files/, JSON in plain text)", () => {
  it("are recovered from the repository folder or from xor_encoded_files/ itself, JSON copied, and checked against a sha256 list", async () => {
    for (const delta of [join(PYG, "payload"), join(PYG, "payload/xor_encoded_files")]) {
      const out = join(work, `pyg-${delta.endsWith("files") ? "inner" : "outer"}`);
      const result = await applyDelta({ base: join(PYG, "base"), delta, target: out, checksums: join(PYG, "sha256sums-output.txt") });
      expect(result.convention).toBe("xor");
      expect(result.verified).toBe(true);
      await expectTargetFiles(out, join(PYG, "target"), pygOutputs);
      expect(result.notes[0]).toMatch(/^payload: 3 files XORed .*, 6 copied as published \(plain\): config\.json, /);
    }
  });

  it("checks the base against a sha256 base list", async () => {
    const list = await fixtureList({ release: "fixture Pygmalion", outputs: "xor-plain-json/sha256sums-output.txt", base: "xor-plain-json/sha256sums-base.txt", repos: ["x/payload"] });
    const out = join(work, "pyg-listed");
    const { notes } = await recoverWith((view) => planXor(view, [list]), join(PYG, "base"), join(PYG, "payload"), out);
    expect(notes.join("\n")).toMatch(/picked by the delta's directory name.*3 base files XORed with are checked/);
    await expectTargetFiles(out, join(PYG, "target"), pygOutputs);
  });
});

describe("which conventions claim byte payloads", () => {
  it("FastChat's and delta-weights' rules do not claim XOR payloads or .enc files; the XOR rule claims no plain checkpoint", async () => {
    const CONVENTIONS = await (await import("../../src/delta/conventions/registry.js")).loadConventions();
    const { LocalDeltaView } = await import("../../src/delta/conventions/view.js");
    const cases: [string, string, string | undefined][] = [
      [join(OA, "payload"), join(OA, "base"), "xor"],
      [join(PYG, "payload"), join(PYG, "base"), "xor"],
      [join(CODECS, "enc/enc"), join(CODECS, "enc/key/consolidated.00.pth"), "enc"],
      [join(CODECS, "../legacy/f16/delta-bin"), join(CODECS, "../legacy/f16/base-bin"), "fastchat-v0"],
      // The plain files: full weights with a grown vocabulary, which no rule claims (and apply refuses, listing why).
      [join(OA, "target"), join(OA, "base"), undefined],
    ];
    for (const [delta, base, want] of cases) {
      const view = new LocalDeltaView({ path: delta, source: delta }, { path: base, source: base });
      const fits = [];
      for (const c of CONVENTIONS) if ((await c.recognize(view)).fits) fits.push(c.name);
      await view.close();
      expect(fits[0], delta).toBe(want);
      expect(fits, delta).toEqual(want === undefined ? [] : [want]);
    }
    const view = new LocalDeltaView({ path: join(OA, "target"), source: "target" }, { path: join(OA, "base"), source: "base" });
    expect((await xorPayload.recognize(view)).reason).toBe("its checkpoints are plain checkpoints, not XOR payloads");
    await view.close();
  });
});

describe("apply-delta on XOR payloads (CLI)", () => {
  it("recognises them, writes byte-identical files and says what checked them", async () => {
    const out = join(work, "cli-oa");
    const run = runCli(["--base", join(OA, "base"), "--delta", join(OA, "payload"), "--target", out, "--checksums", join(OA, "md5sums-output.txt")], "apply-delta");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^verified against the checksum list: every output file matches it\n/);
    expect(run.stdout).toMatch(/convention: xor \(/);
    expect(run.stdout).toMatch(/wrote .*cli-oa: 10 files, 132\.4 KB\n/);
    await expectTargetFiles(out, join(OA, "target"), oaOutputs);
  });

  it("says unverified without a list, and which files a partial list leaves unchecked", async () => {
    const none = runCli(["--base", join(OA, "base"), "--delta", join(OA, "payload"), "--target", join(work, "cli-none")], "apply-delta");
    expect(none.status).toBe(0);
    expect(none.stdout).toMatch(/^unverified: nothing the publisher gave can check this result; pass --checksums FILE/);

    const partial = join(work, "partial-md5sums.txt");
    await writeFile(partial, (await readFile(join(OA, "md5sums-output.txt"), "utf8")).split("\n").filter((l) => !l.endsWith("added_tokens.json")).join("\n"));
    const some = runCli(["--base", join(OA, "base"), "--delta", join(OA, "payload"), "--target", join(work, "cli-partial"), "--checksums", partial], "apply-delta");
    expect(some.status).toBe(0);
    expect(some.stdout).toMatch(/^unverified: 1 output file not covered by any check \(added_tokens\.json\); the other 9 match the checksums list\n/);
  });

  it("refuses a wrong base and a damaged payload with exit 1 and one line naming the file", async () => {
    const wrong = runCli(["--base", join(OA, "wrong-base"), "--delta", join(OA, "payload"), "--target", join(work, "cli-wrong"), "--checksums", join(OA, "sha256sums-output.txt")], "apply-delta");
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/^error: recovered .*pytorch_model-00002-of-00003\.bin: .*wrong-base\/pytorch_model-00002-of-00003\.bin is not the file it was XORed with.*\n$/);
    expect(wrong.stderr.split("\n")).toHaveLength(2);
    const unlisted = runCli(["--base", join(OA, "wrong-base"), "--delta", join(OA, "payload"), "--target", join(work, "cli-wrong-unlisted")], "apply-delta");
    expect(unlisted.status).toBe(1);
    expect(unlisted.stderr).toMatch(/^error: recovered pytorch_model-00002-of-00003\.bin has a zip member .* fail the CRC-32 .*wrong-base\/pytorch_model-00002-of-00003\.bin is not the file it was XORed with.*\n$/);

    const forced = runCli(["--base", join(OA, "base"), "--delta", join(OA, "payload"), "--target", join(work, "cli-forced"), "--convention", "enc"], "apply-delta");
    expect(forced.status).toBe(1);
    expect(forced.stderr).toMatch(/^error: --convention enc does not fit .*: no <name>\.<sha256>\.enc files/);
    const xor = runCli(["--base", join(OA, "base"), "--delta", join(OA, "payload"), "--target", join(work, "cli-forced-xor"), "--convention", "xor", "--json"], "apply-delta");
    expect(xor.status).toBe(0);
    expect((JSON.parse(xor.stdout) as { convention: string }).convention).toBe("xor");
  });
});
