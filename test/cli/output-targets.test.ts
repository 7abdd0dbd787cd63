/**
 * Where outputs go: a target that cannot be written is named with its cause
 * (not a raw Node error, not "no such file" for a read-only disk), and a
 * target that holds someone else's files is refused or written around, as
 * OutputJob decides: nothing of theirs is ever overwritten or removed.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, lstatSync, readdirSync, readFileSync } from "node:fs";
import { chmod, cp, mkdir, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { oneErrorLine, runCli, type CliOptions, type CliRun } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

let work: string;
let made: SmallDelta;

beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(work);
});

function apply(target: string, extra: string[] = [], options: CliOptions = {}): CliRun {
  return runCli(["--base", made.base, "--delta", made.delta, "--target", target, ...extra], "apply-delta", { timeout: 30_000, ...options });
}

/** Every entry under `dir` (hidden ones too) with its size and mtime (a file's: a directory's changes with any entry made and removed in it). */
function listing(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, prefix: string) => {
    for (const name of readdirSync(d).sort()) {
      const info = lstatSync(join(d, name));
      out[prefix + name] = info.isDirectory() ? "dir" : `${info.size}:${info.mtimeMs}`;
      if (info.isDirectory() && !info.isSymbolicLink()) walk(join(d, name), `${prefix}${name}/`);
    }
  };
  walk(dir, "");
  return out;
}

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** Root ignores permissions: the CLI then runs as nobody, who can read the repository and the test's inputs. */
function asUnprivileged(): CliOptions | undefined {
  if (!isRoot) return {};
  const probe = runCli(["--version"], "delta-weights", { uid: NOBODY, gid: NOBODY, timeout: 10_000 });
  return probe.status === 0 ? { uid: NOBODY, gid: NOBODY } : undefined;
}

/** Runs `node bin/<bin> args` with `dir` mounted read-only (a tmpfs in a private mount namespace), when the system allows it. */
function withReadOnlyMount(dir: string, bin: string, args: string[]): CliRun | undefined {
  const probe = spawnSync("unshare", ["-rm", "true"], { encoding: "utf8" });
  if (probe.status !== 0) return undefined;
  const run = spawnSync("unshare", ["-rm", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"', "sh", dir, process.execPath, join(REPO_ROOT, "bin", bin), ...args], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    env: { ...process.env, HF_HUB_OFFLINE: "1" },
    timeout: 30_000,
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr, signal: run.signal };
}

describe("a target that cannot be written is named with its cause", () => {
  it("refuses a target that is an existing file", async () => {
    const file = join(work, "a-file");
    await writeFile(file, "x");
    expect(oneErrorLine(apply(file))).toMatch(/Failed to write .*a-file: it is a file, not a directory; choose a directory/);
    expect(oneErrorLine(runCli(["--base", made.base, "--target", made.target, "--delta", file], "make-delta"))).toMatch(/it is a file, not a directory/);
    expect(oneErrorLine(runCli(["convert", made.target, file]))).toMatch(/it is a file, not a directory/);
    expect(readFileSync(file, "utf8")).toBe("x");
  });

  it("names the file in the way of a target under a regular file (not ENOTDIR)", async () => {
    const file = join(work, "in-the-way");
    await writeFile(file, "x");
    const run = apply(join(file, "sub", "out"));
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/Failed to write .*in-the-way\/sub\/out: .*in-the-way is a file, not a directory/);
    const single = runCli(["convert", made.target, join(file, "model.safetensors")]);
    expect(oneErrorLine(single)).toMatch(/in-the-way is a file, not a directory/);
  });

  const unprivileged = asUnprivileged();
  it.skipIf(unprivileged === undefined)("refuses a target whose parent is not writable: permission denied, naming the directory (as nobody when the tests run as root)", async () => {
    const dir = await makeTempDir();
    await chmod(dir, 0o755);
    const locked = join(dir, "locked");
    await mkdir(locked);
    chmodSync(locked, 0o555);
    const inputs = join(dir, "inputs");
    await cp(made.base, join(inputs, "base"), { recursive: true });
    await cp(made.delta, join(inputs, "delta"), { recursive: true });
    chmodSync(inputs, 0o755);
    const run = runCli(["--base", join(inputs, "base"), "--delta", join(inputs, "delta"), "--target", join(locked, "out")], "apply-delta", unprivileged);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toBe(`error: Failed to write into ${locked}: permission denied`);
    expect(readdirSync(locked)).toEqual([]);
  });

  it("refuses a target on a read-only file system as read-only (it was reported as ENOENT)", async () => {
    const ro = join(await makeTempDir(), "ro");
    await mkdir(ro);
    const runs = [
      withReadOnlyMount(ro, "apply-delta", ["--base", made.base, "--delta", made.delta, "--target", join(ro, "out")]),
      withReadOnlyMount(ro, "apply-delta", ["--base", made.base, "--delta", made.delta, "--target", ro]),
      withReadOnlyMount(ro, "make-delta", ["--base", made.base, "--target", made.target, "--delta", join(ro, "delta")]),
      withReadOnlyMount(ro, "delta-weights", ["convert", made.target, join(ro, "model.safetensors")]),
    ];
    if (runs[0] === undefined) {
      // Without user namespaces (unshare -rm) there is no read-only mount to make here.
      console.warn("skipped: unshare -rm is not permitted on this system, so no read-only file system can be made");
      return;
    }
    for (const run of runs) {
      expect(run!.status, run!.stderr).toBe(1);
      expect(oneErrorLine(run!)).toBe(`error: Failed to write into ${ro}: read-only file system`);
    }
  });
});

describe("unsafe targets", () => {
  it("refuses `.` and `..` when they are non-empty directories, and leaves them exactly as they were", async () => {
    const home = await makeTempDir();
    await mkdir(join(home, "project"));
    await writeFile(join(home, "notes.txt"), "mine\n");
    await writeFile(join(home, ".hidden.partial"), "a user's file, not one of ours\n");
    await writeFile(join(home, "project", "main.py"), "print()\n");
    const before = listing(home);
    for (const [cwd, target] of [[join(home, "project"), "."], [join(home, "project"), ".."], [home, "."]] as const) {
      const run = apply(target, [], { cwd });
      expect(run.status, run.stderr).toBe(1);
      expect(oneErrorLine(run)).toMatch(/is not empty \(it holds .*\) and no earlier run of this apply-delta: choose an empty or new directory, or pass --force/);
      expect(listing(home)).toEqual(before);
    }
  });

  it("refuses `/` (not empty, and not ours), writing nothing there", async () => {
    const before = readdirSync("/").sort();
    const unprivileged = asUnprivileged();
    // As nobody when the tests run as root: root could create (and would remove) a lock file in / before the refusal.
    const dir = await makeTempDir();
    await chmod(dir, 0o755);
    await cp(made.base, join(dir, "base"), { recursive: true });
    await cp(made.delta, join(dir, "delta"), { recursive: true });
    const run = runCli(["--base", join(dir, "base"), "--delta", join(dir, "delta"), "--target", "/"], "apply-delta", unprivileged ?? {});
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/^error: (\/ is not empty|Failed to write into \/: permission denied)/);
    expect(readdirSync("/").sort()).toEqual(before);
  });

  it("never overwrites a user's config.json: with or without --force the run stops naming the file, before writing anything", async () => {
    const target = join(work, "users-config");
    await mkdir(target);
    await writeFile(join(target, "config.json"), '{"mine": true}\n');
    const before = listing(target);
    for (const extra of [[], ["--force"]]) {
      const run = apply(target, extra);
      expect(run.status).toBe(1);
      expect(oneErrorLine(run)).toBe(`error: ${join(target, "config.json")} already exists, with other bytes, and was not written by apply-delta: it is not overwritten; move it away or choose another directory`);
      expect(listing(target)).toEqual(before);
      expect(readFileSync(join(target, "config.json"), "utf8")).toBe('{"mine": true}\n');
    }
  });

  it("with --force writes into a directory of unrelated files and leaves every one of them alone", async () => {
    const target = join(work, "shared-dir");
    await mkdir(join(target, "data"), { recursive: true });
    await writeFile(join(target, "notes.txt"), "mine\n");
    await writeFile(join(target, "data", "rows.csv"), "a,b\n");
    await writeFile(join(target, ".env"), "SECRET=1\n");
    await writeFile(join(target, ".backup.partial"), "a user's file that looks like a temporary one\n");
    const before = listing(target);
    const run = apply(target, ["--force", "--json"]);
    expect(run.status, run.stderr).toBe(0);
    expect((JSON.parse(run.stdout) as { verified: boolean }).verified).toBe(true);
    const after = listing(target);
    for (const [name, state] of Object.entries(before)) expect(after[name], name).toBe(state);
    for (const name of readdirSync(made.target)) expect(readFileSync(join(target, name)), name).toEqual(readFileSync(join(made.target, name)));
  });

  it("resumes an earlier killed run of the same job without --force (its record, a stale lock and a half-written file left behind)", async () => {
    const target = join(work, "killed");
    await mkdir(target);
    const first = readdirSync(made.target).find((f) => f.endsWith(".safetensors"))!;
    // What a run killed half way leaves: one finished file, its record naming what it took, its lock and a temporary file.
    await cp(join(made.target, first), join(target, first));
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    const deadPid = Number(dead.stdout);
    await writeFile(join(target, ".delta-weights-job.json"), JSON.stringify({ command: "apply-delta", written: readdirSync(made.target) }) + "\n");
    await writeFile(join(target, ".delta-weights.lock"), JSON.stringify({ pid: deadPid, host: hostname(), command: "apply-delta", nonce: "x" }));
    await writeFile(join(target, `.config.json.${deadPid}-0123abcd.partial`), "{");
    const run = apply(target, ["--json"]);
    expect(run.status, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { verified: boolean; files: Record<string, { status: string }> };
    expect(result.verified).toBe(true);
    expect(result.files[first]?.status).toBe("kept");
    expect(readdirSync(target).sort()).toEqual(readdirSync(made.target).sort());
  });
});
