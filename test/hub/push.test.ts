import { createHash } from "node:crypto";
import { mkdtemp, mkdir, readFile, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HubError } from "../../src/errors.js";
import { pushToHub } from "../../src/api.js";
import type { ProgressEvent } from "../../src/progress.js";
import { FakeHub } from "./fake-hub-server.js";
import { hasRealdata } from "../helpers/realdata.js";

const realdata = resolve(import.meta.dirname, "../../../shared/realdata");
const WRITE = "hf_writer_alice";
const READ_ONLY = "hf_reader_bob";
const SCOPED = "hf_scoped_alice";

let hub: FakeHub;
let work: string;

beforeEach(async () => {
  hub = await FakeHub.start({
    tokens: { [WRITE]: { user: "alice", write: true }, [READ_ONLY]: { user: "bob", write: false }, [SCOPED]: { user: "alice", write: true, canCreate: false } },
    // small bounds so a 300 KB file takes the multipart path with several parts
    multipartThreshold: 150_000,
    multipartChunkSize: 64 * 1024,
  });
  work = await mkdtemp(join(tmpdir(), "dw-push-"));
});

afterEach(async () => {
  await hub.close();
  await rm(work, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A delta folder: real HF-written safetensors as the weights, a delta.json naming a Hub base. */
async function makeDeltaDir(): Promise<string> {
  const dir = join(work, "delta");
  await mkdir(join(dir, "sub"), { recursive: true });
  await copyFile(join(realdata, "tiny-llama-bf16/sharded/model-00001-of-00002.safetensors"), join(dir, "model-00001-of-00002.safetensors"));
  await copyFile(join(realdata, "tiny-llama-bf16/sharded/model-00002-of-00002.safetensors"), join(dir, "model-00002-of-00002.safetensors"));
  await copyFile(join(realdata, "tiny-llama-bf16/sharded/model.safetensors.index.json"), join(dir, "model.safetensors.index.json"));
  await copyFile(join(realdata, "tiny-llama-bf16/config.json"), join(dir, "config.json"));
  await writeFile(join(dir, "sub/notes.txt"), "nested file\n");
  const target = await readFile(join(realdata, "tiny-llama-bf16/model.safetensors"));
  await writeFile(join(dir, "delta.json"), JSON.stringify({
    format: "delta-weights/1",
    codec: "add",
    base: { source: "acme/base-model@main", tensors: {} },
    target: { source: "./my-finetune", files: { "model.safetensors": { size: target.length, sha256: sha256(target) } }, tensors: {}, headers: {} },
    delta: { files: {} },
  }));
  return dir;
}

describe.skipIf(!hasRealdata)("pushToHub against the loopback Hub through @huggingface/hub", () => {
  it("uploads every file byte for byte in one commit, LFS for weights, plus a model card", async () => {
    const dir = await makeDeltaDir();
    const events: ProgressEvent[] = [];
    const result = await pushToHub(dir, "alice/my-delta", { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true, onProgress: (e) => events.push(e) });

    const local = ["config.json", "delta.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "sub/notes.txt"];
    expect(result.files).toEqual(["README.md", ...local].sort());
    expect(result.generatedCard).toBe(true);
    for (const path of local) {
      expect(hub.file("alice/my-delta", path)?.equals(await readFile(join(dir, path))), path).toBe(true);
    }
    // one commit on top of the creation commit
    const head = hub.headCommit("alice/my-delta")!;
    expect(result.commitId).toBe(head.id);
    expect(head.parent).toBeDefined();
    expect(hub.headCommit("alice/my-delta")!.title).toBe("Upload delta weights");
    expect(hub.requests.filter((r) => r.url.includes("/commit/"))).toHaveLength(1);
    // weights went through LFS: the multipart transfer for the 176 KB shard, basic for the 141 KB one
    expect(hub.requests.some((r) => r.url.startsWith("/__lfs/part/"))).toBe(true);
    expect(hub.requests.some((r) => r.url.startsWith("/__lfs/complete/"))).toBe(true);
    expect(hub.requests.some((r) => r.url.startsWith("/__lfs/upload/"))).toBe(true);
    expect(hub.lfsObjects.size).toBe(2);

    const card = hub.file("alice/my-delta", "README.md")!.toString("utf8");
    expect(card.startsWith("---\nbase_model: acme/base-model\nlicense: other\ntags:\n- delta-weights\n---\n")).toBe(true);
    expect(card).toContain("node bin/apply-delta --base acme/base-model@main --delta alice/my-delta --target ./model");
    const target = await readFile(join(realdata, "tiny-llama-bf16/model.safetensors"));
    expect(card).toContain(`| model.safetensors | ${target.length} | \`${sha256(target)}\` |`);

    // progress: one upload phase whose advances add up to every byte
    const start = events.find((e) => e.kind === "start");
    expect(start).toMatchObject({ phase: "upload" });
    const total = events.reduce((s, e) => s + (e.kind === "advance" ? e.bytes : 0), 0);
    expect(total).toBe(start?.kind === "start" ? start.totalBytes : -1);
    expect(new Set(events.filter((e) => e.kind === "advance").map((e) => e.kind === "advance" && e.label))).toContain("model-00001-of-00002.safetensors");
  });

  it("keeps the folder's own README.md instead of generating a card", async () => {
    const dir = join(work, "plain");
    await mkdir(dir);
    await writeFile(join(dir, "README.md"), "# mine\n");
    await writeFile(join(dir, "config.json"), "{}");
    const result = await pushToHub(dir, "alice/plain", { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true });
    expect(result.generatedCard).toBe(false);
    expect(hub.file("alice/plain", "README.md")?.toString()).toBe("# mine\n");
  });

  it("gives a plain folder (no delta.json) a minimal card", async () => {
    const dir = join(work, "plain");
    await mkdir(dir);
    await writeFile(join(dir, "config.json"), "{}");
    await pushToHub(dir, "alice/plain", { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true });
    const card = hub.file("alice/plain", "README.md")!.toString();
    expect(card).toMatch(/^---\nlicense: other\ntags:\n- delta-weights\n---\n/);
    expect(card).not.toContain("base_model");
  });

  it("fails without a token before any request, naming --token, HF_TOKEN and $HF_HOME/token", async () => {
    const dir = await makeDeltaDir();
    const err = await pushToHub(dir, "alice/my-delta", { hubUrl: hub.url, allowNonDelta: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    const message = (err as Error).message;
    expect(message).not.toContain("\n");
    for (const how of ["--token", "HF_TOKEN", "$HF_HOME/token"]) expect(message).toContain(how);
    expect(hub.requests).toHaveLength(0);
  });

  it("tolerates an existing repo (409 on create) and commits on top", async () => {
    hub.seed("alice/existing", { "old.txt": "old" });
    const dir = join(work, "d");
    await mkdir(dir);
    await writeFile(join(dir, "new.txt"), "new");
    await pushToHub(dir, "alice/existing", { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true, message: "second" });
    expect(hub.file("alice/existing", "old.txt")?.toString()).toBe("old");
    expect(hub.file("alice/existing", "new.txt")?.toString()).toBe("new");
    expect(hub.headCommit("alice/existing")?.title).toBe("second");
  });

  it("a token that may write but not create repos pushes to an existing repo (403 on create, then the repo is found)", async () => {
    hub.seed("alice/existing", { "old.txt": "old" });
    const dir = join(work, "d");
    await mkdir(dir);
    await writeFile(join(dir, "new.txt"), "new");
    await pushToHub(dir, "alice/existing", { accessToken: SCOPED, hubUrl: hub.url, allowNonDelta: true });
    expect(hub.file("alice/existing", "new.txt")?.toString()).toBe("new");
    await expect(pushToHub(dir, "alice/missing", { accessToken: SCOPED, hubUrl: hub.url, allowNonDelta: true })).rejects.toThrow(/^Failed to push alice\/missing: .*\(403\)/);
  });

  it("creates a private repo when asked and commits to a new branch", async () => {
    const dir = join(work, "d");
    await mkdir(dir);
    await writeFile(join(dir, "a.txt"), "a");
    await pushToHub(dir, "alice/secret", { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true, private: true, revision: "v1" });
    expect(hub.repos.get("alice/secret")?.private).toBe(true);
    expect(hub.file("alice/secret", "a.txt", "v1")?.toString()).toBe("a");
    expect(hub.file("alice/secret", "a.txt", "main")).toBeUndefined();
  });

  it("a token without write access gets a one-line 403 that says what to do", async () => {
    hub.seed("alice/theirs", { "x.txt": "x" });
    const dir = join(work, "d");
    await mkdir(dir);
    await writeFile(join(dir, "a.txt"), "a");
    const err = (await pushToHub(dir, "alice/theirs", { accessToken: READ_ONLY, hubUrl: hub.url, allowNonDelta: true }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/^Failed to push alice\/theirs: .*403.*write access/);
    expect(err.message).not.toContain("\n");
  });

  it("an unknown token gets a one-line 401", async () => {
    const dir = join(work, "d");
    await mkdir(dir);
    await writeFile(join(dir, "a.txt"), "a");
    const err = (await pushToHub(dir, "alice/x", { accessToken: "hf_unknown", hubUrl: hub.url, allowNonDelta: true }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/401.*--token/);
  });

  it("a 500 mid-upload fails with one line and leaves no commit", async () => {
    const dir = await makeDeltaDir();
    hub.inject(/^\/__lfs\/upload\//, { kind: "status", status: 500 }, { method: "PUT", times: 100 });
    const notices: string[] = [];
    const err = (await pushToHub(dir, "alice/my-delta", {
      accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true, retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 }, onNotice: (m) => notices.push(m),
    }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/^Failed to push alice\/my-delta: the Hub failed \(500\)/);
    expect(err.message).not.toContain("\n");
    // each try but the last was announced
    expect(notices.filter((n) => /the Hub failed \(500\); trying again in .* \(try [23] of 3\)$/.test(n)).length).toBeGreaterThanOrEqual(2);
    expect(hub.requests.filter((r) => r.url.includes("/commit/"))).toHaveLength(0);
    // only the creation commit: nothing half-committed
    expect(hub.headCommit("alice/my-delta")?.title).toBe("initial commit");
    expect(hub.file("alice/my-delta", "delta.json")).toBeUndefined();
  });

  it("tries a failed upload again: a 500, then a reset mid-body, then the object is stored and committed", async () => {
    const dir = await makeDeltaDir();
    hub.inject(/^\/__lfs\/upload\//, { kind: "status", status: 500 }, { method: "PUT" });
    hub.inject(/^\/__lfs\/upload\//, { kind: "reset", afterBytes: 64 * 1024 }, { method: "PUT" });
    const notices: string[] = [];
    const streamed: Extract<ProgressEvent, { kind: "notice" }>[] = [];
    const result = await pushToHub(dir, "alice/my-delta", {
      accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true, retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 }, onNotice: (m) => notices.push(m),
      onProgress: (e) => { if (e.kind === "notice") streamed.push(e); },
    });
    // the same lines, in the same order, arrive on the one progress stream
    expect(streamed.map((e) => e.message)).toEqual(notices);
    expect(streamed.every((e) => e.kind === "notice" && e.source === "upload")).toBe(true);
    expect(notices.some((n) => /the Hub failed \(500\); trying again/.test(n))).toBe(true);
    expect(notices.some((n) => /(connection (reset|closed)|the connection failed); trying again/.test(n))).toBe(true);
    expect(hub.headCommit("alice/my-delta")?.id).toBe(result.commitId);
    for (const f of ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "sub/notes.txt"]) {
      expect(hub.file("alice/my-delta", f)?.equals(await readFile(join(dir, f))), f).toBe(true);
    }
  });

  it("a storage that refuses an upload (403: a presigned link expired) is named as such, not as the token", async () => {
    const dir = await makeDeltaDir();
    hub.inject(/^\/__lfs\/upload\//, { kind: "status", status: 403 }, { method: "PUT", times: 100 });
    const err = (await pushToHub(dir, "alice/my-delta", { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/^Failed to push alice\/my-delta: the LFS storage refused model-0000[12]-of-00002\.safetensors \(403; its upload link may have expired\): run again/);
    expect(err.message).not.toMatch(/token/);
    expect(hub.requests.filter((r) => r.url.includes("/commit/"))).toHaveLength(0);
  });

  it("a connection reset on every try names the file and says a rerun skips what is stored", async () => {
    const dir = await makeDeltaDir();
    hub.inject(/^\/__lfs\/upload\//, { kind: "reset", afterBytes: 1024 }, { method: "PUT", times: 100 });
    const err = (await pushToHub(dir, "alice/my-delta", {
      accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true, retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 },
    }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/^Failed to push alice\/my-delta: model-0000[12]-of-00002\.safetensors: (connection (reset|closed)|the connection failed), every try: run again: objects the Hub already holds are not sent twice$/);
    expect(hub.requests.filter((r) => r.url.includes("/commit/"))).toHaveLength(0);
  });

  it("refuses an invalid repo id before any request", async () => {
    const dir = join(work, "d");
    await mkdir(dir);
    for (const bad of ["noslash", "a/b/c", "alice/../x", "alice/-x", "alice/x.", "al ice/x"]) {
      await expect(pushToHub(dir, bad, { accessToken: WRITE, hubUrl: hub.url, allowNonDelta: true })).rejects.toThrow(/invalid Hub repo id/);
    }
    expect(hub.requests).toHaveLength(0);
  });
});

describe("pushToHub of a folder of many files", () => {
  it("uploads them all, several at once, without a process warning (a warning would break the CLI's one-line output)", async () => {
    const dir = join(work, "many");
    await mkdir(dir, { recursive: true });
    // LFS by size (over the loopback Hub's threshold), some in several parts
    const lfs = await FakeHub.start({ tokens: { [WRITE]: { user: "alice", write: true } }, lfsThreshold: 1024, multipartThreshold: 200_000, multipartChunkSize: 64 * 1024 });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on("warning", onWarning);
    try {
      for (let i = 0; i < 24; i++) await writeFile(join(dir, `part-${String(i).padStart(2, "0")}.bin`), Buffer.alloc(i % 3 === 0 ? 300_000 : 4096 + i, i));
      await pushToHub(dir, "alice/many", { accessToken: WRITE, hubUrl: lfs.url, allowNonDelta: true });
      for (let i = 0; i < 24; i++) {
        const name = `part-${String(i).padStart(2, "0")}.bin`;
        expect(lfs.file("alice/many", name)?.equals(await readFile(join(dir, name))), name).toBe(true);
      }
      await new Promise((r) => setTimeout(r, 50)); // warnings are emitted on the next tick
    } finally {
      process.off("warning", onWarning);
      await lfs.close();
    }
    expect(warnings).toEqual([]);
  });
});
