/**
 * Every failure ends the process. A refused run used to print its error and
 * then hang: `--target /proc/out` looped in Node's recursive mkdir (procfs
 * answers ENOENT in a directory that exists), and a refused --no-cache-delta
 * left the hash workers it had started holding the event loop. Each run here
 * is killed by the harness if it outlives its timeout (then `signal` is
 * SIGTERM and the test fails); nothing else about time is asserted.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { oneErrorLine, runCli, type CliRun } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const HARNESS_TIMEOUT_MS = 30_000;
const hasProc = existsSync("/proc/self");
let cache: string;
let work: string;

beforeAll(async () => {
  work = await makeTempDir();
  cache = join(work, "hf-cache");
});

/** The run ended on its own (not killed by the harness), with status 1 and one error line; returns the line. */
function failedAndEnded(run: CliRun): string {
  expect(run.signal, `killed after ${HARNESS_TIMEOUT_MS} ms: the process did not end; stderr: ${run.stderr}`).toBeNull();
  expect(run.status, run.stderr).toBe(1);
  return oneErrorLine(run);
}

const run = (args: string[], bin: string, env: Record<string, string> = {}) =>
  runCli(args, bin, { timeout: HARNESS_TIMEOUT_MS, env: { HF_HUB_CACHE: cache, ...env } });

describe("a failure ends the process", () => {
  it.skipIf(!hasProc)("apply-delta, make-delta and convert into /proc/out: exit 1 naming the directory (skipped without /proc)", () => {
    const why = "/proc exists but takes no new entries";
    expect(failedAndEnded(run(["--base", "samples/base", "--delta", "samples/delta", "--target", "/proc/out"], "apply-delta"))).toContain(`/proc/out: ${why}`);
    expect(failedAndEnded(run(["--base", "samples/base", "--target", "samples/base", "--delta", "/proc/out"], "make-delta"))).toContain(`/proc/out: ${why}`);
    expect(failedAndEnded(run(["convert", "samples/base", "/proc/out/model"], "delta-weights"))).toMatch(/error: .*\/proc/);
  });

  it("apply-delta --no-cache-delta with HF_HUB_OFFLINE=1: the refusal, then exit 1", () => {
    const line = failedAndEnded(run(["--base", "samples/base", "--delta", "some-org/some-delta", "--no-cache-delta", "--target", join(work, "out-offline")], "apply-delta", { HF_HUB_OFFLINE: "1" }));
    expect(line).toBe("error: --no-cache-delta: the delta some-org/some-delta must be downloaded, and HF_HUB_OFFLINE is set; unset it, or drop the flag to use a cached copy");
    expect(existsSync(join(work, "out-offline")), "a refused run leaves no target").toBe(false);
  });

  it("apply-delta with a Hub base that is not cached, offline: exit 1 after the download workers started", () => {
    const line = failedAndEnded(run(["--base", "some-org/some-base", "--delta", "samples/delta", "--target", join(work, "out-base")], "apply-delta", { HF_HUB_OFFLINE: "1" }));
    expect(line).toMatch(/some-org\/some-base offline: the repo is not in the cache/);
  });

  // The CLI exits once a command is over even if something is left open; a
  // library caller has no such net, so the library must leave nothing running.
  it("the library's applyDelta leaves nothing running when it refuses (the process ends by itself)", () => {
    const script = `
      import { applyDelta } from "./dist/index.js";
      const common = { offline: true, cacheDir: ${JSON.stringify(cache)} };
      for (const options of [
        { base: "samples/base", delta: "some-org/some-delta", target: ${JSON.stringify(join(work, "lib-1"))}, cacheDelta: false },
        { base: "some-org/some-base", delta: "samples/delta", target: ${JSON.stringify(join(work, "lib-2"))} },
      ]) {
        await applyDelta({ ...options, ...common }).then(() => console.log("applied?"), (err) => console.log("refused: " + err.message));
      }
    `;
    const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: REPO_ROOT, encoding: "utf8", timeout: HARNESS_TIMEOUT_MS });
    expect(child.signal, `killed after ${HARNESS_TIMEOUT_MS} ms: something the library started kept the process alive`).toBeNull();
    expect(child.stderr).toBe("");
    expect(child.status).toBe(0);
    const lines = child.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^refused: --no-cache-delta: the delta some-org\/some-delta must be downloaded, and HF_HUB_OFFLINE is set/);
    expect(lines[1]).toMatch(/^refused: .*some-org\/some-base offline: the repo is not in the cache/);
  });
});
