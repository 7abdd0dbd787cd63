/**
 * A delta comes from the network: its delta.json names the files that are
 * joined onto the delta and target directories, and its files may be links.
 * Each test is named after the attack; the outcome is always a refusal (or
 * a plain name treated as a name), with nothing read from outside the delta
 * directory, nothing named there in the error, and nothing written outside
 * the target.
 */
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { cp, mkdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { verifyModel } from "../../src/delta/own/verify-model.js";
import { DeltaWeightsError } from "../../src/errors.js";
import { listRegularFiles } from "../../src/io/files.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { readAll, writeModel } from "../helpers/finetune.js";
import { editedDelta, makeSmallDelta, renameKey, setOwn, smallTensors, type ManifestJson, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

let work: string;
let made: SmallDelta;
/** A directory beside the delta holding what an attacker would like read: its bytes must never reach a target. */
let outside: string;
const SECRET = '{"secret": "hunter2-canary"}\n';

beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(work);
  outside = join(work, "outside");
  await mkdir(outside);
  await writeFile(join(outside, "secret.json"), SECRET);
  await writeFile(join(outside, "config.json"), SECRET);
});

/** Every file under `dir` with its size and mtime, to see that nothing changed. */
function snapshot(dir: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (path === skip) continue;
      const info = lstatSync(path);
      if (info.isDirectory()) walk(path);
      else out.set(relative(dir, path), `${info.size}:${info.mtimeMs}`);
    }
  };
  walk(dir);
  return out;
}

/** Whether any file under `dir` holds the secret's bytes. */
function holdsSecret(dir: string): boolean {
  if (!existsSync(dir)) return false;
  const walk = (d: string): boolean => readdirSync(d).some((name) => {
    const path = join(d, name);
    const info = statSync(path);
    return info.isDirectory() ? walk(path) : readFileSync(path, "utf8").includes("hunter2-canary");
  });
  return walk(dir);
}

let cases = 0;

/**
 * Applies `delta` into a fresh target: refused with one of our errors on one
 * line, or done; either way naming nothing outside the delta, writing
 * nothing outside the target, and reading no secret into it.
 */
async function expectContained(delta: string): Promise<void> {
  const target = join(work, `target-${++cases}`);
  const before = snapshot(work, target);
  const err = await applyDelta({ base: made.base, delta, target }).then(() => undefined, (e: unknown) => e);
  if (err !== undefined) {
    expect(err).toBeInstanceOf(DeltaWeightsError);
    // eslint-disable-next-line no-control-regex
    expect((err as Error).message).not.toMatch(/[\n\r\u001b\u2028\u009b]/);
    expect((err as Error).message).not.toContain(outside);
  }
  expect(snapshot(work, target)).toEqual(before);
  expect(holdsSecret(target)).toBe(false);
}

/**
 * Applies `delta` into a fresh target; it must be refused with one of our
 * errors, on one line, naming nothing outside the delta, with nothing
 * written outside the target and no secret in it.
 */
async function expectRefused(delta: string, rule?: RegExp): Promise<string> {
  const target = join(work, `target-${++cases}`);
  const before = snapshot(work, target);
  const err = await applyDelta({ base: made.base, delta, target }).then(() => undefined, (e: unknown) => e);
  expect(err, `${delta} was applied`).toBeInstanceOf(DeltaWeightsError);
  const message = (err as Error).message;
  // eslint-disable-next-line no-control-regex
  expect(message).not.toMatch(/[\n\r\u0000\u001b\u007f\u2028]/);
  expect(message).not.toContain(outside);
  expect(message).not.toContain("hunter2");
  if (rule !== undefined) expect(message).toMatch(rule);
  expect(snapshot(work, target)).toEqual(before);
  expect(holdsSecret(target)).toBe(false);
  return message;
}

const SHARD = "model-00001-of-00002.safetensors";

/** Where a name from delta.json goes: each is the hostile name put in one place of the manifest. */
const PLACES: Record<string, (m: ManifestJson, name: string) => void> = {
  "a delta file": (m, name) => {
    renameKey(m.delta.files, "config.json", name);
    renameKey(m.target.files, "config.json", name);
  },
  "the fix-ups file": (m, name) => {
    setOwn(m.delta.files, name, m.delta.files[m.delta.fixups!]);
    m.delta.fixups = name;
  },
  "a weight file": (m, name) => {
    for (const table of [m.delta.files, m.target.files, m.target.headers] as Record<string, unknown>[]) renameKey(table, SHARD, name);
    m.delta.weights = m.delta.weights.map((w) => (w === SHARD ? name : w));
    for (const t of Object.values(m.target.tensors)) if (t.file === SHARD) t.file = name;
  },
  "a tensor's file": (m, name) => {
    Object.values(m.target.tensors)[0]!.file = name;
  },
  "a tensor's name": (m, name) => {
    renameKey(m.target.tensors, "embed.weight", name);
    renameKey(m.base.tensors, "embed.weight", name);
  },
  "the index file": (m, name) => {
    setOwn(m.target.files, name, m.target.files[m.target.index!.file]);
    m.target.index!.file = name;
  },
  "a header's file": (m, name) => {
    setOwn(m.target.files, name, { size: 16, sha256: "0".repeat(64) });
    setOwn(m.target.headers, name, "{}");
  },
};

const ESCAPING_NAMES = [
  "../../../../../../etc/passwd",
  "../outside/secret.json",
  "../../outside/config.json",
  "/etc/passwd",
  `/${"outside"}/secret.json`,
  "file:///etc/passwd",
  "..\\outside\\secret.json",
  "C:\\Windows\\win.ini",
  "sub/../../outside/secret.json",
  "./config.json",
  "config.json/",
  "",
  "a\u0000b",
  "a\u001b[2Jb",
  "a\rb",
  "a\nb",
  "a\u007fb",
];

/** Names that are plain names inside the directory, however odd: each may be refused (as missing) or used as a name, never more. */
const PLAIN_NAMES = ["toString", "valueOf", "constructor", "__proto__", "hasOwnProperty", "isPrototypeOf", "__defineGetter__", "\u202egnp.exe", "a\u2028b", "a\u009bb"];

describe("hostile delta.json: names joined onto the delta and target directories", () => {
  for (const [place, put] of Object.entries(PLACES)) {
    it(`refuses ${ESCAPING_NAMES.length} escaping, absolute, URL, backslash and control-character paths as ${place}`, async () => {
      for (const name of ESCAPING_NAMES) {
        const delta = await editedDelta(made.delta, join(work, `hostile-${++cases}`), (m) => put(m, name));
        await expectRefused(delta);
      }
    });

    it(`treats object prototype names (toString, __proto__, ...) and odd characters as plain names as ${place}: never a crash, nothing outside`, async () => {
      for (const name of PLAIN_NAMES) {
        const delta = await editedDelta(made.delta, join(work, `plain-${++cases}`), (m) => put(m, name));
        await expectContained(delta);
      }
    });
  }

  it("refuses a path that is not a plain relative path by the rule, before reading any delta file", async () => {
    const delta = await editedDelta(made.delta, join(work, "abs"), (m) => PLACES["a delta file"]!(m, "/etc/passwd"));
    await expectRefused(delta, /(delta|target)\.files has a path that is not a plain relative path inside the directory/);
  });

  it("refuses a tensor said to be in file valueOf, which has no header", async () => {
    const delta = await editedDelta(made.delta, join(work, "valueof"), (m) => PLACES["a tensor's file"]!(m, "valueOf"));
    await expectRefused(delta, /target tensor "[^"]+" is in "valueOf", which has no header/);
  });

  it("refuses config.json named as the fix-ups file (it is read as safetensors, and is not one)", async () => {
    const delta = await editedDelta(made.delta, join(work, "fixups-config"), (m) => PLACES["the fix-ups file"]!(m, "config.json"));
    await expectRefused(delta, /config\.json/);
  });

  it("refuses a shape of 27 million dimensions before building it, without echoing it", async () => {
    const delta = await editedDelta(made.delta, join(work, "rank"), (m) => {
      (Object.values(m.base.tensors)[0] as { shape: number[] }).shape = new Array(100_000).fill(1);
    });
    const message = await expectRefused(delta, /has more than 64 dimensions/);
    expect(message.length).toBeLessThan(500);
  });

  it("refuses a name given twice in one table (JSON.parse would keep the last)", async () => {
    const to = join(work, "dup");
    await cp(made.delta, to, { recursive: true });
    const text = await readFile(join(to, "delta.json"), "utf8");
    await writeFile(join(to, "delta.json"), text.replace('"files": {', '"files": {\n   "config.json": {"size": 1, "sha256": "' + "0".repeat(64) + '"},'));
    await expectRefused(to, /duplicate key "config\.json"/);
  });

  it("exits 1 with one line through the CLI for each kind of place", () => {
    for (const dir of readdirSync(work).filter((d) => /^hostile-\d+$/.test(d)).filter((_, i) => i % 6 === 0)) {
      const run = runCli(["--base", made.base, "--delta", join(work, dir), "--target", join(work, `cli-${dir}`)], "apply-delta", { timeout: 10_000 });
      expect(run.status, run.stderr).toBe(1);
      expect(oneErrorLine(run)).not.toContain(outside);
      expect(run.stderr).not.toContain("\u001b");
    }
  });
});

describe("object prototype names are plain names end to end", () => {
  it("makes, applies and verifies a model whose tensors and files are named toString, __proto__, constructor, hasOwnProperty, valueOf", async () => {
    const dir = await makeTempDir();
    const names = ["__proto__", "constructor", "toString", "hasOwnProperty"];
    const tensors = smallTensors(3).map((t, i) => ({ ...t, name: names[i]! }));
    // fromEntries: a literal's "__proto__" key would set the prototype instead.
    const companions = Object.fromEntries([["toString", "plain text\n"], ["constructor", "{}\n"], ["valueOf", "[]\n"], ["__proto__", "{}\n"]]) as Record<string, string>;
    await writeModel(join(dir, "base"), tensors, { companions });
    await writeModel(join(dir, "target"), tensors.map((t) => ({ ...t, data: t.data.map((b) => b ^ 1) })), { maxShardBytes: 3000, companions });
    await makeDelta({ base: join(dir, "base"), target: join(dir, "target"), delta: join(dir, "delta") });
    const run = runCli(["--base", join(dir, "base"), "--delta", join(dir, "delta"), "--target", join(dir, "out"), "--json"], "apply-delta");
    expect(run.status, run.stderr).toBe(0);
    expect((JSON.parse(run.stdout) as { verified: boolean }).verified).toBe(true);
    for (const name of readdirSync(join(dir, "target"))) {
      expect(readFileSync(join(dir, "out", name)), name).toEqual(readFileSync(join(dir, "target", name)));
    }
    expect((await readAll(join(dir, "out"))).map((t) => t.name).sort()).toEqual([...names].sort());
    const verify = runCli(["verify", join(dir, "out"), "--manifest", join(dir, "delta")]);
    expect(verify.status, verify.stderr).toBe(0);
    const sums = readdirSync(join(dir, "target")).map((f) => `${createHash("sha256").update(readFileSync(join(dir, "target", f))).digest("hex")}  ${f}`);
    await writeFile(join(dir, "SHA256SUMS"), sums.join("\n") + "\n");
    expect(runCli(["verify", join(dir, "out"), "--checksums", join(dir, "SHA256SUMS")]).status).toBe(0);
  });

  it("refuses an index whose weight_map sends a tensor to a file named valueOf that is not safetensors", async () => {
    const dir = join(await makeTempDir(), "model");
    await writeModel(dir, smallTensors(4), { maxShardBytes: 4200 });
    await writeFile(join(dir, "valueOf"), "not a weight file");
    const indexPath = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(await readFile(indexPath, "utf8")) as { weight_map: Record<string, string> };
    index.weight_map["embed.weight"] = "valueOf";
    await writeFile(indexPath, JSON.stringify(index));
    const run = runCli(["inspect", dir]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/valueOf/);
  });
});

describe("symbolic links in a delta", () => {
  it("refuses a delta file (config.json) that links outside the delta, and copies nothing from there", async () => {
    const delta = join(work, "link-config");
    await cp(made.delta, delta, { recursive: true });
    await rm(join(delta, "config.json"));
    await symlink(join(outside, "secret.json"), join(delta, "config.json"));
    const message = await expectRefused(delta, /config\.json is a symbolic link that leads outside .*: refused/);
    expect(message).not.toContain("secret.json");
  });

  it("refuses a shard that links outside the delta, even when the bytes there are the right ones", async () => {
    const delta = join(work, "link-shard");
    await cp(made.delta, delta, { recursive: true });
    await rename(join(delta, SHARD), join(outside, SHARD));
    await symlink(join("..", "outside", SHARD), join(delta, SHARD));
    await expectRefused(delta, new RegExp(`${SHARD.replaceAll(".", "\\.")} is a symbolic link that leads outside`));
  });

  it("refuses a delta.json that links outside the delta", async () => {
    const delta = join(work, "link-manifest");
    await cp(made.delta, delta, { recursive: true });
    await writeFile(join(outside, "delta.json"), await readFile(join(delta, "delta.json")));
    await rm(join(delta, "delta.json"));
    await symlink(join(outside, "delta.json"), join(delta, "delta.json"));
    await expectRefused(delta, /delta\.json is a symbolic link that leads outside/);
    // verify --manifest DIR reads it too
    const err = await verifyModel(made.target, { manifest: delta }).then(() => undefined, (e: unknown) => e);
    expect((err as Error).message).toMatch(/delta\.json is a symbolic link that leads outside/);
  });

  it("refuses a manifest path through a sub-directory that links outside (sub/secret.json)", async () => {
    const delta = await editedDelta(made.delta, join(work, "link-subdir"), (m) => {
      setOwn(m.delta.files, "sub/secret.json", { size: SECRET.length, sha256: createHash("sha256").update(SECRET).digest("hex") });
      setOwn(m.target.files, "sub/secret.json", { size: SECRET.length, sha256: createHash("sha256").update(SECRET).digest("hex") });
    });
    await symlink(outside, join(delta, "sub"));
    await expectRefused(delta, /link-subdir\/sub is a symbolic link that leads outside/); // the delta's listing names the link itself
  });

  it("refuses a FastChat-style delta (no delta.json) whose config.json links outside", async () => {
    const delta = join(work, "link-legacy");
    await writeModel(delta, smallTensors(5), { companions: {} });
    await symlink(join(outside, "config.json"), join(delta, "config.json"));
    await expectRefused(delta, /config\.json is a symbolic link that leads outside/);
  });

  it("refuses a link loop in the delta's listing without hanging", async () => {
    const delta = join(work, "link-loop");
    await writeModel(delta, smallTensors(5), { companions: {} });
    await symlink(".", join(delta, "a"));
    await symlink(".", join(delta, "b"));
    const files = await listRegularFiles(delta, { recursive: true });
    expect(files).toEqual(["model.safetensors"]);
  });

  it("applies a Hugging Face cache snapshot, whose files are relative links into the repo's blobs/", async () => {
    const cache = join(await makeTempDir(), "hub");
    const repo = join(cache, "models--org--small-delta");
    const snapshot = join(repo, "snapshots", "0123456789abcdef0123456789abcdef01234567");
    await mkdir(join(repo, "blobs"), { recursive: true });
    await mkdir(snapshot, { recursive: true });
    for (const name of readdirSync(made.delta)) {
      const bytes = await readFile(join(made.delta, name));
      const etag = createHash("sha256").update(bytes).digest("hex");
      await writeFile(join(repo, "blobs", etag), bytes);
      await symlink(join("..", "..", "blobs", etag), join(snapshot, name));
    }
    const target = join(work, "from-snapshot");
    const result = await applyDelta({ base: made.base, delta: snapshot, target });
    expect(result.verified).toBe(true);
    for (const name of readdirSync(made.target)) expect(readFileSync(join(target, name)), name).toEqual(readFileSync(join(made.target, name)));
  });

  it("refuses a snapshot file that links out of the cache repo, beside the blobs", async () => {
    const repo = join(await makeTempDir(), "hub", "models--org--bad");
    const snapshot = join(repo, "snapshots", "0123456789abcdef0123456789abcdef01234567");
    await mkdir(join(repo, "blobs"), { recursive: true });
    await cp(made.delta, snapshot, { recursive: true });
    await rm(join(snapshot, "config.json"));
    await symlink(join(outside, "config.json"), join(snapshot, "config.json"));
    await expectRefused(snapshot, /config\.json is a symbolic link that leads outside/);
  });
});

describe("symbolic links in a target", () => {
  it("does not write a manifest path (sub/notes.txt) through a symlinked sub-directory of the target", async () => {
    const notes = "a file in a sub-directory\n";
    const digest = createHash("sha256").update(notes).digest("hex");
    const delta = await editedDelta(made.delta, join(work, "with-subdir"), (m) => {
      setOwn(m.delta.files, "sub/notes.txt", { size: notes.length, sha256: digest });
      setOwn(m.target.files, "sub/notes.txt", { size: notes.length, sha256: digest });
    });
    await mkdir(join(delta, "sub"));
    await writeFile(join(delta, "sub", "notes.txt"), notes);

    // Into a plain target it works, the sub-directory created.
    const plain = join(work, "subdir-plain");
    expect((await applyDelta({ base: made.base, delta, target: plain })).verified).toBe(true);
    expect(readFileSync(join(plain, "sub", "notes.txt"), "utf8")).toBe(notes);

    const elsewhere = join(work, "elsewhere");
    await mkdir(elsewhere);
    const target = join(work, "subdir-linked");
    await mkdir(target);
    await symlink(elsewhere, join(target, "sub"));
    const err = await applyDelta({ base: made.base, delta, target, force: true }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(DeltaWeightsError);
    expect((err as Error).message).toMatch(/sub is a symbolic link \(or not a directory\): apply-delta does not write sub\/notes\.txt through it/);
    expect(readdirSync(elsewhere)).toEqual([]);
  });

  it("does not remove a file through a symlinked sub-directory that an earlier delta.json in make-delta's output lists", async () => {
    const elsewhere = join(work, "elsewhere-make");
    await mkdir(elsewhere);
    await writeFile(join(elsewhere, "victim.txt"), "keep me\n");
    const out = await editedDelta(made.delta, join(work, "remade"), (m) => {
      setOwn(m.delta.files, "sub/victim.txt", { size: 8, sha256: "0".repeat(64) });
    });
    await symlink(elsewhere, join(out, "sub"));
    await makeDelta({ base: made.base, target: made.target, delta: out });
    expect(readFileSync(join(elsewhere, "victim.txt"), "utf8")).toBe("keep me\n");
    expect(readdirSync(elsewhere)).toEqual(["victim.txt"]);
  });
});
