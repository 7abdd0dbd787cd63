/**
 * make-delta --push-to-hub against the loopback Hub: each delta file is
 * uploaded as soon as it is final, several at once, and one commit follows
 * the make. Pipelining is shown by the order of events (the make's file hook
 * and the server's state), not by timing.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { makeDelta, type MakeDeltaOptions } from "../../src/api.js";
import type { WrittenFile } from "../../src/delta/own/make-delta.js";
import { HubError } from "../../src/errors.js";
import { pushToHub } from "../../src/api.js";
import { UPLOAD_FILES_AT_ONCE } from "../../src/limits.js";
import { runCliAsync } from "../helpers/cli.js";
import { finetune, noise, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { FakeHub, type FakeHubOptions } from "./fake-hub-server.js";

const TOKEN = "hf_maker_alice";
const REPO = "alice/pipelined-delta";

let hub: FakeHub;
let work: string;

async function startHub(options: FakeHubOptions = {}): Promise<void> {
  hub = await FakeHub.start({ tokens: { [TOKEN]: { user: "alice", write: true } }, ...options });
}

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "dw-push-make-"));
});

afterEach(async () => {
  await hub?.close();
  await rm(work, { recursive: true, force: true });
});

/** A base and a fine-tune in four shards of about 64 KB (F16, so the add codec needs fix-ups), with companions. */
async function models(): Promise<{ base: string; target: string }> {
  const next = rng(3);
  const tensors: Tensor[] = Array.from({ length: 4 }, (_, i) => ({ name: `layers.${i}.weight`, dtype: "F16", shape: [128, 256], data: noise("F16", 128 * 256, 0.02, next) }));
  const companions = { "config.json": '{"vocab_size": 128}\n', "tokenizer_config.json": "{}\n" };
  const base = await writeModel(join(work, "base"), tensors, { companions });
  const target = await writeModel(join(work, "target"), finetune(tensors, { seed: 5, scale: 0.05 }), { maxShardBytes: 70_000, companions });
  return { base, target };
}

/** Two tries, a millisecond apart: a failure that persists fails fast. */
const FAST_RETRY = { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 };

function options(base: string, target: string, extra: Partial<MakeDeltaOptions> = {}): MakeDeltaOptions {
  return { base, target, delta: join(work, "delta"), push: { repo: REPO, accessToken: TOKEN, hubUrl: hub.url, retry: FAST_RETRY }, ...extra };
}

/** Waits until the Hub stores the object `sha256`; fails the test after `ms`. */
async function stored(sha256: string, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!hub.lfsObjects.has(sha256)) {
    if (Date.now() > until) throw new Error(`the Hub never received ${sha256.slice(0, 12)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const isShard = (path: string) => /^model-\d+-of-\d+\.safetensors$/.test(path);
const commits = () => hub.requests.filter((r) => r.method === "POST" && r.url.includes("/commit/"));

describe("make-delta --push-to-hub", () => {
  it("puts every delta file on the Hub byte for byte in one commit, weights through LFS, with a model card", async () => {
    await startHub();
    const { base, target } = await models();
    const order: string[] = [];
    const result = await makeDelta(options(base, target, { onFileWritten: (f) => { order.push(f.path); } }));

    const local = (await readdir(result.delta)).filter((n) => !n.startsWith(".")).sort();
    expect(local).toEqual(expect.arrayContaining(["delta.json", "delta-fixups.safetensors", "config.json", "model.safetensors.index.json"]));
    expect(local.filter(isShard)).toHaveLength(4);
    for (const f of local) expect(hub.file(REPO, f)?.equals(await readFile(join(result.delta, f))), f).toBe(true);
    // every file reported once, delta.json last
    expect([...order].sort()).toEqual(local);
    expect(order.at(-1)).toBe("delta.json");

    const head = hub.headCommit(REPO)!;
    expect(commits()).toHaveLength(1);
    expect(head.title).toBe("Upload delta weights");
    expect(head.id).toBe(result.pushed?.commitId);
    for (const f of local) expect(head.files.get(f)?.lfs, f).toBe(f.endsWith(".safetensors"));
    expect(result.pushed).toMatchObject({ repo: REPO, public: true, generatedCard: true, files: ["README.md", ...local].sort() });
    expect(hub.file(REPO, "README.md")?.toString()).toContain(`--delta ${REPO}`);
    // make-delta knew every shard's sha256: nothing was hashed twice, and the Hub got exactly those objects
    const manifest = JSON.parse(await readFile(join(result.delta, "delta.json"), "utf8")) as { delta: { files: Record<string, { sha256: string }> } };
    for (const f of local.filter((n) => n.endsWith(".safetensors"))) expect(hub.lfsObjects.has(manifest.delta.files[f]!.sha256), f).toBe(true);
  });

  it("uploads each shard while the next is made: the first shard is stored on the Hub before the last is written", async () => {
    await startHub();
    const { base, target } = await models();
    const shards: WrittenFile[] = [];
    const storedWhenWritten: boolean[] = [];
    await makeDelta(options(base, target, {
      onFileWritten: async (f) => {
        if (!isShard(f.path)) return;
        // Was the first shard already on the Hub when this one was written?
        storedWhenWritten.push(shards.length > 0 && hub.lfsObjects.has(shards[0]!.sha256));
        shards.push(f);
        // The make waits here for this shard's upload: it can only go on if uploads run during the make, not after it.
        await stored(f.sha256);
        expect(commits()).toHaveLength(0);
      },
    }));
    expect(shards).toHaveLength(4);
    expect(storedWhenWritten).toEqual([false, true, true, true]);
    // the one commit comes after every upload
    const lastUpload = hub.requests.findLastIndex((r) => r.method === "PUT");
    expect(hub.requests.findIndex((r) => r.url.includes("/commit/"))).toBeGreaterThan(lastUpload);
    expect(commits()).toHaveLength(1);
  });

  it("uploads several files at once, a bounded number", async () => {
    await startHub();
    // A slow uplink: each 64 KB shard takes about a third of a second to arrive.
    hub.throttle.uploadBytesPerSecondPerConnection = 200_000;
    const { base, target } = await models();
    const result = await makeDelta(options(base, target));
    expect(hub.peak.uploads).toBeGreaterThan(1);
    expect(hub.peak.uploads).toBeLessThanOrEqual(UPLOAD_FILES_AT_ONCE);
    for (const f of Object.keys(result.files)) expect(hub.file(REPO, f)?.equals(await readFile(join(result.delta, f))), f).toBe(true);
  });

  it("sends large objects in parts, several parts at once, through the multipart transfer", async () => {
    await startHub({ multipartThreshold: 40_000, multipartChunkSize: 16 * 1024 });
    hub.throttle.uploadBytesPerSecondPerConnection = 400_000;
    const { base, target } = await models();
    const result = await makeDelta(options(base, target, { maxShardBytes: 100_000 }));
    // the resharded shards are large enough for parts (the fix-ups file may not be)
    const large = Object.entries(result.files).filter(([f, e]) => f.endsWith(".safetensors") && e.size >= 40_000).map(([f]) => f);
    expect(large.filter(isShard).length).toBeGreaterThan(1);
    for (const f of Object.keys(result.files)) expect(hub.file(REPO, f)?.equals(await readFile(join(result.delta, f))), f).toBe(true);
    expect(hub.requests.filter((r) => r.url.startsWith("/__lfs/part/")).length).toBeGreaterThan(large.length);
    expect(hub.requests.filter((r) => r.url.startsWith("/__lfs/complete/")).length).toBe(large.length);
    expect(hub.peak.uploads).toBeGreaterThan(1);
    expect(commits()).toHaveLength(1);
  });

  it("a 500 on one upload stops the make with one line and no commit; the rerun uploads only what the Hub lacks", async () => {
    await startHub();
    const { base, target } = await models();
    const written: WrittenFile[] = [];
    const err = await makeDelta(options(base, target, {
      onFileWritten: async (f) => {
        if (!isShard(f.path)) return;
        written.push(f);
        if (written.length === 1) {
          await stored(f.sha256);
          // from now on the LFS storage fails every upload (each is tried twice)
          hub.inject(/^\/__lfs\/upload\//, { kind: "status", status: 500 }, { method: "PUT", times: 100 });
        } else if (written.length === 2) {
          // Let the second shard's upload meet the 500 before the make goes on.
          const until = Date.now() + 10_000;
          while (!hub.requests.some((r) => r.method === "PUT" && r.url === `/__lfs/upload/${f.sha256}`) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
          await new Promise((r) => setTimeout(r, 100));
        }
      },
    })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    const message = (err as Error).message;
    expect(message).toBe(`Failed to push ${REPO}: the Hub failed (500) on ${written[1]!.path}: try again later`);
    // the make stopped early: no delta.json, locally or on the Hub, and no commit
    expect(written.length).toBeLessThan(4);
    expect(existsSync(join(work, "delta", "delta.json"))).toBe(false);
    expect(commits()).toHaveLength(0);
    expect(hub.headCommit(REPO)?.title).toBe("initial commit");
    const first = written[0]!;
    expect(hub.lfsObjects.has(first.sha256)).toBe(true);

    // The same command again, the Hub healthy: the object it holds is not sent again.
    hub.clearInjections();
    const actionsBefore = hub.uploadActions.length;
    const requestsBefore = hub.requests.length;
    const result = await makeDelta(options(base, target));
    const rerunActions = hub.uploadActions.slice(actionsBefore);
    expect(rerunActions).not.toContain(first.sha256);
    expect(rerunActions.length).toBeGreaterThan(0);
    expect(hub.requests.slice(requestsBefore).some((r) => r.url === `/__lfs/upload/${first.sha256}`)).toBe(false);
    expect(commits()).toHaveLength(1);
    for (const f of Object.keys(result.files)) expect(hub.file(REPO, f)?.equals(await readFile(join(result.delta, f))), f).toBe(true);
  });

  it("the push command sends no object the Hub already holds (a rerun after a failure)", async () => {
    await startHub();
    const { base, target } = await models();
    const made = await makeDelta({ base, target, delta: join(work, "delta") });
    const shards = Object.keys(made.files).filter(isShard).sort();
    const kept = made.files[shards[0]!]!.sha256;
    // an earlier push got this far
    hub.lfsObjects.set(kept, await readFile(join(made.delta, shards[0]!)));
    const pushed = await pushToHub(made.delta, REPO, { accessToken: TOKEN, hubUrl: hub.url });
    expect(hub.uploadActions).not.toContain(kept);
    expect(hub.uploadActions).toHaveLength(Object.keys(made.files).filter((f) => f.endsWith(".safetensors")).length - 1);
    expect(hub.requests.some((r) => r.url === `/__lfs/upload/${kept}`)).toBe(false);
    for (const f of Object.keys(made.files)) expect(hub.file(REPO, f)?.equals(await readFile(join(made.delta, f))), f).toBe(true);
    expect(pushed.files).toContain(shards[0]);
  });

  it("the CLI exits 1 with one line when an upload fails, and commits nothing", async () => {
    await startHub();
    const { base, target } = await models();
    // Refused (400), not failed: nothing to try again, so no note comes before the one line.
    hub.inject(/^\/__lfs\/upload\//, { kind: "status", status: 400 }, { method: "PUT", times: 100 });
    const r = await runCliAsync("make-delta", ["--base", base, "--target", target, "--delta", join(work, "delta"), "--push-to-hub", REPO], { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN, HF_HOME: join(work, "hf") });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: Failed to push ${REPO}: the Hub answered 400 on model-\\d+-of-\\d+\\.safetensors\\n$`));
    expect(commits()).toHaveLength(0);
  });
});
