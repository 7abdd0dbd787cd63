import { cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { planEnc } from "../../src/delta/byte-codecs/enc.js";
import { findPublishedList } from "../../src/delta/byte-codecs/published-lists.js";
import { CODECS, encrypt, expected, finalFiles, fixtureList, keyIndex, recoverWith, sha256Of, stream } from "../helpers/codecs.js";
import { runCli } from "../helpers/cli.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const ENC = join(CODECS, "enc");
const KEY = join(ENC, "key/consolidated.00.pth");
const plainNames = Object.keys(expected.enc.files);

let work: string;
beforeAll(async () => {
  work = await makeTempDir();
});

async function expectPlainFiles(out: string): Promise<void> {
  expect(await finalFiles(out)).toEqual([...plainNames].sort());
  for (const name of plainNames) expect(sha256Of(await readFile(join(out, name))), name).toBe(expected.enc.files[name]!.plain.sha256);
}

/** The fixture lists as point-alpaca printed its own: md5 of the outputs and of the .enc files, the shards' sha256 from their names. */
const encList = () => fixtureList({
  release: "fixture point-alpaca",
  outputs: "enc/md5sums-plain.txt",
  payload: "enc/md5sums-enc.txt",
  fingerprints: Object.fromEntries(Object.entries(expected.enc.files).filter(([name]) => name.startsWith("pytorch_model-")).map(([name, f]) => [name, f.plain.sha256])),
});

describe("point-alpaca .enc files", () => {
  it("are recognised without a flag and decrypted byte-identical, each checked against its own sha256; files longer than the key tile it", async () => {
    expect(Object.values(expected.enc.files).filter((f) => f.longer_than_key)).toHaveLength(2);
    const out = join(work, "enc");
    const result = await applyDelta({ base: KEY, delta: join(ENC, "enc"), target: out });
    expect(result.convention).toBe("enc");
    expect(result.verified).toBe(true);
    expect(new Set(Object.values(result.files).map((f) => f.checkedAgainst))).toEqual(new Set(["its .enc header (SHA-256)"]));
    await expectPlainFiles(out);
    expect(result.notes.join("\n")).toMatch(/key: .*consolidated\.00\.pth is not Meta's LLaMA-7B consolidated\.00\.pth \(123,457 bytes; Meta's has 13,476,939,516 bytes\).*each file's own sha256 decides/);

    const again = await applyDelta({ base: KEY, delta: join(ENC, "enc"), target: out });
    expect(Object.values(again.files).every((f) => f.status === "kept")).toBe(true);
  });

  it("take the key's directory as --base, and are checked against an md5sum list too", async () => {
    const out = join(work, "enc-md5");
    const run = runCli(["--base", join(ENC, "key"), "--delta", join(ENC, "enc"), "--target", out, "--checksums", join(ENC, "md5sums-plain.txt")], "apply-delta");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^verified: every output file matches its \.enc header \(SHA-256\) and the checksums list\n/);
    expect(run.stdout).toMatch(/\nwrote .*enc-md5: 12 files, 468\.5 KB\n/);
    await expectPlainFiles(out);
  });

  it("refuse a damaged file, naming it and saying whether the key is the known one; nothing wrong gets a name", async () => {
    const out = join(work, "enc-flipped");
    const bad = expected.enc.bad["flipped-byte"];
    const run = runCli(["--base", KEY, "--delta", join(ENC, "bad/flipped-byte"), "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(run.stderr.split("\n")).toHaveLength(2);
    expect(run.stderr).toContain(`error: ${join(ENC, "bad/flipped-byte", bad.file)} does not decrypt to the sha256 in its name and header`);
    expect(run.stderr).toContain(`its sha256 ${bad.decrypted_sha256} does not match`);
    expect(run.stderr).toMatch(/the key .*consolidated\.00\.pth is not Meta's LLaMA-7B consolidated\.00\.pth \(123,457 bytes.*either it is not the key this file was made with, or the \.enc file is damaged/);
    expect(await finalFiles(out)).toEqual([]);
  });

  it("refuse, before writing anything, a file whose name and header disagree", async () => {
    const dir = join(work, "enc-some-renamed");
    await cp(join(ENC, "enc"), dir, { recursive: true });
    const bad = expected.enc.bad["name-mismatch"];
    await cp(join(ENC, "bad/name-mismatch", bad.file), join(dir, bad.file));
    await rm(join(dir, expected.enc.files["config.json"]!.enc_name));
    const out = join(work, "enc-renamed-out");
    await expect(applyDelta({ base: KEY, delta: dir, target: out }))
      .rejects.toThrow(`${join(dir, bad.file)}: its name says sha256 ${bad.name_sha256}, its header says ${bad.header_sha256}: the file was renamed or damaged`);
    expect(await finalFiles(out)).toEqual([]);
  });

  it("pick a published list by a shard's sha256 in its name, and name a damaged download by the list's md5 of the .enc file", async () => {
    const list = await encList();
    const out = join(work, "enc-listed");
    const { files, notes } = await recoverWith((view) => planEnc(view, [list]), KEY, join(ENC, "enc"), out);
    expect(notes.join("\n")).toMatch(/published list: the fixture list enc\/md5sums-plain\.txt \(fixture point-alpaca; picked by the sha256 of pytorch_model-0000\d-of-00003\.bin in its \.enc file's name\)/);
    expect([...files.values()].every((f) => f.checkedAgainst === "its .enc header (SHA-256), as fixture point-alpaca's published file list names it")).toBe(true);
    await expectPlainFiles(out);

    const bad = expected.enc.bad["flipped-byte"];
    await expect(recoverWith((view) => planEnc(view, [list]), KEY, join(ENC, "bad/flipped-byte"), join(work, "enc-listed-bad")))
      .rejects.toThrow(new RegExp(`${bad.file.replace(/\./g, "\\.")} is damaged: its md5 is [0-9a-f]{32}, the fixture list enc/md5sums-plain\\.txt lists [0-9a-f]{32}; download it again`));
  });

  it("are not taken for point-alpaca's release because one small file is byte-identical to point-alpaca's", () => {
    // The fixture's generation_config.json is point-alpaca's own (same name, same sha256);
    // only a weight file's sha256 names the release.
    const sha256 = new Map(Object.entries(expected.enc.files).map(([name, f]) => [name, f.plain.sha256]));
    expect(sha256.get("generation_config.json")).toBe("c5c8961ed243834883fb4e45e8850d3873d6100fde97817f59d275a90eba269d");
    expect(findPublishedList({ dirs: [join(ENC, "enc")], sha256 })).toBeUndefined();
    expect(findPublishedList({ dirs: ["/x/encrypted"], sha256: new Map([["pytorch_model-00002-of-00003.bin", "f3c10a4f5c8beafc6667d34557b64ba479e4dde6ef10672287857b329b7e3229"]]) })?.list.release).toBe("point-alpaca 7B");
  });
});

describe("the .enc key stream (expected.json keystream_vectors, made at test time)", () => {
  const { vectors, key_label: keyLabel, plain_label: plainLabel } = expected.keystream_vectors;
  let keyAll: Uint8Array;
  let plainAll: Uint8Array;
  beforeAll(() => {
    keyAll = stream(keyLabel, Math.max(...vectors.map((v) => v.key_size)));
    plainAll = stream(plainLabel, Math.max(...vectors.map((v) => v.plain_size)));
  });

  for (const [i, v] of vectors.entries()) {
    it(`${v.what} (key ${v.key_size} bytes, plain ${v.plain_size})`, async () => {
      const key = keyAll.subarray(0, v.key_size), plain = plainAll.subarray(0, v.plain_size);
      expect(sha256Of(key)).toBe(v.key_sha256);
      expect(sha256Of(plain)).toBe(v.plain_sha256);
      for (const [offset, keyOffset] of v.plain_offset_to_key_offset) expect(keyIndex(offset, v.key_size), `plain byte ${offset}`).toBe(keyOffset);
      const made = encrypt("payload.bin", plain, key);
      // The test's own encryptor agrees with point-alpaca's encrypt.py on these vectors...
      expect(made.name).toBe(v.enc_name);
      expect(sha256Of(made.bytes)).toBe(v.enc_sha256);
      const dir = join(work, `vector-${i}`);
      await mkdir(join(dir, "enc"), { recursive: true });
      await writeFile(join(dir, "key.pth"), key);
      await writeFile(join(dir, "enc", made.name), made.bytes);
      // ...and apply-delta restores the plain file from it, streaming.
      const result = await applyDelta({ base: join(dir, "key.pth"), delta: join(dir, "enc"), target: join(dir, "out") });
      expect(result.files["payload.bin"]).toMatchObject({ size: v.plain_size, sha256: v.plain_sha256, status: "written" });
    });
  }
});
