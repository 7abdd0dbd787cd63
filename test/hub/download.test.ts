import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, realpath, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HubError } from "../../src/errors.js";
import { downloadSnapshot } from "../../src/hub/huggingface/download.js";
import { resolveSource } from "../../src/hub/resolve-source.js";
import type { ProgressEvent } from "../../src/progress.js";
import { FakeHub } from "./fake-hub-server.js";

const OWNER = "hf_owner_alice";
const OTHER = "hf_other_bob";
const GRANTED = "hf_granted_carol";

let hub: FakeHub;
let cache: string;

beforeEach(async () => {
  hub = await FakeHub.start({
    tokens: {
      [OWNER]: { user: "alice", write: true },
      [OTHER]: { user: "bob", write: true },
      [GRANTED]: { user: "carol", write: false, gatedAccess: ["alice/gated"] },
    },
  });
  cache = await mkdtemp(join(tmpdir(), "dw-hfcache-"));
});

afterEach(async () => {
  await hub.close().catch(() => undefined);
  await rm(cache, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** git's blob id, as `git hash-object` computes it (the oracle: git's object format). */
const gitOid = (b: Buffer) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");

/** A small sharded model as a Hub repo holds one (the committed tiny LLaMA of the convention fixtures: no ../shared needed). */
async function tinyLlamaFiles(): Promise<Record<string, Buffer>> {
  const d = resolve(import.meta.dirname, "../fixtures/conventions/base/safetensors");
  return {
    "config.json": await readFile(join(d, "config.json")),
    "model-00001-of-00002.safetensors": await readFile(join(d, "model-00001-of-00002.safetensors")),
    "model-00002-of-00002.safetensors": await readFile(join(d, "model-00002-of-00002.safetensors")),
    "model.safetensors.index.json": await readFile(join(d, "model.safetensors.index.json")),
  };
}

const resolveRequests = () => hub.requests.filter((r) => r.url.includes("/resolve/") || r.url.startsWith("/__lfs/download/"));

describe("downloadSnapshot into the Hugging Face cache layout", () => {
  it("writes blobs/<etag>, relative snapshot links and refs/main exactly like huggingface_hub", async () => {
    const files = await tinyLlamaFiles();
    const commit = hub.seed("alice/tiny-llama", { ...files, "README.md": "# card", "tokenizer_config.json": "{}" });
    const events: ProgressEvent[] = [];
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, onProgress: (e) => events.push(e) });

    const root = join(cache, "models--alice--tiny-llama");
    expect(snap.commit).toBe(commit);
    expect(snap.dir).toBe(join(root, "snapshots", commit));
    expect(await readFile(join(root, "refs/main"), "utf8")).toBe(commit);
    expect(snap.files).toEqual(["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer_config.json"]);
    expect((await readdir(snap.dir)).sort()).toEqual(snap.files);

    for (const [path, bytes] of Object.entries(files)) {
      const lfs = path.endsWith(".safetensors");
      const etag = lfs ? sha256(bytes) : gitOid(bytes);
      const link = join(snap.dir, path);
      expect((await lstat(link)).isSymbolicLink(), path).toBe(true);
      expect(await readlink(link)).toBe(`../../blobs/${etag}`);
      expect((await readFile(join(root, "blobs", etag))).equals(bytes), path).toBe(true);
      expect((await readFile(link)).equals(bytes)).toBe(true);
    }
    expect((await readdir(join(root, "blobs"))).some((n) => n.endsWith(".incomplete"))).toBe(false);
    // README.md and .gitattributes are not model files
    expect(resolveRequests().some((r) => r.url.includes("README.md") || r.url.includes(".gitattributes"))).toBe(false);
    // LFS files come through the "CDN" redirect, with the token-less presigned path
    expect(hub.requests.filter((r) => r.url.startsWith("/__lfs/download/"))).toHaveLength(2);

    // One bar for the whole download: one start with the total, advances as bytes land, one end.
    const starts = events.filter((e) => e.kind === "start");
    expect(starts).toHaveLength(1);
    const total = Object.values(files).reduce((n, b) => n + b.length, 0) + 2; // + tokenizer_config.json "{}"
    expect(starts[0]).toMatchObject({ phase: "download", totalBytes: total });
    const advanced = events.reduce((s, e) => s + (e.kind === "advance" ? e.bytes : 0), 0);
    expect(advanced).toBe(total);
    expect(events.at(-1)).toEqual({ kind: "end", phase: "download" });
    const labels = new Set(events.flatMap((e) => (e.kind === "advance" && e.label !== undefined ? [e.label] : [])));
    expect([...labels].sort()).toEqual(snap.files);
  });

  it("round-trips through resolveSource: the path is the snapshot directory", async () => {
    const commit = hub.seed("alice/tiny-llama", await tinyLlamaFiles());
    const resolved = await resolveSource("alice/tiny-llama", { cacheDir: cache, hubUrl: hub.url });
    expect(resolved.path).toBe(join(cache, "models--alice--tiny-llama/snapshots", commit));
    expect(resolved.source).toBe("alice/tiny-llama");
    expect(resolved.hub?.commit).toBe(commit);
    const forced = await resolveSource(`hf://alice/tiny-llama@${commit}`, { cacheDir: cache, hubUrl: hub.url });
    expect(forced.path).toBe(resolved.path);
  });

  it("takes one weight format: safetensors over .bin, never other frameworks or sub-folders", async () => {
    hub.seed("alice/mixed", {
      "model.safetensors": Buffer.from("st"),
      "pytorch_model.bin": Buffer.from("pt"),
      "tf_model.h5": Buffer.from("tf"),
      "flax_model.msgpack": Buffer.from("fx"),
      "onnx/model.onnx": Buffer.from("ox"),
      "original/consolidated.00.pth": Buffer.from("or"),
      "training_args.bin": Buffer.from("ta"),
      "config.json": "{}",
      "generation_config.json": "{}",
      "tokenizer.json": "{}",
      "tokenizer.model": Buffer.from("sp"),
      "special_tokens_map.json": "{}",
      "README.md": "# card",
    });
    const snap = await downloadSnapshot({ repo: "alice/mixed", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(snap.files).toEqual([
      "config.json", "generation_config.json", "model.safetensors",
      "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
    ]);
  });

  it("takes every file of a delta repo (it is ours), except the card and hidden files", async () => {
    hub.seed("alice/delta", {
      "delta.json": "{}",
      "delta-fixups.safetensors": Buffer.from("fx"),
      "model.safetensors": Buffer.from("d"),
      "config.json": "{}",
      "tokenizer/vocab.txt": "a b",
      "README.md": "# card",
    });
    const snap = await downloadSnapshot({ repo: "alice/delta", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(snap.files).toEqual(["config.json", "delta-fixups.safetensors", "delta.json", "model.safetensors", "tokenizer/vocab.txt"]);
    const offline = await downloadSnapshot({ repo: "alice/delta", revision: "main" }, { cacheDir: cache, offline: true });
    expect(offline.files).toEqual(snap.files);
  });

  it("falls back to pytorch_model*.bin + index when there is no safetensors", async () => {
    hub.seed("alice/old", {
      "pytorch_model-00001-of-00002.bin": Buffer.from("a"),
      "pytorch_model-00002-of-00002.bin": Buffer.from("b"),
      "pytorch_model.bin.index.json": "{}",
      "config.json": "{}",
    });
    const snap = await downloadSnapshot({ repo: "alice/old", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(snap.files).toEqual(["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]);
  });

  it("links nested paths with the right number of ../", async () => {
    const commit = hub.seed("alice/nested", { "sub/dir/notes.txt": "hello\n" });
    const snap = await downloadSnapshot({ repo: "alice/nested", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, files: ["sub/dir/notes.txt"] });
    const link = join(cache, "models--alice--nested/snapshots", commit, "sub/dir/notes.txt");
    expect(await readlink(link)).toBe(`../../../../blobs/${gitOid(Buffer.from("hello\n"))}`);
    expect(await readFile(join(snap.dir, "sub/dir/notes.txt"), "utf8")).toBe("hello\n");
  });

  it("follows the tree listing's Link pagination", async () => {
    await hub.close();
    hub = await FakeHub.start({ treePageSize: 2 });
    const files: Record<string, string> = {};
    for (let i = 0; i < 7; i++) files[`file${i}.json`] = `{"i":${i}}`;
    hub.seed("alice/many", { ...files, "model.safetensors": Buffer.from("w") });
    const snap = await downloadSnapshot({ repo: "alice/many", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(snap.files).toHaveLength(8);
    expect(hub.requests.filter((r) => r.url.includes("/tree/")).length).toBeGreaterThan(3);
  });

  it("records refs/<branch or tag> but no ref for a commit id", async () => {
    const c1 = hub.seed("alice/revs", { "model.safetensors": Buffer.from("one") });
    hub.seed("alice/revs", { "model.safetensors": Buffer.from("two") }, { branch: "v2" });
    const snap = await downloadSnapshot({ repo: "alice/revs", revision: "v2" }, { cacheDir: cache, hubUrl: hub.url });
    const root = join(cache, "models--alice--revs");
    expect(await readFile(join(root, "refs/v2"), "utf8")).toBe(snap.commit);
    expect(await readFile(join(snap.dir, "model.safetensors"), "utf8")).toBe("two");
    await downloadSnapshot({ repo: "alice/revs", revision: c1 }, { cacheDir: cache, hubUrl: hub.url });
    expect((await readdir(join(root, "refs"))).sort()).toEqual(["v2"]);
    expect(await readFile(join(root, "snapshots", c1, "model.safetensors"), "utf8")).toBe("one");
  });
});

describe("sharing the cache with Python's huggingface_hub", () => {
  /** The layout hf_hub_download leaves: blob named by etag, relative link, refs/main without newline. */
  async function pythonCache(repo: string, commit: string, files: Record<string, { bytes: Buffer; lfs: boolean }>): Promise<void> {
    const root = join(cache, `models--${repo.replace("/", "--")}`);
    await mkdir(join(root, "blobs"), { recursive: true });
    await mkdir(join(root, "refs"), { recursive: true });
    await mkdir(join(root, "snapshots", commit), { recursive: true });
    await writeFile(join(root, "refs/main"), commit);
    for (const [path, { bytes, lfs }] of Object.entries(files)) {
      const etag = lfs ? sha256(bytes) : gitOid(bytes);
      await writeFile(join(root, "blobs", etag), bytes);
      await symlink(`../../blobs/${etag}`, join(root, "snapshots", commit, path));
    }
  }

  it("reuses files Python downloaded without requesting them", async () => {
    const files = await tinyLlamaFiles();
    const commit = hub.seed("alice/tiny-llama", files);
    await pythonCache("alice/tiny-llama", commit, {
      "model-00001-of-00002.safetensors": { bytes: files["model-00001-of-00002.safetensors"]!, lfs: true },
      "model-00002-of-00002.safetensors": { bytes: files["model-00002-of-00002.safetensors"]!, lfs: true },
      "config.json": { bytes: files["config.json"]!, lfs: false },
    });
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(snap.downloaded).toEqual(["model.safetensors.index.json"]);
    const fetched = resolveRequests().map((r) => r.url);
    expect(fetched).toHaveLength(1);
    expect(fetched[0]).toContain("/resolve/");
    expect(fetched[0]).toContain("model.safetensors.index.json");
    expect((await readFile(join(snap.dir, "model.safetensors.index.json"))).equals(files["model.safetensors.index.json"]!)).toBe(true);
  });

  it("links a blob Python fetched for another commit instead of downloading it again", async () => {
    const weights = Buffer.from("same weights in both commits");
    const old = hub.seed("alice/evolving", { "model.safetensors": weights, "config.json": "{}" });
    const head = hub.seed("alice/evolving", { "config.json": '{"v":2}' });
    await pythonCache("alice/evolving", old, { "model.safetensors": { bytes: weights, lfs: true } });
    const snap = await downloadSnapshot({ repo: "alice/evolving", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(snap.commit).toBe(head);
    expect(snap.downloaded).toEqual(["config.json"]);
    expect(await readlink(join(snap.dir, "model.safetensors"))).toBe(`../../blobs/${sha256(weights)}`);
    expect(await readFile(join(cache, "models--alice--evolving/refs/main"), "utf8")).toBe(head);
  });

  it("writes what Python reads: blob names equal the X-Linked-Etag / ETag the resolve endpoint sends", async () => {
    const files = await tinyLlamaFiles();
    hub.seed("alice/tiny-llama", files);
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    for (const path of ["config.json", "model-00001-of-00002.safetensors"]) {
      // Python's get_hf_file_metadata: HEAD without following redirects, X-Linked-Etag else ETag
      const res = await fetch(`${hub.url}/alice/tiny-llama/resolve/main/${path}`, { method: "HEAD", redirect: "manual" });
      const etag = (res.headers.get("X-Linked-Etag") ?? res.headers.get("ETag"))!.replace(/^W\//, "").replace(/"/g, "");
      expect(res.headers.get("X-Repo-Commit")).toBe(snap.commit);
      const target = await realpath(join(snap.dir, path));
      expect(target).toBe(await realpath(join(cache, "models--alice--tiny-llama/blobs", etag)));
    }
  });
});

describe("offline (HF_HUB_OFFLINE=1)", () => {
  it("serves a cached snapshot with the server gone and no request", async () => {
    hub.seed("alice/tiny-llama", await tinyLlamaFiles());
    const online = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    const before = hub.requests.length;
    await hub.close();
    const offline = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, offline: true });
    expect(offline.dir).toBe(online.dir);
    expect(offline.files).toEqual(online.files);
    expect(hub.requests.length).toBe(before);
    const viaResolve = await resolveSource(`alice/tiny-llama@${online.commit}`, { cacheDir: cache, offline: true });
    expect(viaResolve.path).toBe(online.dir);
  });

  it("says the repo is not cached", async () => {
    const err = (await downloadSnapshot({ repo: "alice/never", revision: "main" }, { cacheDir: cache, offline: true }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/^Failed to open alice\/never offline: the repo is not in the cache .*HF_HUB_OFFLINE/);
    expect(hub.requests).toHaveLength(0);
  });

  it("names a shard missing from the cached snapshot", async () => {
    hub.seed("alice/tiny-llama", await tinyLlamaFiles());
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    await rm(join(snap.dir, "model-00002-of-00002.safetensors"));
    await expect(downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, offline: true }))
      .rejects.toThrow(/model-00002-of-00002\.safetensors \(listed in model\.safetensors\.index\.json\) is not in the cache/);
  });

  it("treats a link whose blob was deleted as missing", async () => {
    hub.seed("alice/one", { "model.safetensors": Buffer.from("w"), "config.json": "{}" });
    const snap = await downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    await rm(join(cache, "models--alice--one/blobs", sha256(Buffer.from("w"))));
    await expect(downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, offline: true })).rejects.toThrow(/no weight file is in the cache/);
    expect(snap.files).toContain("model.safetensors");
  });

  it("uses the cache when the Hub cannot be reached, like Python", async () => {
    hub.seed("alice/one", { "model.safetensors": Buffer.from("w") });
    const snap = await downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    const url = hub.url;
    await hub.close();
    const again = await downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: url });
    expect(again.dir).toBe(snap.dir);
    const err = (await downloadSnapshot({ repo: "alice/other", revision: "main" }, { cacheDir: cache, hubUrl: url }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/^Failed to download alice\/other: cannot reach http:\/\/127\.0\.0\.1:\d+ .*HF_HUB_OFFLINE=1/);
  });
});

describe("private and gated repos, and the Hub's errors", () => {
  it("downloads a private repo with its owner's token, sending it on every request", async () => {
    hub.seed("alice/private", { "model.safetensors": Buffer.from("secret") }, { private: true });
    const snap = await downloadSnapshot({ repo: "alice/private", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, accessToken: OWNER });
    expect(await readFile(join(snap.dir, "model.safetensors"), "utf8")).toBe("secret");
    const hubRequests = hub.requests.filter((r) => !r.url.startsWith("/__lfs/"));
    expect(hubRequests.length).toBeGreaterThan(0);
    for (const r of hubRequests) expect(r.authorization).toBe(`Bearer ${OWNER}`);
  });

  it("401 for a private repo without a token: log in", async () => {
    hub.seed("alice/private", { "model.safetensors": Buffer.from("secret") }, { private: true });
    const err = (await downloadSnapshot({ repo: "alice/private", revision: "main" }, { cacheDir: cache, hubUrl: hub.url }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toBe("Failed to download alice/private: repository not found, or private (401): check the repo id, and log in: pass a token with --token, HF_TOKEN or $HF_HOME/token");
  });

  it("404 for a repo that does not exist (or another user's private repo)", async () => {
    hub.seed("alice/private", { "model.safetensors": Buffer.from("secret") }, { private: true });
    const err = (await downloadSnapshot({ repo: "alice/private", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, accessToken: OTHER }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/^Failed to download alice\/private: repository not found, or private \(404\): check the repo id, and check that your token/);
  });

  it("401 / 403 for a gated repo: request access", async () => {
    hub.seed("alice/gated", { "model.safetensors": Buffer.from("w") }, { gated: "manual" });
    const noToken = (await downloadSnapshot({ repo: "alice/gated", revision: "main" }, { cacheDir: cache, hubUrl: hub.url }).catch((e: unknown) => e)) as Error;
    expect(noToken.message).toMatch(/^Failed to download alice\/gated: the repo is gated \(401\): request access at http:\/\/127\.0\.0\.1:\d+\/alice\/gated/);
    const denied = (await downloadSnapshot({ repo: "alice/gated", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, accessToken: OTHER }).catch((e: unknown) => e)) as Error;
    expect(denied.message).toMatch(/the repo is gated \(403\): request access/);
    expect(denied.message).not.toContain("\n");
    const ok = await downloadSnapshot({ repo: "alice/gated", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, accessToken: GRANTED });
    expect(ok.files).toEqual(["model.safetensors"]);
  });

  it("404 RevisionNotFound and EntryNotFound say what to check", async () => {
    hub.seed("alice/one", { "model.safetensors": Buffer.from("w") });
    await expect(downloadSnapshot({ repo: "alice/one", revision: "nope" }, { cacheDir: cache, hubUrl: hub.url }))
      .rejects.toThrow('Failed to download alice/one@nope: revision "nope" not found (404): check the branch, tag or commit id');
    await expect(downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, files: ["delta.json"] }))
      .rejects.toThrow("Failed to download alice/one: file delta.json not found in the repo (404): check the repo id and revision");
  });
});

describe("interrupted and corrupted downloads", () => {
  it("retries a download cut short, asking for the rest with a Range request", async () => {
    const files = await tinyLlamaFiles();
    hub.seed("alice/tiny-llama", files);
    const shard = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(shard);
    hub.inject(new RegExp(`^/__lfs/download/${etag}$`), { kind: "truncate", afterBytes: 100_000 });
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, retry: { baseDelayMs: 1 } });
    expect(hub.requests.some((r) => r.url === `/__lfs/download/${etag}` && r.range === "bytes=100000-")).toBe(true);
    expect((await readFile(join(snap.dir, "model-00001-of-00002.safetensors"))).equals(shard)).toBe(true);
  });

  it("after the last try says what failed and that a rerun resumes; the rerun asks only for the rest", async () => {
    const files = await tinyLlamaFiles();
    hub.seed("alice/tiny-llama", files);
    const shard = files["model-00001-of-00002.safetensors"]!;
    const etag = sha256(shard);
    hub.inject(new RegExp(`^/__lfs/download/${etag}$`), { kind: "truncate", afterBytes: 100_000 });
    hub.inject(new RegExp(`^/__lfs/download/${etag}$`), { kind: "truncate", afterBytes: 0 }, { times: 2 });
    const options = { cacheDir: cache, hubUrl: hub.url, retry: { attempts: 3, baseDelayMs: 1 } };
    const err = (await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, options).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toBe(
      `Failed to download alice/tiny-llama: model-00001-of-00002.safetensors was interrupted (connection closed; 3 tries) with 100000 of ${shard.length} bytes kept: run again to resume`,
    );
    const blobs = join(cache, "models--alice--tiny-llama/blobs");
    expect((await stat(join(blobs, `${etag}.dw.incomplete`))).size).toBe(100_000);
    await expect(stat(join(blobs, etag))).rejects.toThrow();

    hub.requests.length = 0;
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect(hub.requests.filter((r) => r.url === `/__lfs/download/${etag}`).map((r) => r.range)).toEqual(["bytes=100000-"]);
    expect((await readFile(join(snap.dir, "model-00001-of-00002.safetensors"))).equals(shard)).toBe(true);
    expect((await readdir(blobs)).filter((n) => n.includes("incomplete"))).toEqual([]);
  });

  it("refuses LFS bytes that do not match their sha256: deletes them, places no blob", async () => {
    const files = await tinyLlamaFiles();
    hub.seed("alice/tiny-llama", files);
    const etag = sha256(files["model-00002-of-00002.safetensors"]!);
    hub.inject(new RegExp(`^/__lfs/download/${etag}$`), { kind: "corrupt" });
    const err = (await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(new RegExp(`^Failed to download alice/tiny-llama: model-00002-of-00002\\.safetensors does not match its sha256 \\(expected ${etag}, got [0-9a-f]{64}\\)`));
    const blobs = join(cache, "models--alice--tiny-llama/blobs");
    await expect(stat(join(blobs, etag))).rejects.toThrow();
    await expect(stat(join(blobs, `${etag}.incomplete`))).rejects.toThrow();
    const commit = hub.headCommit("alice/tiny-llama")!.id;
    await expect(lstat(join(cache, "models--alice--tiny-llama/snapshots", commit, "model-00002-of-00002.safetensors"))).rejects.toThrow();
    // a clean rerun succeeds
    const snap = await downloadSnapshot({ repo: "alice/tiny-llama", revision: "main" }, { cacheDir: cache, hubUrl: hub.url });
    expect((await readFile(join(snap.dir, "model-00002-of-00002.safetensors"))).equals(files["model-00002-of-00002.safetensors"]!)).toBe(true);
  });

  it("checks regular files against their git blob id too", async () => {
    hub.seed("alice/one", { "model.safetensors": Buffer.from("w"), "config.json": '{"hidden_size": 64}' });
    hub.inject(/\/resolve\/[0-9a-f]{40}\/config\.json$/, { kind: "corrupt" });
    await expect(downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: hub.url })).rejects.toThrow(/config\.json does not match its git oid/);
  });

  it("a 500 on a file download is tried again", async () => {
    hub.seed("alice/one", { "model.safetensors": Buffer.from("w") });
    hub.inject(/^\/__lfs\/download\//, { kind: "status", status: 500 });
    const snap = await downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, retry: { baseDelayMs: 1 } });
    expect(await readFile(join(snap.dir, "model.safetensors"), "utf8")).toBe("w");
  });

  it("500s until the last try are one line saying to run again", async () => {
    hub.seed("alice/one", { "model.safetensors": Buffer.from("w") });
    hub.inject(/^\/__lfs\/download\//, { kind: "status", status: 500 }, { times: 10 });
    await expect(downloadSnapshot({ repo: "alice/one", revision: "main" }, { cacheDir: cache, hubUrl: hub.url, retry: { attempts: 2, baseDelayMs: 1 } }))
      .rejects.toThrow("Failed to download alice/one: model.safetensors was interrupted (the Hub failed (500); 2 tries) with 0 of 1 bytes kept: run again to resume");
  });
});

describe("resolveSource", () => {
  it("an existing local path wins over a Hub id of the same shape", async () => {
    const local = join(cache, "org");
    await mkdir(join(local, "name"), { recursive: true });
    const cwd = process.cwd();
    process.chdir(cache);
    try {
      const resolved = await resolveSource("org/name", { cacheDir: cache, hubUrl: hub.url });
      expect(resolved.path).toBe(join(await realpath(cache), "org/name"));
      expect(resolved.hub).toBeUndefined();
    } finally {
      process.chdir(cwd);
    }
    expect(hub.requests).toHaveLength(0);
  });

  it("a Hub-shaped SRC found neither locally nor on the Hub says both", async () => {
    await expect(resolveSource("models/llama", { cacheDir: cache, hubUrl: hub.url }))
      .rejects.toThrow(/^Failed to download models\/llama: repository not found.* \(no local path models\/llama exists either\)$/);
  });
});
