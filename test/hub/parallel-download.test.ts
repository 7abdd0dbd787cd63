/**
 * Parallel ranged downloads against the loopback Hub: byte-exact results,
 * resumes that keep finished ranges (after SIGKILL too), retries, Retry-After,
 * corrupt ranges and corrupt cached blobs, Python's `.incomplete` prefix, and
 * two processes racing for one blob. Behaviour is asserted, never speed: the
 * server is throttled only to keep a download in flight while the test acts,
 * and released as soon as it has.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HubError } from "../../src/errors.js";
import { ConnectionBudget } from "../../src/hub/transport/connection-budget.js";
import { downloadSnapshot, startSnapshotDownload, type DownloadEvent, type DownloadOptions } from "../../src/hub/huggingface/download.js";
import type { ProgressEvent } from "../../src/progress.js";
import { FakeHub } from "./fake-hub-server.js";

const repoRoot = resolve(import.meta.dirname, "../..");
const KiB = 1024;
const MiB = 1024 * KiB;

let hub: FakeHub;
let cache: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  hub = await FakeHub.start();
  cache = await mkdtemp(join(tmpdir(), "dw-parallel-"));
});

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await hub.close().catch(() => undefined);
  await rm(cache, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const lfsPath = (b: Buffer) => new RegExp(`^/__lfs/download/${sha256(b)}$`);
const blobs = (repo: string) => join(cache, `models--${repo.replace("/", "--")}`, "blobs");

/** A model repo with two LFS shards and small files; returns its files. */
function seedModel(repo: string, shardBytes: [number, number] = [6 * MiB, 3 * MiB]): Record<string, Buffer> {
  const files: Record<string, Buffer> = {
    "config.json": Buffer.from('{"hidden_size": 64}'),
    "model-00001-of-00002.safetensors": randomBytes(shardBytes[0]),
    "model-00002-of-00002.safetensors": randomBytes(shardBytes[1]),
    "model.safetensors.index.json": Buffer.from('{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'),
  };
  hub.seed(repo, files);
  return files;
}

function options(extra: Partial<DownloadOptions> = {}): DownloadOptions {
  return { cacheDir: cache, hubUrl: hub.url, connections: 4, rangeBytes: 256 * KiB, retry: { baseDelayMs: 5, maxDelayMs: 20 }, ...extra };
}

async function expectSnapshotEquals(dir: string, files: Record<string, Buffer>): Promise<void> {
  for (const [path, bytes] of Object.entries(files)) {
    expect((await readFile(join(dir, path))).equals(bytes), path).toBe(true);
  }
}

/** Polls `check` until it returns a value (generous: a loaded machine is slow, never wrong). */
async function until<T>(check: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Bytes a sidecar says are on disk, or undefined if none yet. */
async function sidecarBytes(blobDir: string, etag: string): Promise<number | undefined> {
  try {
    const doc = JSON.parse(await readFile(join(blobDir, `${etag}.dw-ranges.incomplete`), "utf8")) as { ranges: [number, number][] };
    const n = doc.ranges.reduce((s, [a, b]) => s + b - a, 0);
    return n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

interface Child {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  exit: Promise<number | null>;
}

/** The built library (dist/, `npm test` builds it) downloading in its own process. */
function downloadInChild(repo: string, opts: Record<string, unknown>): Child {
  const proc = spawn(process.execPath, [join(repoRoot, "test/hub/download-child.mjs"), JSON.stringify({ repo, options: opts })], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(proc);
  const lines: Record<string, unknown>[] = [];
  let buffered = "";
  proc.stdout!.on("data", (d: Buffer) => {
    buffered += d.toString();
    for (let nl = buffered.indexOf("\n"); nl !== -1; nl = buffered.indexOf("\n")) {
      lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
      buffered = buffered.slice(nl + 1);
    }
  });
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => { stderr += d.toString(); });
  const exit = new Promise<number | null>((done) => proc.on("close", (code) => {
    if (code !== 0 && code !== null) console.error(stderr);
    done(code);
  }));
  return { proc, lines, exit };
}

const childOptions = () => ({ cacheDir: cache, hubUrl: hub.url, connections: 4, rangeBytes: 256 * KiB });

describe("parallel ranged downloads", () => {
  it("fetches several files at once and several ranges of one file at once, byte-exact", async () => {
    const files = seedModel("alice/par");
    // Keeps ranges in flight long enough to overlap: a 1 MiB edge range takes half a
    // second, far longer than a loaded machine takes to start the next file's transfer.
    hub.throttle.bytesPerSecondPerConnection = 2 * MiB;
    const snap = await downloadSnapshot({ repo: "alice/par", revision: "main" }, options());
    await expectSnapshotEquals(snap.dir, files);
    const big = files["model-00001-of-00002.safetensors"]!;
    const ranged = hub.requests.filter((r) => lfsPath(big).test(r.url));
    expect(ranged.length).toBeGreaterThanOrEqual(6 * MiB / (256 * KiB));
    expect(ranged.every((r) => r.range !== undefined && /^bytes=\d+-\d*$/.test(r.range))).toBe(true);
    expect(hub.peak.perPath.get(`/__lfs/download/${sha256(big)}`)).toBeGreaterThan(1);
    expect(hub.peak.distinctPaths).toBeGreaterThan(1);
    // each byte fetched once
    expect(hub.bytesSent(lfsPath(big))).toBe(big.length);
    expect((await readdir(blobs("alice/par"))).filter((n) => n.includes("incomplete"))).toEqual([]);
  });

  it("asks for every large file's first and last bytes (headers, zip directories) before the bulk of any", async () => {
    const files = seedModel("alice/edges");
    const shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"].map((name) => files[name]!);
    hub.throttle.bytesPerSecondPerConnection = 4 * MiB; // the first shard takes ~1.5 s: both files are added long before it ends
    const snap = await downloadSnapshot({ repo: "alice/edges", revision: "main" }, options({ connections: 1 }));
    await expectSnapshotEquals(snap.dir, files);
    const edge = 256 * KiB; // the edges are no longer than a range
    const order = hub.requests.map((r) => shards.findIndex((b) => lfsPath(b).test(r.url)));
    for (const [i, b] of shards.entries()) {
      const ranges = hub.requests.filter((r) => lfsPath(b).test(r.url)).map((r) => r.range);
      expect(ranges.slice(0, 2), `shard ${i + 1}`).toEqual([`bytes=0-${edge - 1}`, `bytes=${b.length - edge}-`]);
    }
    // The second shard's edges come before the last of the first shard's bulk (the files are
    // added to the transfer one after the other, so a few of its ranges may come first).
    expect(order.lastIndexOf(0)).toBeGreaterThan(order.indexOf(1) + 1);
  });

  it("downloads sharing a ConnectionBudget never have more than its size in flight in all", async () => {
    const a = seedModel("alice/share-a");
    const b = seedModel("alice/share-b");
    hub.throttle.bytesPerSecondPerConnection = 8 * MiB; // keeps ranges in flight long enough to overlap
    const connectionBudget = new ConnectionBudget(3);
    const [snapA, snapB] = await Promise.all([
      downloadSnapshot({ repo: "alice/share-a", revision: "main" }, options({ connections: 3, connectionBudget })),
      downloadSnapshot({ repo: "alice/share-b", revision: "main" }, options({ connections: 3, connectionBudget })),
    ]);
    await expectSnapshotEquals(snapA.dir, a);
    await expectSnapshotEquals(snapB.dir, b);
    expect(hub.peak.total).toBeLessThanOrEqual(3);
    expect(hub.peak.total).toBeGreaterThan(1);
    // Without the shared budget the same two downloads run 3 + 3.
    hub.peak.total = 0;
    await rm(cache, { recursive: true, force: true });
    await Promise.all([
      downloadSnapshot({ repo: "alice/share-a", revision: "main" }, options({ connections: 3 })),
      downloadSnapshot({ repo: "alice/share-b", revision: "main" }, options({ connections: 3 })),
    ]);
    expect(hub.peak.total).toBeGreaterThan(3);
  });

  it("carries the bytes through the caller's fetch when one is given", async () => {
    const files = seedModel("alice/own-fetch", [1 * MiB, 256 * KiB]);
    const seen: string[] = [];
    const spy: typeof fetch = (input, init) => {
      seen.push(String(input));
      return fetch(input, init);
    };
    const snap = await downloadSnapshot({ repo: "alice/own-fetch", revision: "main" }, options({ fetch: spy }));
    await expectSnapshotEquals(snap.dir, files);
    expect(seen.filter((u) => u.includes("/__lfs/download/")).length).toBeGreaterThanOrEqual(4);
  });

  it("sends the token to the Hub but not to the CDN host it redirects to", async () => {
    await hub.close();
    hub = await FakeHub.start({ tokens: { hf_owner: { user: "alice", write: true } } });
    hub.seed("alice/private", { "model.safetensors": randomBytes(MiB) }, { private: true });
    // The loopback CDN answers on 127.0.0.1; the client talks to the Hub as "localhost": two origins.
    const hubUrl = hub.url.replace("127.0.0.1", "localhost");
    await downloadSnapshot({ repo: "alice/private", revision: "main" }, options({ hubUrl, accessToken: "hf_owner" }));
    const resolveCalls = hub.requests.filter((r) => r.url.includes("/resolve/"));
    expect(resolveCalls.length).toBeGreaterThan(0);
    for (const r of resolveCalls) expect(r.authorization).toBe("Bearer hf_owner");
    for (const r of hub.requests.filter((q) => q.url.startsWith("/__lfs/download/"))) expect(r.authorization).toBeUndefined();
  });
});

describe("resuming", () => {
  it("keeps every finished range after a SIGKILL: the rerun fetches only the rest", async () => {
    const files = seedModel("alice/kill", [8 * MiB, 512 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(big);
    hub.throttle.bytesPerSecondPerConnection = 256 * KiB;
    const child = downloadInChild("alice/kill", childOptions());
    const kept = await until(() => sidecarBytes(blobs("alice/kill"), etag), "a finished range in the sidecar");
    child.proc.kill("SIGKILL");
    expect(await child.exit).toBe(null);
    // Python would resume from <etag>.incomplete: we never wrote that name.
    expect(existsSync(join(blobs("alice/kill"), `${etag}.incomplete`))).toBe(false);

    hub.throttle.bytesPerSecondPerConnection = undefined;
    hub.requests.length = 0;
    const events: DownloadEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/kill", revision: "main" }, options({ onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    const refetched = hub.bytesSent(lfsPath(big));
    expect(refetched).toBeLessThan(big.length);
    expect(refetched).toBeLessThanOrEqual(big.length - kept);
    expect(events.find((e) => e.kind === "resumed" && e.file === "model-00001-of-00002.safetensors")).toBeDefined();
  });

  it("resumes huggingface_hub's own .incomplete prefix", async () => {
    const files = seedModel("alice/py", [2 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(big);
    const prefix = 700_000;
    await mkdir(blobs("alice/py"), { recursive: true });
    await writeFile(join(blobs("alice/py"), `${etag}.incomplete`), big.subarray(0, prefix));
    const events: DownloadEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/py", revision: "main" }, options({ onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    const ranges = hub.requests.filter((r) => lfsPath(big).test(r.url)).map((r) => Number(/^bytes=(\d+)/.exec(r.range ?? "")?.[1] ?? 0));
    expect(Math.min(...ranges)).toBe(prefix);
    expect(hub.bytesSent(lfsPath(big))).toBe(big.length - prefix);
    expect(events).toContainEqual(expect.objectContaining({ kind: "resumed", bytes: prefix, fromPython: true }));
    expect(existsSync(join(blobs("alice/py"), `${etag}.incomplete`))).toBe(false);
  });

  it("ignores a sidecar that lists ranges out of order (damage), starting that file afresh", async () => {
    const files = seedModel("alice/side", [1 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(big);
    await mkdir(blobs("alice/side"), { recursive: true });
    await writeFile(join(blobs("alice/side"), `${etag}.dw.incomplete`), Buffer.alloc(big.length));
    await writeFile(join(blobs("alice/side"), `${etag}.dw-ranges.incomplete`),
      JSON.stringify({ format: "delta-weights-ranges/1", etag, size: big.length, ranges: [[500, 900], [0, 600]] }));
    const snap = await downloadSnapshot({ repo: "alice/side", revision: "main" }, options());
    await expectSnapshotEquals(snap.dir, files);
    expect(hub.bytesSent(lfsPath(big))).toBe(big.length);
  });
});

describe("transient failures", () => {
  it("retries a connection reset mid-body and resumes the range", async () => {
    const files = seedModel("alice/reset", [2 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    hub.inject(lfsPath(big), { kind: "reset", afterBytes: 100_000 }, { range: /^bytes=262144-/ });
    const events: DownloadEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/reset", revision: "main" }, options({ onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    const retry = events.find((e) => e.kind === "retry");
    expect(retry).toMatchObject({ kind: "retry", file: "model-00001-of-00002.safetensors" });
    expect(retry?.message).toMatch(/^model-00001-of-00002\.safetensors: connection (reset|closed); trying again in [\d.]+ s \(try 2 of 5\)$/);
  });

  it("each notice also arrives on the progress stream, in order, so one subscription sees bars and notices", async () => {
    const files = seedModel("alice/one-stream", [2 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    hub.inject(lfsPath(big), { kind: "reset", afterBytes: 100_000 }, { range: /^bytes=262144-/ });
    const downloadEvents: DownloadEvent[] = [];
    const progress: ProgressEvent[] = [];
    await downloadSnapshot({ repo: "alice/one-stream", revision: "main" }, options({ onEvent: (e) => downloadEvents.push(e), onProgress: (e) => progress.push(e) }));
    const notices = progress.filter((e) => e.kind === "notice");
    expect(downloadEvents.length).toBeGreaterThan(0);
    expect(notices).toEqual(downloadEvents.map((e) => ({ kind: "notice", source: "download", message: e.message, detail: e.kind })));
    // the notice came while the download phase was open, between its start and its end
    const at = progress.indexOf(notices[0]!);
    expect(progress.findIndex((e) => e.kind === "start" && e.phase === "download")).toBeLessThan(at);
    expect(progress.findIndex((e) => e.kind === "end" && e.phase === "download")).toBeGreaterThan(at);
  });

  it("honours a 429's Retry-After: no request goes out before it has passed", async () => {
    const files = seedModel("alice/busy", [1 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    hub.inject(lfsPath(big), { kind: "status", status: 429, retryAfter: "1" });
    const events: DownloadEvent[] = [];
    // One connection: every later request is one our client chose to send after the 429.
    const snap = await downloadSnapshot({ repo: "alice/busy", revision: "main" }, options({ connections: 1, onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    const i = hub.requests.findIndex((r) => lfsPath(big).test(r.url));
    const limited = hub.requests[i]!;
    const after = hub.requests.slice(i + 1);
    expect(after.length).toBeGreaterThan(0);
    // The client waited (Date.now() granularity aside) the second the Hub asked for.
    for (const r of after) expect(r.at - limited.at).toBeGreaterThanOrEqual(990);
    expect(events).toContainEqual(expect.objectContaining({ kind: "retry", reason: "rate limited by the Hub (429)", delayMs: 1000 }));
  });

  it("retries a metadata call the Hub answers with a 503", async () => {
    const files = seedModel("alice/meta", [256 * KiB, 256 * KiB]);
    hub.inject(/^\/api\/models\/alice\/meta\/tree\//, { kind: "status", status: 503 });
    const snap = await downloadSnapshot({ repo: "alice/meta", revision: "main" }, options());
    await expectSnapshotEquals(snap.dir, files);
    expect(hub.requests.filter((r) => r.url.includes("/tree/")).length).toBe(2);
  });

  it("stops at once when Retry-After asks for longer than we wait, saying so", async () => {
    const files = seedModel("alice/later", [1 * MiB, 256 * KiB]);
    hub.inject(lfsPath(files["model-00001-of-00002.safetensors"]!), { kind: "status", status: 429, retryAfter: "3600" });
    await expect(downloadSnapshot({ repo: "alice/later", revision: "main" }, options()))
      .rejects.toThrow(/^Failed to download alice\/later: model-00001-of-00002\.safetensors was interrupted \(rate limited by the Hub \(429\), asked to wait 3600 s\) with \d+ of 1048576 bytes kept: run again to resume$/);
  });

  it("abandons a request that stalls for the read timeout and tries again", async () => {
    const files = seedModel("alice/stall", [1 * MiB, 256 * KiB]);
    hub.inject(lfsPath(files["model-00001-of-00002.safetensors"]!), { kind: "stall", afterBytes: 50_000 }, { range: /^bytes=262144-/ });
    const events: DownloadEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/stall", revision: "main" }, options({ downloadTimeoutMs: 500, onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    expect(events).toContainEqual(expect.objectContaining({ kind: "retry", reason: "no data for 0.5 s" }));
  });

  it("a metadata call past the etag timeout counts as the Hub unreachable: the cache serves, else one line", async () => {
    seedModel("alice/slow", [256 * KiB, 256 * KiB]);
    hub.inject(/^\/api\/models\//, { kind: "stall" });
    const err = (await downloadSnapshot({ repo: "alice/slow", revision: "main" }, options({ etagTimeoutMs: 300 })).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/^Failed to download alice\/slow: cannot reach http:\/\/127\.0\.0\.1:\d+ \(no answer within 0\.3 s\): check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache$/);
    const snap = await downloadSnapshot({ repo: "alice/slow", revision: "main" }, options());
    hub.inject(/^\/api\/models\//, { kind: "stall" });
    const again = await downloadSnapshot({ repo: "alice/slow", revision: "main" }, options({ etagTimeoutMs: 300 }));
    expect(again.dir).toBe(snap.dir);
  });
});

describe("corruption", () => {
  it("a wrong range is caught by the sha256: the file is not linked, one line, and a rerun fetches it again", async () => {
    const files = seedModel("alice/bad", [2 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(big);
    hub.inject(lfsPath(big), { kind: "corrupt" }, { range: /^bytes=524288-/ });
    const err = (await downloadSnapshot({ repo: "alice/bad", revision: "main" }, options()).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(new RegExp(
      `^Failed to download alice/bad: model-00001-of-00002\\.safetensors does not match its sha256 \\(expected ${etag}, got [0-9a-f]{64}\\); the corrupt download was deleted: run again$`));
    const commit = hub.headCommit("alice/bad")!.id;
    await expect(lstat(join(cache, "models--alice--bad/snapshots", commit, "model-00001-of-00002.safetensors"))).rejects.toThrow();
    expect((await readdir(blobs("alice/bad"))).filter((n) => n.startsWith(etag))).toEqual([]);

    hub.requests.length = 0;
    const snap = await downloadSnapshot({ repo: "alice/bad", revision: "main" }, options());
    await expectSnapshotEquals(snap.dir, files);
    expect(hub.bytesSent(lfsPath(big))).toBe(big.length);
  });

  it("moves a truncated cached blob aside and fetches it again, saying so in one line", async () => {
    const files = seedModel("alice/trunc", [1 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(big);
    await downloadSnapshot({ repo: "alice/trunc", revision: "main" }, options());
    await truncate(join(blobs("alice/trunc"), etag), 1000); // a full disk, say
    const events: DownloadEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/trunc", revision: "main" }, options({ onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    const notice = events.find((e) => e.kind === "corrupt-blob");
    expect(notice?.message).toMatch(new RegExp(
      `^model-00001-of-00002\\.safetensors: the cached blob has 1000 bytes, not the 1048576 the Hub lists: moved it to ${etag}\\.corrupt-\\d{8}T\\d{6}Z, fetching it again$`));
    expect((await stat(join(blobs("alice/trunc"), `${etag}.corrupt-${/corrupt-(\S+?),/.exec(notice!.message)![1]}`))).size).toBe(1000);
    expect(snap.downloaded).toEqual(["model-00001-of-00002.safetensors"]);
  });

  it("with verifyCache, finds a blob of the right size but wrong bytes; offline, refuses it in one line", async () => {
    const files = seedModel("alice/rot", [1 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(big);
    await downloadSnapshot({ repo: "alice/rot", revision: "main" }, options());
    const rotten = Buffer.from(big);
    rotten[12345] = rotten[12345]! ^ 1;
    await writeFile(join(blobs("alice/rot"), etag), rotten);

    const offline = (await downloadSnapshot({ repo: "alice/rot", revision: "main" }, { cacheDir: cache, offline: true, verifyCache: true }).catch((e: unknown) => e)) as Error;
    expect(offline).toBeInstanceOf(HubError);
    expect(offline.message).toMatch(new RegExp(
      `^Failed to open alice/rot offline: model-00001-of-00002\\.safetensors in the cache is corrupt \\(its blob has sha256 [0-9a-f]{64}, not its name\\): unset HF_HUB_OFFLINE and run again to fetch it again$`));

    // Without the check only the size is looked at: the blob is reused as is.
    const unchecked = await downloadSnapshot({ repo: "alice/rot", revision: "main" }, options());
    expect(unchecked.downloaded).toEqual([]);

    const events: DownloadEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/rot", revision: "main" }, options({ verifyCache: true, onEvent: (e) => events.push(e) }));
    await expectSnapshotEquals(snap.dir, files);
    expect(events.filter((e) => e.kind === "corrupt-blob").map((e) => e.file)).toEqual(["model-00001-of-00002.safetensors"]);
  });
});

describe("two writers of one blob", () => {
  for (const lockMode of ["auto", "own-file"] as const) {
    it(`a second process waits for the first and never writes the blob (${lockMode} lock)`, async () => {
      const files = seedModel("alice/race", [4 * MiB, 256 * KiB]);
      const big = files["model-00001-of-00002.safetensors"]!;
      hub.throttle.bytesPerSecondPerConnection = 32 * KiB;
      const first = downloadInChild("alice/race", { ...childOptions(), lockMode });
      await until(() => sidecarBytes(blobs("alice/race"), sha256(big)), "the first process to be downloading");
      const second = downloadInChild("alice/race", { ...childOptions(), lockMode });
      await until(() => second.lines.find((l) => (l.event as DownloadEvent | undefined)?.kind === "waiting-for-lock"), "the second process to wait for the lock");
      hub.throttle.bytesPerSecondPerConnection = undefined;
      expect(await first.exit).toBe(0);
      expect(await second.exit).toBe(0);
      for (const c of [first, second]) {
        const done = c.lines.find((l) => l.done !== undefined)?.done as { dir: string };
        await expectSnapshotEquals(done.dir, files);
      }
      expect(hub.bytesSent(lfsPath(big))).toBe(big.length);
    });
  }
});

describe("startSnapshotDownload: using a file while it downloads", () => {
  it("returns at once; ranges can be awaited and read before the file is verified and linked", async () => {
    const files = seedModel("alice/stream", [2 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    hub.throttle.bytesPerSecondPerConnection = 32 * KiB;
    const download = await startSnapshotDownload({ repo: "alice/stream", revision: "main" }, options());
    expect(download.files).toEqual(Object.keys(files).sort());
    const file = download.file("model-00001-of-00002.safetensors");
    expect(file.size).toBe(big.length);
    expect(file.partialPath).toBe(join(blobs("alice/stream"), `${sha256(big)}.dw.incomplete`));
    await file.waitForPrefix(64 * KiB);
    const handle = await file.open();
    try {
      const head = Buffer.alloc(64 * KiB);
      await handle.read(head, 0, head.length, 0);
      expect(head.equals(big.subarray(0, head.length))).toBe(true);
    } finally {
      await handle.close();
    }
    // Still throttled: the file cannot be complete yet, so it is not in the snapshot.
    await expect(lstat(file.snapshotPath)).rejects.toThrow();
    hub.throttle.bytesPerSecondPerConnection = undefined;
    await file.waitForRange(big.length - 10, big.length);
    expect(await file.complete).toBe(file.snapshotPath);
    expect((await readFile(file.snapshotPath)).equals(big)).toBe(true);
    const snap = await download.done;
    expect(snap.downloaded).toEqual(Object.keys(files).sort());
    await expect(file.waitForRange(0, big.length + 1)).rejects.toThrow(RangeError);
  });

  it("the bytes of files already in the cache can be awaited at once (a rerun reads them as soon as it starts)", async () => {
    const files = seedModel("alice/cached", [1 * MiB, 256 * KiB]);
    await downloadSnapshot({ repo: "alice/cached", revision: "main" }, options());
    const download = await startSnapshotDownload({ repo: "alice/cached", revision: "main" }, options());
    for (const path of ["model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"]) {
      const file = download.file(path);
      await file.waitForRange(0, file.size); // never notified before the fix: the apply hung
      const handle = await file.open();
      try {
        const bytes = Buffer.alloc(file.size);
        await handle.read(bytes, 0, bytes.length, 0);
        expect(bytes.equals(files[path]!), path).toBe(true);
      } finally {
        await handle.close();
      }
    }
    expect((await download.done).downloaded).toEqual([]);
  });

  it("a file that fails rejects its waits and its completion with the one-line error", async () => {
    const files = seedModel("alice/fails", [1 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    hub.inject(lfsPath(big), { kind: "corrupt" }, { range: /^bytes=262144-/ });
    const download = await startSnapshotDownload({ repo: "alice/fails", revision: "main" }, options());
    const file = download.file("model-00001-of-00002.safetensors");
    await expect(file.complete).rejects.toThrow(/does not match its sha256/);
    await expect(download.done).rejects.toThrow(/does not match its sha256/);
    await expect(file.waitForRange(0, big.length)).rejects.toThrow(/does not match its sha256/);
  });

  it("cancel() stops with the cache resumable", async () => {
    const files = seedModel("alice/cancel", [2 * MiB, 256 * KiB]);
    const big = files["model-00001-of-00002.safetensors"]!;
    hub.throttle.bytesPerSecondPerConnection = 32 * KiB;
    const download = await startSnapshotDownload({ repo: "alice/cancel", revision: "main" }, options());
    await download.file("model-00001-of-00002.safetensors").waitForPrefix(32 * KiB);
    await download.cancel();
    await expect(download.done).rejects.toThrow("Failed to download alice/cancel: stopped before the end; run again to resume");
    const kept = (await sidecarBytes(blobs("alice/cancel"), sha256(big)))!;
    expect(kept).toBeGreaterThanOrEqual(32 * KiB);
    hub.throttle.bytesPerSecondPerConnection = undefined;
    hub.requests.length = 0;
    const snap = await downloadSnapshot({ repo: "alice/cancel", revision: "main" }, options());
    await expectSnapshotEquals(snap.dir, files);
    expect(hub.bytesSent(lfsPath(big))).toBeLessThanOrEqual(big.length - kept);
  });
});

describe("a repo of many files", () => {
  it("locks and fetches every blob at once without a process warning (a warning would break the CLI's one-line output)", async () => {
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 24; i++) files[`shard-${String(i).padStart(2, "0")}.bin`] = randomBytes(64 * KiB + i);
    hub.seed("alice/many", files);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on("warning", onWarning);
    try {
      const snap = await downloadSnapshot({ repo: "alice/many", revision: "main" }, options({ select: "delta", signal: new AbortController().signal }));
      await expectSnapshotEquals(snap.dir, files);
      await new Promise((r) => setTimeout(r, 50)); // warnings are emitted on the next tick
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings).toEqual([]);
  });
});
