/**
 * The loopback Hub is only worth its tests if the real client accepts its
 * answers: here the client's own readers (which our code does not all use)
 * run against it unchanged.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as client from "@huggingface/hub";
import { FakeHub, gitBlobSha1, sha256Hex } from "./fake-hub-server.js";

let hub: FakeHub;
let commit: string;
const weights = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));
const TOKEN = "hf_fidelity";

beforeAll(async () => {
  hub = await FakeHub.start({ tokens: { [TOKEN]: { user: "alice", write: true } } });
  commit = hub.seed("alice/model", { "model.safetensors": weights, "config.json": '{"a":1}', "sub/x.txt": "x" });
  hub.seed("alice/private", { "config.json": "{}" }, { private: true });
});
afterAll(async () => { await hub.close(); });

describe("the real @huggingface/hub client against the loopback Hub", () => {
  it("modelInfo with the commit sha", async () => {
    const info = await client.modelInfo({ name: "alice/model", hubUrl: hub.url, additionalFields: ["sha"] });
    expect(info.name).toBe("alice/model");
    expect(info.sha).toBe(commit);
  });

  it("listFiles (flat and recursive) and pathsInfo report git oids and LFS sha256", async () => {
    const flat = [];
    for await (const e of client.listFiles({ repo: "alice/model", hubUrl: hub.url })) flat.push(e.path);
    expect(flat.sort()).toEqual([".gitattributes", "config.json", "model.safetensors", "sub"]);
    const info = await client.pathsInfo({ repo: "alice/model", paths: ["model.safetensors", "config.json"], expand: true, hubUrl: hub.url });
    const st = info.find((i) => i.path === "model.safetensors")!;
    expect(st.lfs?.oid).toBe(sha256Hex(weights));
    expect(st.size).toBe(weights.length);
    expect(st.lastCommit?.id).toBe(commit);
    expect(info.find((i) => i.path === "config.json")?.oid).toBe(gitBlobSha1(Buffer.from('{"a":1}')));
    // git's own id of the empty blob: the hashing matches git's object format
    expect(gitBlobSha1(Buffer.alloc(0))).toBe("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
  });

  it("fileDownloadInfo (Range bytes=0-0) and downloadFile with ranged reads through the redirect", async () => {
    const di = await client.fileDownloadInfo({ repo: "alice/model", path: "model.safetensors", hubUrl: hub.url });
    expect(di).toMatchObject({ size: weights.length, etag: `"${sha256Hex(weights)}"` });
    const blob = await client.downloadFile({ repo: "alice/model", path: "model.safetensors", hubUrl: hub.url });
    expect(Buffer.from(await blob!.slice(100, 2100).arrayBuffer()).equals(weights.subarray(100, 2100))).toBe(true);
    expect(Buffer.from(await blob!.arrayBuffer()).equals(weights)).toBe(true);
    expect(await client.fileExists({ repo: "alice/model", path: "nope.json", hubUrl: hub.url })).toBe(false);
  });

  it("repoExists / private repos: hidden without the token, visible with it", async () => {
    expect(await client.repoExists({ repo: "alice/model", hubUrl: hub.url })).toBe(true);
    expect(await client.repoExists({ repo: "alice/private", hubUrl: hub.url })).toBe(false);
    expect(await client.repoExists({ repo: "alice/private", hubUrl: hub.url, accessToken: TOKEN })).toBe(true);
  });

  it("uploadFile then downloadFile round-trips (commit, preupload, LFS batch)", async () => {
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256));
    await client.uploadFile({ repo: "alice/model", file: { path: "extra.safetensors", content: new Blob([bytes]) }, hubUrl: hub.url, accessToken: TOKEN });
    const back = await client.downloadFile({ repo: "alice/model", path: "extra.safetensors", hubUrl: hub.url });
    expect(Buffer.from(await back!.arrayBuffer()).equals(bytes)).toBe(true);
  });
});
