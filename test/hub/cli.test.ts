/**
 * The built CLI against the loopback Hub through HF_ENDPOINT, as a user runs
 * it: `delta-weights push`, and make-delta / apply-delta with repo ids, online
 * and then offline with the server gone. Runs `node bin/...` (npm test builds
 * dist/ first). The server lives in this process, so the CLI is spawned
 * asynchronously.
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeHub } from "./fake-hub-server.js";
import { runCliAsync } from "../helpers/cli.js";
import { hasRealdata } from "../helpers/realdata.js";

const repoRoot = resolve(import.meta.dirname, "../..");
const realdata = resolve(repoRoot, "../shared/realdata");
const TOKEN = "hf_cli_alice";

let hub: FakeHub;
let work: string;

beforeEach(async () => {
  hub = await FakeHub.start({ tokens: { [TOKEN]: { user: "alice", write: true } } });
  work = await mkdtemp(join(tmpdir(), "dw-cli-hub-"));
});
afterEach(async () => {
  await hub.close().catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

const run = runCliAsync;

async function folder(): Promise<string> {
  const dir = join(work, "upload");
  await mkdir(dir);
  await copyFile(join(realdata, "tiny-llama-bf16/model.safetensors"), join(dir, "model.safetensors"));
  await copyFile(join(realdata, "tiny-llama-bf16/config.json"), join(dir, "config.json"));
  return dir;
}

describe.skipIf(!hasRealdata)("delta-weights push (HF_ENDPOINT, HF_TOKEN, $HF_HOME/token)", () => {
  it("pushes every file with a token from $HF_HOME/token and prints the --json document", async () => {
    const dir = await folder();
    const hfHome = join(work, "hf");
    await mkdir(hfHome);
    await writeFile(join(hfHome, "token"), `${TOKEN}\n`);
    const r = await run("delta-weights", ["push", dir, "alice/tiny", "--json", "--message", "first upload", "--allow-non-delta"], { HF_ENDPOINT: hub.url, HF_HOME: hfHome });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const doc = JSON.parse(r.stdout) as { files: string[]; commitUrl: string; generatedCard: boolean };
    expect(doc.files).toEqual(["README.md", "config.json", "model.safetensors"]);
    expect(doc.commitUrl).toBe(`${hub.url}/alice/tiny/commit/${hub.headCommit("alice/tiny")!.id}`);
    for (const f of ["model.safetensors", "config.json"]) {
      expect(hub.file("alice/tiny", f)?.equals(await readFile(join(dir, f))), f).toBe(true);
    }
    expect(hub.headCommit("alice/tiny")?.title).toBe("first upload");
  });

  it("without a token: exit 1, one line naming --token, HF_TOKEN and $HF_HOME/token, no request", async () => {
    const dir = await folder();
    const r = await run("delta-weights", ["push", dir, "alice/tiny", "--allow-non-delta"], { HF_ENDPOINT: hub.url, HF_HOME: join(work, "empty-home") });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe("error: Failed to push to alice/tiny: no Hugging Face token: pass --token, set HF_TOKEN, or save one in $HF_HOME/token\n");
    expect(hub.requests).toHaveLength(0);
  });

  it("an invalid repo id is a usage error (exit 2)", async () => {
    const dir = await folder();
    const r = await run("delta-weights", ["push", dir, "not a repo"], { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^error: invalid Hub repo id "not a repo": expected org\/name\n$/);
  });
});

describe.skipIf(!hasRealdata)("the Hub client is loaded lazily", () => {
  // A module resolve hook that refuses @huggingface/hub: a command that loads it fails. Node 22.15
  // and later take it in-thread (module.registerHooks); module.register, all Node 20 has, is
  // deprecated from Node 26 on and would print a warning.
  const refuse = 'if (s.startsWith("@huggingface/hub")) throw new Error("the Hub client was loaded");';
  const asyncHook = `export async function resolve(s, c, next) { ${refuse} return next(s, c); }`;
  const register = 'import * as module from "node:module"; ' +
    `if (typeof module.registerHooks === "function") module.registerHooks({ resolve(s, c, next) { ${refuse} return next(s, c); } }); ` +
    `else module.register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(asyncHook)}`)});`;
  const nodeArgs = ["--import", `data:text/javascript,${encodeURIComponent(register)}`];

  it("inspect of a local file never imports it; push does (the control)", async () => {
    const local = await run("delta-weights", ["inspect", join(realdata, "tiny-llama-bf16/model.safetensors"), "--json"], {}, nodeArgs);
    expect(local.stderr).toBe("");
    expect(local.status).toBe(0);
    const dir = await folder();
    const push = await run("delta-weights", ["push", dir, "alice/tiny", "--allow-non-delta"], { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN }, nodeArgs);
    expect(push.status).toBe(1);
    expect(push.stderr).toContain("the Hub client was loaded");
  });
});

describe.skipIf(!hasRealdata)("make-delta and apply-delta with Hub repo ids (end to end)", () => {
  it("make-delta from a Hub base --push-to-hub; apply-delta from repo ids; again offline with the server gone", async () => {
    const { TINY_LLAMA, finetune, readAll, writeModel } = await import("../helpers/finetune.js");
    const config = await readFile(join(realdata, "tiny-llama-bf16/config.json"));
    // The base on the Hub: the real HF-written file, untouched.
    hub.seed("acme/tiny-llama", { "model.safetensors": await readFile(TINY_LLAMA), "config.json": config, "README.md": "# base" });
    const targetDir = join(work, "target");
    await writeModel(targetDir, finetune(await readAll(TINY_LLAMA), { seed: 11, growRows: 1 }), {
      companions: { "config.json": config.toString("utf8"), "tokenizer_config.json": "{}\n" },
    });

    const publisher = { HF_ENDPOINT: hub.url, HF_HOME: join(work, "publisher-hf"), HF_TOKEN: TOKEN };
    const made = await run("make-delta", ["--base", "acme/tiny-llama", "--target", targetDir, "--delta", join(work, "delta"), "--push-to-hub", "alice/tiny-llama-delta", "--json"], publisher);
    expect(made.stderr).toBe("");
    expect(made.status).toBe(0);
    // the base came through the HF cache layout
    expect(await readdir(join(work, "publisher-hf/hub/models--acme--tiny-llama/snapshots"))).toHaveLength(1);
    // every delta file landed byte for byte, plus a card naming the base
    const deltaFiles = (await readdir(join(work, "delta"))).sort();
    expect(deltaFiles).toContain("delta.json");
    for (const f of deltaFiles) expect(hub.file("alice/tiny-llama-delta", f)?.equals(await readFile(join(work, "delta", f))), f).toBe(true);
    const card = hub.file("alice/tiny-llama-delta", "README.md")!.toString();
    expect(card).toContain("base_model: acme/tiny-llama\n");
    expect(card).toContain("node bin/apply-delta --base acme/tiny-llama --delta alice/tiny-llama-delta --target ./model");

    // A user with an empty cache recovers the target from repo ids alone.
    const user = { HF_ENDPOINT: hub.url, HF_HOME: join(work, "user-hf") };
    const applied = await run("apply-delta", ["--base", "acme/tiny-llama", "--delta", "alice/tiny-llama-delta", "--target", join(work, "out")], user);
    expect(applied.stderr).toBe("");
    expect(applied.status).toBe(0);
    const targetFiles = (await readdir(targetDir)).sort();
    expect((await readdir(join(work, "out"))).sort()).toEqual(targetFiles);
    for (const f of targetFiles) expect((await readFile(join(work, "out", f))).equals(await readFile(join(targetDir, f))), f).toBe(true);
    const snapshots = join(work, "user-hf/hub/models--alice--tiny-llama-delta/snapshots");
    expect(await readdir(snapshots)).toEqual([hub.headCommit("alice/tiny-llama-delta")!.id]);

    // Server gone: HF_HUB_OFFLINE=1 serves both repos from the cache.
    await hub.close();
    await rm(join(work, "out"), { recursive: true });
    const offline = await run("apply-delta", ["--base", "acme/tiny-llama", "--delta", "alice/tiny-llama-delta", "--target", join(work, "out")], { ...user, HF_HUB_OFFLINE: "1" });
    expect(offline.stderr).toBe("");
    expect(offline.status).toBe(0);
    for (const f of targetFiles) expect((await readFile(join(work, "out", f))).equals(await readFile(join(targetDir, f))), f).toBe(true);

    // Offline with a cache that never saw the repo: one clear line.
    const missing = await run("apply-delta", ["--base", "acme/tiny-llama", "--delta", "alice/tiny-llama-delta", "--target", join(work, "out2")], { HF_HOME: join(work, "empty-hf"), HF_HUB_OFFLINE: "1" });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^error: Failed to open (acme\/tiny-llama|alice\/tiny-llama-delta) offline: the repo is not in the cache .*HF_HUB_OFFLINE\)\n$/);
  });
});
