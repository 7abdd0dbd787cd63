/**
 * Notices (a retried request) reach the CLI on the one progress stream and
 * are printed as they always were: one `note:` line on stderr, and under
 * "events" in the --json document; nothing with --quiet.
 */
import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliRun } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeSmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { FakeHub } from "../hub/fake-hub-server.js";

let hub: FakeHub;
let work: string;

beforeAll(async () => {
  hub = await FakeHub.start();
  work = await makeTempDir();
  const { base } = await makeSmallDelta(work);
  const files: Record<string, Buffer> = {};
  for (const name of await readdir(base)) files[name] = await readFile(join(base, name));
  for (const repo of ["org/plain", "org/json", "org/quiet"]) hub.seed(repo, files);
});

afterAll(async () => {
  await hub.close();
});

/** The CLI in a child (the fake Hub lives in this process), with a fresh cache. */
function run(args: string[]): Promise<CliRun> {
  const env: Record<string, string | undefined> = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(work, "cache"), NO_COLOR: "1" };
  delete env.HF_HUB_OFFLINE;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, "bin", "delta-weights"), ...args], { cwd: REPO_ROOT, env: env as NodeJS.ProcessEnv });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    const timer = setTimeout(() => child.kill(), 60_000);
    child.on("exit", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, signal });
    });
  });
}

const RETRY_LINE = /^note: model\.safetensors: .*503.*; trying again in [\d.]+ s \(try 2 of \d+\)$/m;

describe("a notice on the progress stream, printed by the CLI", () => {
  it("one note: line on stderr", async () => {
    hub.inject(/^\/__lfs\/download\//, { kind: "status", status: 503 });
    const result = await run(["inspect", "org/plain"]);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toMatch(RETRY_LINE);
    expect(result.stderr.match(/^note: /gm)).toHaveLength(1);
  });

  it("--json: the same line under events, nothing on stderr", async () => {
    hub.inject(/^\/__lfs\/download\//, { kind: "status", status: 503 });
    const result = await run(["inspect", "org/json", "--json"]);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toBe("");
    const document = JSON.parse(result.stdout) as { events?: string[] };
    expect(document.events).toHaveLength(1);
    expect(`note: ${document.events![0]}`).toMatch(RETRY_LINE);
  });

  it("--quiet: not printed", async () => {
    hub.inject(/^\/__lfs\/download\//, { kind: "status", status: 503 });
    const result = await run(["inspect", "org/quiet", "--quiet"]);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toBe("");
    // the request did fail once and was tried again
    expect(hub.requests.filter((r) => r.url.startsWith("/__lfs/download/")).length).toBeGreaterThanOrEqual(2);
  });
});
