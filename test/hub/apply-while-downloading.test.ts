/**
 * apply-delta with Hub sources reads the delta's and the base's bytes as they
 * arrive: the apply begins while the download is still under way, the result
 * is byte-exact, and an output nothing checks (a legacy delta) waits for its
 * downloaded inputs to be verified, so a corrupted download never leaves a
 * file under a final name. Asserted by the order of events, never by speed.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/api.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import type { ProgressEvent } from "../../src/progress.js";
import { finetune, noise, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { FakeHub } from "./fake-hub-server.js";

let hub: FakeHub;
beforeEach(async () => { hub = await FakeHub.start(); });
afterEach(async () => { await hub.close().catch(() => undefined); });

/** Two 8 MB F16 tensors in two shards. */
function model(seed: number): Tensor[] {
  const next = rng(seed);
  return [0, 1].map((i) => ({ name: `layers.${i}.weight`, dtype: "F16" as const, shape: [1024, 4096], data: noise("F16", 1024 * 4096, 0.02, next) }));
}

async function filesOf(dir: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const name of await readdir(dir)) out[name] = await readFile(join(dir, name));
  return out;
}

describe("apply-delta while the Hub download is under way", () => {
  it("starts writing before the download ends, and recovers the target byte for byte", async () => {
    const work = await makeTempDir();
    const base = model(1);
    await writeModel(join(work, "base"), base, { maxShardBytes: 9 * 1024 * 1024 });
    await writeModel(join(work, "target"), finetune(base, { seed: 2 }), { maxShardBytes: 9 * 1024 * 1024 });
    await makeDelta({ base: join(work, "base"), target: join(work, "target"), delta: join(work, "delta") });
    hub.seed("acme/base", await filesOf(join(work, "base")));
    hub.seed("acme/delta", await filesOf(join(work, "delta")));
    // Slow enough that a download of ~34 MB takes a while over 2 connections.
    hub.throttle.bytesPerSecondPerConnection = 4 * 1024 * 1024;

    const events: ProgressEvent[] = [];
    const out = join(work, "out");
    const result = await applyDelta({
      base: "acme/base", delta: "acme/delta", target: out,
      cacheDir: join(work, "cache"), hubUrl: hub.url,
      transfer: { connections: 2, rangeBytes: 1024 * 1024 },
      onProgress: (e) => events.push(e),
    });
    expect(result.verified).toBe(true);
    const firstApply = events.findIndex((e) => e.kind === "advance" && e.phase === "apply" && e.bytes > 0);
    const lastDownload = events.map((e) => e.kind === "advance" && e.phase === "download").lastIndexOf(true);
    expect(firstApply).toBeGreaterThan(-1);
    expect(firstApply).toBeLessThan(lastDownload);
    const expected = await filesOf(join(work, "target"));
    const got = (await readdir(out)).filter((f) => !f.startsWith(".")).sort();
    expect(got).toEqual(Object.keys(expected).sort());
    for (const [name, bytes] of Object.entries(expected)) expect(sha256Bytes(await readFile(join(out, name))), name).toBe(sha256Bytes(bytes));
  });

  it("a legacy delta whose download turns out corrupted leaves no output under a final name", async () => {
    const fixtures = join(REPO_ROOT, "test/fixtures/conventions");
    const work = await makeTempDir();
    hub.seed("acme/base", await filesOf(join(fixtures, "base/safetensors")));
    const delta = await filesOf(join(fixtures, "fastchat/delta"));
    hub.seed("lmsys/tiny-delta", delta);
    // The second shard's bytes are corrupted in transit: its sha256 fails only when it is complete.
    hub.inject(new RegExp(`^/__lfs/download/${sha256Bytes(delta["pytorch_model-00002-of-00003.bin"]!)}$`), { kind: "corrupt" }, { times: 100 });
    const out = join(work, "out");
    await expect(applyDelta({
      base: "acme/base", delta: "lmsys/tiny-delta", target: out,
      cacheDir: join(work, "cache"), hubUrl: hub.url,
      transfer: { connections: 2, retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 } },
    })).rejects.toThrow(/pytorch_model-00002-of-00003\.bin/);
    expect((await readdir(out).catch(() => [] as string[])).filter((f) => !f.startsWith("."))).toEqual([]);
  });
});
