/**
 * Hostile XOR payloads and .enc files: names that would write outside the
 * target or over a hidden file, truncated files, a pipe where a file should
 * be. Each is refused with exit 1 and one line naming the file, before any
 * output is written; nothing hangs.
 */
import { spawnSync } from "node:child_process";
import { cp, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { CODECS, encrypt, expected, finalFiles } from "../helpers/codecs.js";
import { runCli } from "../helpers/cli.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const KEY = join(CODECS, "enc/key/consolidated.00.pth");
const OA = join(CODECS, "xor");

let work: string;
let key: Uint8Array;
beforeAll(async () => {
  work = await makeTempDir();
  key = await readFile(KEY);
});

/** A delta folder holding one .enc file named `fileName`, whose plain text is `plain`. */
async function encDelta(label: string, fileName: (made: string) => string, plain = new TextEncoder().encode('{"a": 1}\n')): Promise<string> {
  const dir = join(work, label);
  await mkdir(dir, { recursive: true });
  const made = encrypt("x", plain, key);
  await writeFile(join(dir, fileName(made.name)), made.bytes);
  return dir;
}

function refusesWithOneLine(args: string[], rule: RegExp): void {
  const run = runCli(args, "apply-delta");
  expect(run.status).toBe(1);
  const lines = run.stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(lines[0]).toMatch(rule);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}

describe(".enc files whose names would write where they must not", () => {
  it("never reads an .enc file whose plain name would be '..' or hidden: its own name is hidden, so it is left alone", async () => {
    const delta = await encDelta("dotdot", (made) => made);
    const [good] = await readdir(delta) as [string];
    await cp(join(delta, good), join(delta, `..${good.slice(1)}`));
    await cp(join(delta, good), join(delta, `.delta-weights-job.json${good.slice(1)}`));
    const out = join(work, "dotdot-out");
    const result = await applyDelta({ base: KEY, delta, target: out });
    expect(Object.keys(result.files)).toEqual(["x"]);
    expect(await finalFiles(out)).toEqual(["x"]);
    expect((await readdir(delta)).sort()).toEqual([`..${good.slice(1)}`, `.delta-weights-job.json${good.slice(1)}`, good].sort());
  });

  it("refuses a name with a newline, and the error stays on one escaped line", async () => {
    const delta = await encDelta("newline", (made) => `evil\nname${made.slice(1)}`);
    refusesWithOneLine(["--base", KEY, "--delta", delta, "--target", join(work, "newline-out")], /evil\\nname.*is not a plain file name/);
  });

  it("refuses an .enc file shorter than its 32-byte header, naming it as truncated", async () => {
    const delta = await encDelta("truncated", (made) => made);
    const [name] = await readdir(delta) as [string];
    await writeFile(join(delta, name), (await readFile(join(delta, name))).subarray(0, 31));
    refusesWithOneLine(["--base", KEY, "--delta", delta, "--target", join(work, "truncated-out")], new RegExp(`${name.replace(/\./g, "\\.")} is 31 bytes, shorter than the 32-byte sha256 header of an \\.enc file: it is truncated`));
  });

  it("refuses a truncated body by its sha256, naming the file", async () => {
    const plain = new Uint8Array(200_000).map((_, i) => (i * 7) & 0xff);
    const delta = await encDelta("short-body", (made) => made, plain);
    const [name] = await readdir(delta) as [string];
    await writeFile(join(delta, name), (await readFile(join(delta, name))).subarray(0, 150_000));
    refusesWithOneLine(["--base", KEY, "--delta", delta, "--target", join(work, "short-body-out")], new RegExp(`${name.replace(/\./g, "\\.")} does not decrypt to the sha256 in its name and header`));
  });

  it("refuses an .enc file without the sha256 in its name: nothing could check it", async () => {
    const delta = await encDelta("no-hash", (made) => made);
    await writeFile(join(delta, "tokenizer.model.enc"), new Uint8Array(100));
    refusesWithOneLine(["--base", KEY, "--delta", delta, "--target", join(work, "no-hash-out")], /tokenizer\.model\.enc is not named <name>\.<64-hex sha256>\.enc/);
  });

  it("refuses two files that would both become the same output", async () => {
    const delta = await encDelta("twice", (made) => made);
    await writeFile(join(delta, "x"), "plain\n");
    refusesWithOneLine(["--base", KEY, "--delta", delta, "--target", join(work, "twice-out")], /holds x twice/);
  });

  it("decrypts a name near the file system's 255-byte limit, and accepts the hex in upper case", async () => {
    const long = "n".repeat(255 - 69);
    const delta = await encDelta("long", (made) => `${long}.${made.slice(2, 66).toUpperCase()}.enc`);
    const out = join(work, "long-out");
    await applyDelta({ base: KEY, delta, target: out });
    expect(await finalFiles(out)).toEqual([long]);
  });
});

describe("key and base files that are not what they should be", () => {
  it("refuses a key directory without consolidated.00.pth, and an empty key", async () => {
    refusesWithOneLine(["--base", work, "--delta", join(CODECS, "enc/enc"), "--target", join(work, "no-key-out")], /--base .* holds no consolidated\.00\.pth: .*pass that file \(or the directory holding it\) as --base/);
    await writeFile(join(work, "empty.pth"), "");
    refusesWithOneLine(["--base", join(work, "empty.pth"), "--delta", join(CODECS, "enc/enc"), "--target", join(work, "empty-key-out")], /the key .*empty\.pth is empty/);
  });

  it("refuses a pipe where a base file should be, without waiting on it", async () => {
    const base = join(work, "fifo-base");
    await cp(join(OA, "base"), base, { recursive: true });
    const fifo = join(base, "tokenizer.model");
    await rm(fifo);
    expect(spawnSync("sh", ["-c", 'mkfifo "$0"', fifo]).status).toBe(0);
    refusesWithOneLine(["--base", base, "--delta", join(OA, "payload"), "--target", join(work, "fifo-out")], /has no tokenizer\.model, which the payload's file of that name is XORed with/);
  });

  it("leaves out payload files in other folders (never writing them anywhere) and says so", async () => {
    const delta = join(work, "nested-payload");
    await cp(join(OA, "payload"), delta, { recursive: true });
    await mkdir(join(delta, "sub/dir"), { recursive: true });
    await writeFile(join(delta, "sub/dir/evil.bin"), new Uint8Array(64));
    const out = join(work, "nested-out");
    const result = await applyDelta({ base: join(OA, "base"), delta, target: out });
    expect(result.notes).toContainEqual("left out (not part of the model): sub/dir/evil.bin");
    expect(await finalFiles(out)).not.toContain("sub");
    expect(Object.keys(result.files).sort()).toEqual(Object.entries(expected.xor.files).filter(([, f]) => f.target !== null).map(([n]) => n).sort());
  });

  it("refuses a base that is a file for XOR payloads", async () => {
    refusesWithOneLine(["--base", join(OA, "base/config.json"), "--delta", join(OA, "payload"), "--target", join(work, "file-base-out")], /--base .*config\.json is not a directory: XOR payloads are decoded with the same-named files of a base model directory/);
  });
});
