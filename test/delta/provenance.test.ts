/**
 * "Did this come from the Hub?" is answered once, by the resolver (a
 * LocalSource's `hub`), never guessed below from whether the name exists
 * on disk: a local directory may be named like a repo id, and a download's
 * name never exists on disk.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { releaseEvidence, namesRepo } from "../../src/delta/conventions/release-evidence.js";
import { LocalDeltaView } from "../../src/delta/conventions/view.js";
import { publicSourceName } from "../../src/delta/own/source-name.js";
import type { ModelSource } from "../../src/model/types.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const REPO = "OpenAssistant/oasst-sft-6-llama-30b-xor";

describe("where a delta came from", () => {
  it("a download's view carries the repo the resolver fetched it from, and its evidence names that repo", async () => {
    const dir = await makeTempDir();
    const view = new LocalDeltaView({ path: dir, source: `hf://${REPO}@main`, hub: { repo: REPO } }, { path: dir, source: dir });
    expect(view.hubRepo).toBe(REPO);
    const evidence = releaseEvidence(view);
    expect(evidence.hubRepo).toBe(REPO);
    expect(namesRepo(evidence, REPO)).toBeDefined();
  });

  it("a local directory whose given name does not exist from here is not taken for a Hub repo", async () => {
    const dir = await makeTempDir();
    // the name the user gave is relative to another working directory: existsSync would have said "remote"
    const view = new LocalDeltaView({ path: dir, source: "some-org/some-delta" }, { path: dir, source: dir });
    expect(view.hubRepo).toBeUndefined();
    expect(releaseEvidence(view).hubRepo).toBeUndefined();
  });
});

describe("how delta.json names a model", () => {
  async function modelDir(config: object): Promise<string> {
    const dir = join(await makeTempDir(), "my-local-llama");
    await mkdir(dir);
    await writeFile(join(dir, "config.json"), JSON.stringify(config));
    return dir;
  }
  const opened = (root: string, source: string) => ({ root, source }) as unknown as ModelSource;

  it("a Hub snapshot is named by the repo id as given", async () => {
    const dir = await modelDir({ _name_or_path: "/home/someone/llama" });
    expect(await publicSourceName(opened(dir, "hf://org/tuned@v2"), { path: dir, source: "hf://org/tuned@v2", hub: { repo: "org/tuned" } })).toBe("org/tuned@v2");
  });

  it("a local directory never publishes its path, even when its given name is not a path from here", async () => {
    const dir = await modelDir({ _name_or_path: "/home/someone/llama" });
    expect(await publicSourceName(opened(dir, "org/looks-like-a-repo"), { path: dir, source: "org/looks-like-a-repo" })).toBe("my-local-llama");
  });

  it("a local directory is named by its config's repo id when it has one", async () => {
    const dir = await modelDir({ _name_or_path: "meta-llama/Llama-2-7b-hf" });
    expect(await publicSourceName(opened(dir, dir), { path: dir, source: dir })).toBe("meta-llama/Llama-2-7b-hf");
  });
});
