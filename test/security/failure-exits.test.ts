/**
 * Every failure ends the process: exit 1, one line, promptly. A bad fix-ups
 * file once printed its error and then hung (a hash worker or an open
 * handle kept the process alive); a FIFO where a file should be blocks any
 * open() or read() that waits for a writer. Each case runs the built CLI
 * with a timeout: a hang is a failed test, not a stuck suite.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { oneErrorLine, runCli, type CliRun } from "../helpers/cli.js";
import { editedDelta, makeSmallDelta, setOwn, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** Long enough for a loaded machine, far shorter than a hang. */
const PROMPTLY_MS = 10_000;

let work: string;
let made: SmallDelta;
let n = 0;

beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(work);
});

function expectExit1(run: CliRun, rule: RegExp): void {
  expect(run.signal ?? null, `killed after ${PROMPTLY_MS} ms: it hung (stderr: ${run.stderr})`).toBeNull();
  expect(run.status, run.stderr).toBe(1);
  expect(oneErrorLine(run)).toMatch(rule);
}

function apply(delta: string, extra: string[] = [], base = made.base): CliRun {
  return runCli(["--base", base, "--delta", delta, "--target", join(work, `out-${++n}`), ...extra], "apply-delta", { timeout: PROMPTLY_MS });
}

const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");

/** A copy of the delta whose fix-ups file is `bytes`, delta.json updated to match (so only the file's content is wrong). */
async function withFixups(bytes: Uint8Array): Promise<string> {
  const delta = await editedDelta(made.delta, join(work, `fixups-${++n}`), (m) => {
    setOwn(m.delta.files, m.delta.fixups!, { size: bytes.length, sha256: sha256(bytes) });
  });
  await writeFile(join(delta, "delta-fixups.safetensors"), bytes);
  return delta;
}

describe("a failure exits: no hang after the error", () => {
  it("exits 1 when delta-fixups.safetensors is 8 zero bytes", async () => {
    expectExit1(apply(await withFixups(new Uint8Array(8))), /delta-fixups\.safetensors: header length is 0/);
  });

  it("exits 1 when delta.json names config.json as the fix-ups", async () => {
    const delta = await editedDelta(made.delta, join(work, "fixups-config"), (m) => {
      m.delta.fixups = "config.json";
    });
    expectExit1(apply(delta), /config\.json/);
  });

  it("exits 1 when delta.json names hasOwnProperty as the fix-ups", async () => {
    const delta = await editedDelta(made.delta, join(work, "fixups-hasown"), (m) => {
      setOwn(m.delta.files, "hasOwnProperty", m.delta.files[m.delta.fixups!]);
      m.delta.fixups = "hasOwnProperty";
    });
    expectExit1(apply(delta), /hasOwnProperty is missing/);
  });

  it("exits 1 when the fix-ups point past the end of their tensor (found while the hash workers run)", async () => {
    const original = await readFile(join(made.delta, "delta-fixups.safetensors"));
    const header = Number(new DataView(original.buffer, original.byteOffset).getBigUint64(0, true));
    const bytes = new Uint8Array(original);
    // the first index of the first tensor (U32): far past any tensor's end
    new DataView(bytes.buffer).setUint32(8 + header, 0x7fffffff, true);
    expectExit1(apply(await withFixups(bytes)), /fix-ups of tensor .* (point past the end|are not strictly ascending)/);
  });

  it("exits 1 when a delta shard is corrupted (found at the end, by hashing every delta file)", async () => {
    const delta = join(work, "corrupt");
    await cp(made.delta, delta, { recursive: true });
    const shard = join(delta, "model-00002-of-00002.safetensors");
    const bytes = await readFile(shard);
    bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 0x40;
    await writeFile(shard, bytes);
    expectExit1(apply(delta), /model-00002-of-00002\.safetensors has sha256 .* corrupted/);
  });

  it("exits 1 when a delta shard is truncated", async () => {
    const delta = join(work, "truncated");
    await cp(made.delta, delta, { recursive: true });
    await truncate(join(delta, "model-00001-of-00002.safetensors"), 100);
    expectExit1(apply(delta), /is 100 bytes, delta\.json says .* truncated/);
  });

  it("exits 1 on a wrong base (found while the workers hash it)", async () => {
    const wrong = join(work, "wrong-base");
    await cp(made.base, wrong, { recursive: true });
    const file = join(wrong, "model.safetensors");
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 1;
    await writeFile(file, bytes);
    expectExit1(apply(made.delta, [], wrong), /wrong base: tensor "[^"]+"/);
  });

  it("exits 1 when the target is taken by a file this tool did not write", async () => {
    const target = join(work, "taken");
    await mkdir(target);
    await writeFile(join(target, "config.json"), "mine\n");
    const run = runCli(["--base", made.base, "--delta", made.delta, "--target", target, "--force"], "apply-delta", { timeout: PROMPTLY_MS });
    expectExit1(run, /config\.json already exists, with other bytes, and was not written by apply-delta/);
  });
});

describe("a FIFO where a file should be is refused without blocking", () => {
  const fifo = (path: string) => execFileSync("mkfifo", [path]);

  it("refuses a FIFO as a base's weight file", async () => {
    const base = join(work, "fifo-shard");
    await cp(made.base, base, { recursive: true });
    await rm(join(base, "model.safetensors"));
    fifo(join(base, "model.safetensors"));
    expectExit1(apply(made.delta, [], base), /model\.safetensors is not a regular file/);
  });

  it("refuses a FIFO as a shard an index lists", async () => {
    const delta = join(work, "fifo-delta-shard");
    await cp(made.delta, delta, { recursive: true });
    await rm(join(delta, "model-00002-of-00002.safetensors"));
    fifo(join(delta, "model-00002-of-00002.safetensors"));
    expectExit1(apply(delta), /model-00002-of-00002\.safetensors is not a regular file/);
    // through the index, as inspect opens it
    const run = runCli(["inspect", delta], "delta-weights", { timeout: PROMPTLY_MS });
    expectExit1(run, /model-00002-of-00002\.safetensors.*not a regular file/);
  });

  it("refuses a FIFO as an index", async () => {
    const model = join(work, "fifo-index");
    await cp(made.target, model, { recursive: true });
    await rm(join(model, "model.safetensors.index.json"));
    fifo(join(model, "model.safetensors.index.json"));
    expectExit1(runCli(["inspect", model], "delta-weights", { timeout: PROMPTLY_MS }), /model\.safetensors\.index\.json is not a regular file/);
  });

  it("refuses a FIFO as delta.json", async () => {
    const delta = join(work, "fifo-manifest");
    await cp(made.delta, delta, { recursive: true });
    await rm(join(delta, "delta.json"));
    fifo(join(delta, "delta.json"));
    expectExit1(apply(delta), /delta\.json is not a regular file \(a pipe, socket or device\?\): refused/); // named by the delta's listing
    expectExit1(runCli(["verify", made.target, "--manifest", join(delta, "delta.json")], "delta-weights", { timeout: PROMPTLY_MS }), /delta\.json: it is not a regular file/);
  });

  it("refuses a FIFO as a delta's config.json, and as a model's (make-delta, convert)", async () => {
    const delta = join(work, "fifo-config");
    await cp(made.delta, delta, { recursive: true });
    await rm(join(delta, "config.json"));
    fifo(join(delta, "config.json"));
    expectExit1(apply(delta), /config\.json is not a regular file/);

    const target = join(work, "fifo-target-config");
    await cp(made.target, target, { recursive: true });
    await rm(join(target, "config.json"));
    fifo(join(target, "config.json"));
    expectExit1(runCli(["--base", made.base, "--target", target, "--delta", join(work, "fifo-made")], "make-delta", { timeout: PROMPTLY_MS }), /config\.json is not a regular file/);
    expectExit1(runCli(["convert", target, join(work, "fifo-converted")], "delta-weights", { timeout: PROMPTLY_MS }), /config\.json is not a regular file/);
  });

  it("refuses a FIFO as a checksums list", async () => {
    const list = join(work, "fifo-sums");
    fifo(list);
    expectExit1(apply(made.delta, ["--checksums", list]), /fifo-sums: it is not a regular file/);
    expectExit1(runCli(["verify", made.target, "--checksums", list], "delta-weights", { timeout: PROMPTLY_MS }), /fifo-sums: it is not a regular file/);
  });
});
