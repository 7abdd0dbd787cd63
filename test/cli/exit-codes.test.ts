/**
 * The command line's public contract (DESIGN.md): exit 0 success, 1 the
 * operation failed, 2 usage error; `--json` gives a JSON error document on
 * stdout when a command fails; FastChat's scripts keep working (flag
 * aliases, --low-cpu-mem); Ctrl-C says how to resume (and restores the
 * cursor on a terminal, writing no escape code elsewhere). Each test is named after the promise it keeps.
 */
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { MAX_CHECKSUM_LIST_BYTES } from "../../src/limits.js";
import { VERSION } from "../../src/version.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { finetune, noise, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

let work: string;
let made: SmallDelta;
let n = 0;
const out = () => join(work, `out-${++n}`);

beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(work);
});

interface ErrorDocument {
  error: { code: string; message: string };
}

describe("exit codes", () => {
  it("exits 1 (bad input, not a usage error) for a malformed checksums file, in apply and in verify", async () => {
    const list = join(work, "SHA256SUMS-bad");
    await writeFile(list, "this is not a checksum line\n");
    const applied = runCli(["--base", made.base, "--delta", made.delta, "--target", out(), "--checksums", list], "apply-delta");
    expect(applied.status).toBe(1);
    expect(oneErrorLine(applied)).toMatch(/SHA256SUMS-bad:1: not a sha256sum or md5sum line/);
    const verified = runCli(["verify", made.target, "--checksums", list]);
    expect(verified.status).toBe(1);
    expect(oneErrorLine(verified)).toMatch(/SHA256SUMS-bad:1: not a sha256sum or md5sum line/);
  });

  it("refuses a checksum list over MAX_CHECKSUM_LIST_BYTES before reading it (33 MB of newlines took 1.2 GB to split)", async () => {
    const list = join(work, "SHA256SUMS-huge");
    await writeFile(list, "\n".repeat(MAX_CHECKSUM_LIST_BYTES + 1));
    for (const [args, bin] of [[["--base", made.base, "--delta", made.delta, "--target", out(), "--checksums", list], "apply-delta"], [["verify", made.target, "--checksums", list], "delta-weights"]] as const) {
      const run = runCli([...args], bin);
      expect(run.status).toBe(1);
      expect(oneErrorLine(run)).toMatch(new RegExp(`SHA256SUMS-huge: ${MAX_CHECKSUM_LIST_BYTES + 1} bytes is more than the ${MAX_CHECKSUM_LIST_BYTES}-byte limit for a checksum list`));
    }
  });

  it("exits 2 for usage errors: a missing required flag, an unknown command, an unknown option", () => {
    for (const [args, bin] of [[["--base", made.base, "--delta", made.delta], "apply-delta"], [["bogus"], "delta-weights"], [["inspect", made.base, "--frobnicate"], "delta-weights"]] as const) {
      const run = runCli([...args], bin);
      expect(run.status, run.stderr).toBe(2);
      oneErrorLine(run);
    }
  });

  it.each(["0", "65", "-1", "1.5", "1e1", "0x10", "08", "4 ", "", "two", "99999999999999999999"])("--threads %j is a usage error: plain whole numbers from 1 to 64 only", (value) => {
    const run = runCli(["inspect", made.base, "--threads", value]);
    expect(run.status).toBe(2);
    expect(oneErrorLine(run)).toMatch(/--threads <n>.*expected a whole number from 1 to 64/);
  });

  it.each(["1", "64"])("--threads %s is accepted", (value) => {
    const run = runCli(["verify", made.target, "--manifest", made.delta, "--threads", value]);
    expect(run.status, run.stderr).toBe(0);
  });
});

describe("--json on failure: an error document on stdout, one line on stderr", () => {
  const cases: [string, string[], string, number, string][] = [];
  beforeAll(() => {
    cases.push(
      ["apply (a missing delta)", ["--base", made.base, "--delta", join(work, "missing"), "--target", out(), "--json"], "apply-delta", 1, "E_IO"],
      ["make (a delta given as the base)", ["--base", made.delta, "--target", made.target, "--delta", out(), "--json"], "make-delta", 1, "E_DELTA"],
      ["verify (a damaged file)", ["verify", made.base, "--manifest", made.delta, "--json"], "delta-weights", 1, "E_VERIFY"],
      ["inspect (not a model)", ["inspect", join(work, "missing"), "--json"], "delta-weights", 1, "E_IO"],
      ["convert (output inside the input)", ["convert", made.target, join(made.target, "copy"), "--json"], "delta-weights", 1, "E_IO"],
      ["a usage error", ["--base", made.base, "--json"], "apply-delta", 2, "E_USAGE"],
      ["--json before the subcommand", ["--json", "inspect", join(work, "missing")], "delta-weights", 1, "E_IO"],
    );
  });

  it("prints a valid error document for every command", () => {
    for (const [what, args, bin, status, code] of cases) {
      const run = runCli(args, bin);
      expect(run.status, what).toBe(status);
      const line = oneErrorLine(run);
      const doc = JSON.parse(run.stdout) as ErrorDocument;
      expect(doc.error.code, what).toBe(code);
      expect(line, what).toBe(`error: ${doc.error.message}`);
    }
  });
});

describe("convert checks free space before writing", () => {
  it("refuses a copy that does not fit, naming what is needed, and writes nothing", async () => {
    const dir = await makeTempDir();
    const small = join(dir, "small");
    await mkdir(small);
    const probe = spawnSync("unshare", ["-rm", "true"]);
    if (probe.status !== 0) {
      console.warn("skipped: unshare -rm is not permitted on this system, so no small file system can be mounted");
      return;
    }
    // A 4 KB tmpfs in a private mount namespace: the model's 6 KB of tensors cannot fit.
    const script = 'mount -t tmpfs -o size=4k tmpfs "$1" && shift && "$@"; status=$?; ls -A "$0"; exit $status';
    for (const target of [join(small, "out"), join(small, "model.safetensors")]) {
      const run = spawnSync("unshare", ["-rm", "sh", "-c", script.replace('"$0"', `"${small}"`), "sh", small, process.execPath, join(REPO_ROOT, "bin", "delta-weights"), "convert", made.target, target], { encoding: "utf8", timeout: 30_000 });
      expect(run.status, run.stderr).toBe(1);
      expect(oneErrorLine({ status: run.status, stdout: "", stderr: run.stderr })).toMatch(/not enough free space for .*small.*: 0\.0\d GB needed, 0\.00 GB free; free some space or choose another directory/);
      // `ls -A` of the mount ran after the failure: empty.
      expect(run.stdout).toBe("");
    }
  });
});

describe("FastChat's scripts keep working", () => {
  it("accepts --low-cpu-mem as a no-op", () => {
    const target = out();
    const run = runCli(["--base-model-path", made.base, "--delta-path", made.delta, "--target-model-path", target, "--low-cpu-mem"], "apply-delta");
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^verified/);
    for (const name of readdirSync(made.target)) expect(readFileSync(join(target, name)), name).toEqual(readFileSync(join(made.target, name)));
  });

  it("lists FastChat's flag names in --help of apply-delta, make-delta and their delta-weights forms", () => {
    for (const [args, bin] of [[["--help"], "apply-delta"], [["--help"], "make-delta"], [["apply", "--help"], "delta-weights"], [["make", "--help"], "delta-weights"]] as const) {
      const run = runCli([...args], bin);
      expect(run.status).toBe(0);
      for (const alias of ["--base-model-path", "--target-model-path", "--delta-path"]) expect(run.stdout, `${bin} ${args.join(" ")}`).toContain(alias);
    }
  });

  it("prints --version on every bin", () => {
    for (const bin of ["apply-delta", "make-delta", "delta-weights"]) {
      const run = runCli(["--version"], bin);
      expect(run.status, bin).toBe(0);
      expect(run.stdout.trim(), bin).toBe(VERSION);
    }
  });

  it("takes global flags before the subcommand: delta-weights --json inspect X, --quiet verify, --threads apply", () => {
    const inspected = runCli(["--json", "inspect", made.target]);
    expect(inspected.status, inspected.stderr).toBe(0);
    expect((JSON.parse(inspected.stdout) as { tensors: unknown[] }).tensors).toHaveLength(4);
    const quiet = runCli(["--quiet", "verify", made.target, "--manifest", made.delta]);
    expect(quiet.status, quiet.stderr).toBe(0);
    expect(quiet.stdout).toBe("");
    const applied = runCli(["--threads", "2", "--json", "apply", "--base", made.base, "--delta", made.delta, "--target", out()]);
    expect(applied.status, applied.stderr).toBe(0);
    expect((JSON.parse(applied.stdout) as { verified: boolean }).verified).toBe(true);
  });
});

describe("Ctrl-C", () => {
  /** Four 16 MB F16 tensors: an apply that runs long enough to interrupt. */
  function bigModel(): Tensor[] {
    const next = rng(9);
    return [0, 1, 2, 3].map((i) => ({ name: `layers.${i}.weight`, dtype: "F16" as const, shape: [2048, 4096], data: noise("F16", 2048 * 4096, 0.02, next) }));
  }

  it("says how to resume, with no escape code on a pipe, exits 130; the same command then finishes", async () => {
    const dir = await makeTempDir();
    const tensors = bigModel();
    await writeModel(join(dir, "base"), tensors, { maxShardBytes: 16 * 1024 * 1024 + 1 });
    await writeModel(join(dir, "target"), finetune(tensors, { seed: 3 }), { maxShardBytes: 16 * 1024 * 1024 + 1 });
    await makeDelta({ base: join(dir, "base"), target: join(dir, "target"), delta: join(dir, "delta") });
    const target = join(dir, "out");
    const args = ["--base", join(dir, "base"), "--delta", join(dir, "delta"), "--target", target];

    const child = spawn(process.execPath, [join(REPO_ROOT, "bin/apply-delta"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    // Interrupt once it is writing.
    let sent = false;
    while (!sent && child.exitCode === null) {
      if (readdirSyncSafe(target).some((name) => name.endsWith(".partial"))) {
        child.kill("SIGINT");
        sent = true;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(sent, "the run ended before it could be interrupted").toBe(true);
    expect(await exited).toBe(130);
    // stderr is a pipe here: the sentence, and no escape code (a terminal would get the cursor back).
    expect(stderr).toBe("interrupted: run the same command again to resume\n");

    const again = runCli(args, "apply-delta");
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^verified/);
    for (const name of readdirSync(join(dir, "target"))) expect(sha256Bytes(readFileSync(join(target, name))), name).toBe(sha256Bytes(readFileSync(join(dir, "target", name))));
  });
});

function readdirSyncSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
