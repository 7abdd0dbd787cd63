import { mkdtemp, mkdir, writeFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { hubSettings } from "../../src/cli/hub-options.js";

let home: string;
beforeEach(async () => { home = await mkdtemp(join(tmpdir(), "dw-home-")); });
afterEach(async () => { await rm(home, { recursive: true, force: true }); });

describe("Hub settings from flags and the environment (as huggingface_hub reads them)", () => {
  it("defaults: ~/.cache/huggingface/hub, no token, online", () => {
    expect(hubSettings({}, {}, home)).toEqual({ cacheDir: join(home, ".cache/huggingface/hub"), offline: false });
  });

  it("HF_HOME moves the cache and the token file; HF_HUB_CACHE wins for the cache", async () => {
    const hfHome = join(home, "hf");
    await mkdir(hfHome);
    await writeFile(join(hfHome, "token"), "hf_from_file\n");
    expect(hubSettings({}, { HF_HOME: hfHome }, home)).toEqual({ token: "hf_from_file", cacheDir: join(hfHome, "hub"), offline: false });
    expect(hubSettings({}, { HF_HOME: hfHome, HF_HUB_CACHE: "/c" }, home).cacheDir).toBe("/c");
    expect(hubSettings({}, { XDG_CACHE_HOME: "/xdg" }, home).cacheDir).toBe("/xdg/huggingface/hub");
  });

  it("--token beats HF_TOKEN beats the token file", async () => {
    await mkdir(join(home, ".cache/huggingface"), { recursive: true });
    await writeFile(join(home, ".cache/huggingface/token"), "hf_file");
    expect(hubSettings({ token: "hf_flag" }, { HF_TOKEN: "hf_env" }, home).token).toBe("hf_flag");
    expect(hubSettings({}, { HF_TOKEN: "hf_env" }, home).token).toBe("hf_env");
    expect(hubSettings({}, {}, home).token).toBe("hf_file");
  });

  it("HF_ENDPOINT without its trailing slash; HF_HUB_OFFLINE truthy values", () => {
    expect(hubSettings({}, { HF_ENDPOINT: "https://mirror.example/" }, home).hubUrl).toBe("https://mirror.example");
    for (const v of ["1", "true", "YES", "on"]) expect(hubSettings({}, { HF_HUB_OFFLINE: v }, home).offline, v).toBe(true);
    for (const v of ["0", "", "false", "no"]) expect(hubSettings({}, { HF_HUB_OFFLINE: v }, home).offline, v).toBe(false);
  });
});
