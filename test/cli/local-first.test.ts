/**
 * A misspelt local path or an unwritable target must be named before any
 * request to the Hub: a user should not wait for a 26 GB download to learn
 * that --base does not exist. The Hub here is a server that counts requests
 * (and an endpoint nothing listens on): no request may reach either.
 */
import { createServer, type Server } from "node:http";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { oneErrorLine, type CliRun } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

let work: string;
let made: SmallDelta;
let server: Server;
let endpoint: string;
let requests: string[] = [];

beforeAll(async () => {
  work = await makeTempDir();
  made = await makeSmallDelta(work);
  server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    res.statusCode = 500;
    res.end("the test's Hub answers nothing");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  endpoint = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** Runs the CLI asynchronously (the counting server lives in this process), HF_HUB_OFFLINE unset. */
function run(bin: string, args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const childEnv: Record<string, string | undefined> = { ...process.env, HF_HUB_OFFLINE: undefined, HF_TOKEN: "hf_testtokentesttokentesttoken", NO_COLOR: "1", ...env };
  for (const [key, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[key];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], { cwd: REPO_ROOT, env: childEnv as NodeJS.ProcessEnv });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    const timer = setTimeout(() => child.kill(), 20_000);
    child.on("exit", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, signal });
    });
  });
}

describe("local paths are checked before any Hub request", () => {
  for (const [what, hub] of [["a counting server", () => endpoint], ["an endpoint nothing listens on", () => "http://127.0.0.1:9"]] as const) {
    it(`names a missing local --base before downloading the Hub --delta (${what})`, async () => {
      requests = [];
      const missing = join(work, "no-such-base");
      const result = await run("apply-delta", ["--base", missing, "--delta", "some-org/some-delta", "--target", join(work, "out")], { HF_ENDPOINT: hub() });
      expect(result.status).toBe(1);
      expect(oneErrorLine(result)).toBe(`error: Failed to open ${missing}: no such file or directory`);
      expect(requests).toEqual([]);
    });
  }

  it("names a missing local --delta before downloading the Hub --base", async () => {
    requests = [];
    const missing = join(work, "no-such-delta");
    const result = await run("apply-delta", ["--base", "some-org/some-base", "--delta", missing, "--target", join(work, "out")], { HF_ENDPOINT: endpoint });
    expect(oneErrorLine(result)).toBe(`error: Failed to open ${missing}: no such file or directory`);
    expect(requests).toEqual([]);
  });

  it("names a malformed --checksums list before downloading the Hub --base and --delta", async () => {
    requests = [];
    const list = join(work, "SHA256SUMS-malformed");
    await writeFile(list, "this is not a sha256sum line\n");
    const result = await run("apply-delta", ["--base", "some-org/some-base", "--delta", "some-org/some-delta", "--target", join(work, "out-sums"), "--checksums", list], { HF_ENDPOINT: endpoint });
    expect(result.status).toBe(1);
    expect(oneErrorLine(result)).toMatch(/SHA256SUMS-malformed/);
    expect(requests).toEqual([]);
  });

  it("names a target that cannot be written before downloading anything", async () => {
    requests = [];
    const file = join(work, "a-file");
    await writeFile(file, "x");
    const result = await run("apply-delta", ["--base", "some-org/some-base", "--delta", "some-org/some-delta", "--target", join(file, "out")], { HF_ENDPOINT: endpoint });
    expect(oneErrorLine(result)).toMatch(/a-file is a file, not a directory/);
    expect(requests).toEqual([]);
  });

  it("names a missing local --target for make-delta before downloading the Hub --base", async () => {
    requests = [];
    const missing = join(work, "no-such-target");
    const result = await run("make-delta", ["--base", "some-org/some-base", "--target", missing, "--delta", join(work, "made")], { HF_ENDPOINT: endpoint });
    expect(oneErrorLine(result)).toBe(`error: Failed to open ${missing}: no such file or directory`);
    expect(requests).toEqual([]);
  });

  it("names a missing directory to verify before fetching the manifest from the Hub", async () => {
    requests = [];
    const missing = join(work, "no-such-model");
    const result = await run("delta-weights", ["verify", missing, "--manifest", "some-org/some-delta"], { HF_ENDPOINT: endpoint });
    expect(oneErrorLine(result)).toBe(`error: Failed to open ${missing}: no such file or directory`);
    expect(requests).toEqual([]);
  });
});

describe("make-delta --push-to-hub fails before the work when it could not push", () => {
  it("refuses with HF_HUB_OFFLINE=1, writing no delta", async () => {
    requests = [];
    const out = join(work, "offline-delta");
    const result = await run("make-delta", ["--base", made.base, "--target", made.target, "--delta", out, "--push-to-hub", "me/my-delta"], { HF_HUB_OFFLINE: "1", HF_ENDPOINT: endpoint });
    expect(result.status).toBe(1);
    expect(oneErrorLine(result)).toMatch(/Failed to push to me\/my-delta: HF_HUB_OFFLINE is set; unset it to upload, or make the delta without --push-to-hub/);
    expect(requests).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });

  it("refuses without a token, writing no delta", async () => {
    requests = [];
    const out = join(work, "tokenless-delta");
    const result = await run("make-delta", ["--base", made.base, "--target", made.target, "--delta", out, "--push-to-hub", "me/my-delta"], {
      HF_TOKEN: undefined, HUGGING_FACE_HUB_TOKEN: undefined, HF_HOME: join(work, "empty-hf-home"), HF_TOKEN_PATH: undefined, HF_ENDPOINT: endpoint,
    });
    expect(oneErrorLine(result)).toMatch(/no Hugging Face token; pass --token, set HF_TOKEN/);
    expect(requests).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });
});
