/**
 * apply-delta --no-cache-delta (cacheDelta: false): a delta from the Hub is
 * fetched into a scratch folder in the target a file at a time, each file
 * deleted once the outputs made from it are done, and never enters the HF
 * cache. Disk use is sampled while the apply runs; the bytes the loopback Hub
 * sent say which files were fetched at all.
 */
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { applyDelta, STREAMED_DELTA_DIR } from "../../src/api.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import type { ProgressEvent } from "../../src/progress.js";
import { startSnapshotDownload } from "../../src/hub/huggingface/download.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { finetune, noise, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { FakeHub } from "./fake-hub-server.js";

let hub: FakeHub;
beforeEach(async () => { hub = await FakeHub.start(); });
afterEach(async () => { await hub.close().catch(() => undefined); });

const SHARDS = 4;
/** One 16 MiB F16 tensor per shard: every shard is a large file (over the 8 MiB a download fetches whole and first). */
function model(seed: number): Tensor[] {
  const next = rng(seed);
  return Array.from({ length: SHARDS }, (_, i) => ({ name: `layers.${i}.weight`, dtype: "F16" as const, shape: [2048, 4096], data: noise("F16", 2048 * 4096, 0.02, next) }));
}

async function filesOf(dir: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const name of await readdir(dir)) out[name] = await readFile(join(dir, name));
  return out;
}

/** Bytes on disk (allocated blocks: partial downloads are sparse) under `dir`. */
async function diskBytes(dir: string): Promise<number> {
  let n = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (!entry.isFile()) continue;
    n += await stat(join(entry.parentPath, entry.name)).then((s) => s.blocks * 512, () => 0);
  }
  return n;
}

async function setUp() {
  const work = await makeTempDir();
  const base = model(1);
  await writeModel(join(work, "base"), base, { maxShardBytes: 17 * 1024 * 1024 });
  await writeModel(join(work, "target"), finetune(base, { seed: 2 }), { maxShardBytes: 17 * 1024 * 1024 });
  await makeDelta({ base: join(work, "base"), target: join(work, "target"), delta: join(work, "delta") });
  const delta = await filesOf(join(work, "delta"));
  hub.seed("acme/delta", delta);
  return { work, delta };
}

async function expectTargetExact(work: string, out: string): Promise<void> {
  const expected = await filesOf(join(work, "target"));
  expect((await readdir(out)).sort()).toEqual(Object.keys(expected).sort()); // the scratch folder is gone too
  for (const [name, bytes] of Object.entries(expected)) expect(sha256Bytes(await readFile(join(out, name))), name).toBe(sha256Bytes(bytes));
}

describe("apply-delta --no-cache-delta", () => {
  it("holds about one delta file on disk at a time, keeps none in the HF cache, and recovers the target byte for byte", async () => {
    const { work, delta } = await setUp();
    const shard = Math.max(...Object.values(delta).map((b) => b.length));
    const whole = Object.values(delta).reduce((n, b) => n + b.length, 0);
    // Slow enough that the disk is sampled many times while the delta streams.
    hub.throttle.bytesPerSecondPerConnection = 10 * 1024 * 1024;
    const out = join(work, "out");
    const scratch = join(out, STREAMED_DELTA_DIR);
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await diskBytes(scratch));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const result = await applyDelta({
      base: join(work, "base"), delta: "acme/delta", target: out, cacheDelta: false,
      cacheDir: join(work, "cache"), hubUrl: hub.url,
      transfer: { connections: 3, rangeBytes: 1024 * 1024 },
    }).finally(() => { sampling = false; });
    await sampler;
    expect(result.verified).toBe(true);
    await expectTargetExact(work, out);
    // The file being read, and the first and last MiB of the others (planning read their headers).
    expect(peak).toBeGreaterThan(shard);
    expect(peak).toBeLessThanOrEqual(shard + (SHARDS - 1) * 2 * 1024 * 1024 + 1024 * 1024);
    expect(peak).toBeLessThan(whole / 2);
    expect(await readdir(join(work, "cache")).catch(() => [])).not.toContain("models--acme--delta");
  });

  it("a rerun fetches only the delta files of outputs still missing", async () => {
    const { work, delta } = await setUp();
    const out = join(work, "out");
    const options = { base: join(work, "base"), delta: "acme/delta", target: out, cacheDelta: false, cacheDir: join(work, "cache"), hubUrl: hub.url };
    await applyDelta(options);
    const lost = "model-00003-of-00004.safetensors";
    await rm(join(out, lost));
    const sentBefore = new Map(Object.entries(delta).map(([name, bytes]) => [name, hub.bytesSent(new RegExp(sha256Bytes(bytes)))]));

    const events: ProgressEvent[] = [];
    const result = await applyDelta({ ...options, onProgress: (e) => events.push(e) });
    expect(result.files[lost]?.status).toBe("written");
    // One download bar, and it ends full: the files never fetched count as done, not as missing.
    const total = events.reduce((n, e) => n + (e.kind === "start" && e.phase === "download" ? e.totalBytes : 0), 0);
    const advanced = events.reduce((n, e) => n + (e.kind === "advance" && e.phase === "download" ? e.bytes : 0), 0);
    expect(total).toBeGreaterThan(0);
    expect(advanced).toBe(total);
    expect(Object.values(result.files).filter((f) => f.status === "kept")).toHaveLength(Object.keys(result.files).length - 1);
    await expectTargetExact(work, out);
    for (const [name, bytes] of Object.entries(delta)) {
      const sent = hub.bytesSent(new RegExp(sha256Bytes(bytes))) - sentBefore.get(name)!;
      if (name === lost) expect(sent, name).toBeGreaterThanOrEqual(bytes.length);
      else if (bytes.length > 8 * 1024 * 1024) expect(sent, name).toBeLessThanOrEqual(2 * 1024 * 1024); // its first and last MiB, for planning
    }
  });

  it("a few bytes read from a file not yet fetched (a zip entry's header) are fetched alone; readers done, the rest is never fetched", async () => {
    const work = await makeTempDir();
    const big = Buffer.alloc(12 * 1024 * 1024, 7);
    big.writeUInt32LE(0xdeadbeef, 5 * 1024 * 1024);
    hub.seed("acme/blob", { "pytorch_model.bin": big, "config.json": "{}" });
    const download = await startSnapshotDownload({ repo: "acme/blob", revision: "main" }, {
      cacheDir: join(work, "scratch"), hubUrl: hub.url, select: "delta", stream: true, connections: 2,
    });
    const file = download.file("pytorch_model.bin");
    await file.waitForRange(5 * 1024 * 1024, 5 * 1024 * 1024 + 4);
    const handle = await file.open();
    const four = Buffer.alloc(4);
    await handle.read(four, 0, 4, 5 * 1024 * 1024);
    await handle.close();
    expect(four.readUInt32LE(0)).toBe(0xdeadbeef);
    download.stream!.finish();
    await download.done;
    const sent = hub.bytesSent(new RegExp(sha256Bytes(big)));
    // Its first and last MiB, and the 64 KiB around the read.
    expect(sent).toBeGreaterThanOrEqual(4);
    expect(sent).toBeLessThanOrEqual(2 * 1024 * 1024 + 64 * 1024);
    await expect(file.complete).rejects.toThrow(/not downloaded \(no reader needed it\)/);
  });

  it("into a directory of someone else's files: refused, and leaves nothing there", async () => {
    const { work } = await setUp();
    const out = join(work, "theirs");
    await mkdir(out);
    await writeFile(join(out, "notes.txt"), "mine\n");
    await expect(applyDelta({ base: join(work, "base"), delta: "acme/delta", target: out, cacheDelta: false, cacheDir: join(work, "cache"), hubUrl: hub.url }))
      .rejects.toThrow(/is not empty/);
    expect(await readdir(out)).toEqual(["notes.txt"]);
    // and a target it created itself goes again (here: the delta repo does not exist)
    await expect(applyDelta({ base: join(work, "base"), delta: "acme/no-such-delta", target: join(work, "new"), cacheDelta: false, cacheDir: join(work, "cache"), hubUrl: hub.url }))
      .rejects.toThrow(/not found/);
    expect(await readdir(work)).not.toContain("new");
  });

  it("is refused, not ignored, for a local delta: a usage error (exit 2), one line", async () => {
    const { work } = await setUp();
    await expect(applyDelta({ base: join(work, "base"), delta: join(work, "delta"), target: join(work, "out"), cacheDelta: false }))
      .rejects.toThrow(/--no-cache-delta: the delta .* is a local path/);
    const cli = runCli(["--base", join(work, "base"), "--delta", join(work, "delta"), "--target", join(work, "out"), "--no-cache-delta"], "apply-delta");
    expect(cli.status).toBe(2);
    expect(oneErrorLine(cli)).toMatch(/--no-cache-delta: the delta .* is a local path, not a Hub repo/);
    expect(await readdir(work)).not.toContain("out");
  });
});
