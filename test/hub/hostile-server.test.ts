/**
 * A Hub (or a man in the middle, or a mirror behind HF_ENDPOINT) that lies:
 * its answers become paths and file names in the cache, so each lie must be
 * refused with one line before anything lands outside the cache or under a
 * final name.
 */
import { lstat, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HubError } from "../../src/errors.js";
import { downloadSnapshot } from "../../src/hub/huggingface/download.js";
import { FakeHub, type FakeHubOptions } from "./fake-hub-server.js";

let hub: FakeHub | undefined;
let cache: string;

beforeEach(async () => {
  cache = await mkdtemp(join(tmpdir(), "dw-hostile-"));
});
afterEach(async () => {
  await hub?.close();
  await rm(cache, { recursive: true, force: true });
});

async function hostile(tamper: NonNullable<FakeHubOptions["tamperTree"]>): Promise<Error> {
  hub = await FakeHub.start({ tamperTree: tamper });
  hub.seed("evil/repo", { "model.safetensors": Buffer.from("weights"), "config.json": "{}" });
  const err = await downloadSnapshot({ repo: "evil/repo", revision: "main" }, { cacheDir: cache, hubUrl: hub.url }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(HubError);
  expect((err as Error).message).not.toContain("\n");
  return err as Error;
}

/** Nothing was written outside the repo's folder in the cache. */
async function cacheHoldsOnlyTheRepo(): Promise<void> {
  const top = await readdir(cache);
  expect(top.every((n) => n === "models--evil--repo")).toBe(true);
}

describe("a hostile Hub", () => {
  it("rejects a listed path that climbs out of the snapshot (../)", async () => {
    const err = await hostile((entries) => entries.map((e) => (e.path === "config.json" ? { ...e, path: "../../../escaped.json" } : e)));
    expect(err.message).toMatch(/listed a file "\.\.\/\.\.\/\.\.\/escaped\.json" that has an empty, '\.' or '\.\.' part/);
    await cacheHoldsOnlyTheRepo();
  });

  it("rejects an absolute listed path", async () => {
    const err = await hostile((entries) => entries.map((e) => (e.path === "config.json" ? { ...e, path: "/tmp/owned.json" } : e)));
    expect(err.message).toMatch(/is not a relative repo path/);
    await cacheHoldsOnlyTheRepo();
  });

  it("rejects an etag that is not a hash (it would become a blob file name)", async () => {
    const err = await hostile((entries) => entries.map((e) => (e.path === "config.json" ? { ...e, oid: "../../refs/main" } : e)));
    expect(err.message).toMatch(/listed config\.json without a valid git oid and size/);
    await cacheHoldsOnlyTheRepo();
  });

  it("rejects a forged LFS sha256", async () => {
    const err = await hostile((entries) => entries.map((e) => (e.lfs !== undefined ? { ...e, lfs: { ...(e.lfs as object), oid: "x".repeat(64) } } : e)));
    expect(err.message).toMatch(/listed model\.safetensors without a valid sha256 and size/);
  });

  it("refuses a body longer than the listed size, leaving no blob", async () => {
    const err = await hostile((entries) => entries.map((e) => (e.lfs !== undefined ? { ...e, size: 3, lfs: { ...(e.lfs as object), size: 3 } } : e)));
    expect(err.message).toBe("Failed to download evil/repo: model.safetensors is larger than the 3 bytes the Hub listed");
    const sha = createHash("sha256").update("weights").digest("hex");
    await expect(lstat(join(cache, "models--evil--repo/blobs", sha))).rejects.toThrow();
  });

  it("refuses bytes that do not match a listed sha256 even when the size is right (lying listing)", async () => {
    const other = "b".repeat(64);
    const err = await hostile((entries) => entries.map((e) => (e.lfs !== undefined ? { ...e, lfs: { ...(e.lfs as object), oid: other } } : e)));
    expect(err.message).toMatch(new RegExp(`model\\.safetensors does not match its sha256 \\(expected ${other}`));
    await expect(lstat(join(cache, "models--evil--repo/blobs", other))).rejects.toThrow();
  });
});
