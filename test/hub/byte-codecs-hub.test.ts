/**
 * Byte-codec releases as the Hub holds them: Open-Assistant's payload in a
 * sub-folder named after the repo, Pygmalion's in xor_encoded_files/, .enc
 * files at the top; only the card and the publisher's script beside them.
 * apply-delta fetches the payload (online, then from the cache offline) and
 * recovers the model byte for byte.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/api.js";
import { CODECS, sha256Of } from "../helpers/codecs.js";
import { FakeHub } from "./fake-hub-server.js";

let hub: FakeHub;
let work: string;
beforeEach(async () => {
  hub = await FakeHub.start({ tokens: {} });
  work = await mkdtemp(join(tmpdir(), "dw-codecs-hub-"));
});
afterEach(async () => {
  await hub.close().catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

/** The files of a fixture folder, under `prefix` in the repo. */
async function filesOf(dir: string, prefix: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const name of await readdir(dir)) out[`${prefix}${name}`] = await readFile(join(dir, name));
  return out;
}

const card = { "README.md": "# a release\n", "xor_codec.py": "# the publisher's script\n" };

describe("byte-codec releases from the Hub", () => {
  const cases = [
    { repo: "alice/oa-xor", files: () => filesOf(join(CODECS, "xor/payload"), "oa-xor/"), base: "xor/base", target: "xor/target", sums: "xor/md5sums-output.txt" },
    { repo: "alice/pyg-xor", files: () => filesOf(join(CODECS, "xor-plain-json/payload/xor_encoded_files"), "xor_encoded_files/"), base: "xor-plain-json/base", target: "xor-plain-json/target", sums: "xor-plain-json/sha256sums-output.txt" },
    { repo: "alice/alpaca-enc", files: () => filesOf(join(CODECS, "enc/enc"), ""), base: "enc/key/consolidated.00.pth", target: "enc/plain", sums: "enc/md5sums-plain.txt" },
  ];
  for (const c of cases) {
    it(`${c.repo}: the payload is fetched, recovered byte-identical, and again from the cache offline`, async () => {
      hub.seed(c.repo, { ...card, ...(await c.files()) });
      const cacheDir = join(work, "cache");
      for (const offline of [false, true]) {
        const target = join(work, `out-${offline ? "offline" : "online"}`);
        const result = await applyDelta({ base: join(CODECS, c.base), delta: c.repo, target, checksums: join(CODECS, c.sums), cacheDir, offline, ...(offline ? {} : { hubUrl: hub.url }) });
        expect(result.verified).toBe(true);
        const names = (await readdir(join(CODECS, c.target))).sort();
        expect((await readdir(target)).filter((f) => !f.startsWith(".")).sort()).toEqual(names);
        for (const name of names) expect(sha256Of(await readFile(join(target, name))), name).toBe(sha256Of(await readFile(join(CODECS, c.target, name))));
        expect(result.notes.join("\n")).not.toContain("published list");
      }
    });
  }

  it("picks the card's list by the repo id, and tells a user whose base is not the card's conversion so, in the card's words", async () => {
    // The fixture payload under the real release's repo id: its base is not
    // Open-Assistant's LLaMA-30B conversion, and the built-in list says so.
    hub.seed("OpenAssistant/oasst-sft-6-llama-30b-xor", { ...card, ...(await filesOf(join(CODECS, "xor/payload"), "oasst-sft-6-llama-30b-xor/")) });
    const target = join(work, "out-oa-card");
    await expect(applyDelta({ base: join(CODECS, "xor/base"), delta: "OpenAssistant/oasst-sft-6-llama-30b-xor", target, cacheDir: join(work, "cache"), hubUrl: hub.url }))
      .rejects.toThrow(/^wrong base: .*xor\/base\/generation_config\.json has md5 2917a1cafb895cf57e746cfd7696bfe5, but the md5 list on the model card of OpenAssistant\/oasst-sft-6-llama-30b-xor gives aee09e21813368c49baaece120125ae3 for the base's generation_config\.json: your base is not the conversion the payload was made from.*the base must be Meta's LLaMA-30B converted with transformers commit d04ec99bec8a0b432fc03ed60cea9a1a20ebaf3c/);
    // Nothing at all: the target the run created goes with it.
    expect(await readdir(target).catch(() => [])).toEqual([]);
  });

  it("leaves a sibling release's payload alone: nothing to choose between two folders", async () => {
    hub.seed("alice/two", { ...card, ...(await filesOf(join(CODECS, "xor/payload"), "a/")), ...(await filesOf(join(CODECS, "xor/payload"), "b/")) });
    await expect(applyDelta({ base: join(CODECS, "xor/base"), delta: "alice/two", target: join(work, "out-two"), cacheDir: join(work, "cache"), hubUrl: hub.url }))
      .rejects.toThrow(/follows no delta convention/);
  });
});
