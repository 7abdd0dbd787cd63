/**
 * Meta's original checkpoint as the base of every operation: the
 * conventions' shared base (test/fixtures/conventions/base, a transformers
 * 4.28 conversion) also exists as the Meta checkpoint it was converted from
 * (test/fixtures/meta/conventions-base, made and checked by
 * scripts/make-meta-fixtures.py), so every convention applied from it must
 * give the publisher's tensors bit for bit, and a delta made against one
 * applies from the other.
 */
import { copyFile, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { describeIdentity, identifyModel, mayBeKnownConversion } from "../../src/delta/identify.js";
import { finetune, readAll, writeModel } from "../helpers/finetune.js";
import { runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const CONVENTIONS_DIR = join(REPO_ROOT, "test/fixtures/conventions");
const META_BASE = join(REPO_ROOT, "test/fixtures/meta/conventions-base");
const HF_BASE = join(CONVENTIONS_DIR, "base/safetensors");

interface RecordedTensor { name: string; dtype: string; shape: number[]; sha256: string; rule: string }
interface Run { id: string; tensors: RecordedTensor[] }

async function modernRun(convention: string): Promise<Run> {
  const expected = JSON.parse(await readFile(join(CONVENTIONS_DIR, convention, "expected.json"), "utf8")) as { runs: Run[] };
  return expected.runs.find((r) => r.id === "transformers-4.31/base/safetensors")!;
}

describe("a Meta checkpoint as --base", () => {
  for (const convention of ["fastchat", "fastchat-v0", "alpaca", "llava", "ziya"]) {
    it(`${convention}: every tensor bit-identical to the publisher's script run on the converted base`, async () => {
      const out = join(await makeTempDir(), "out");
      const result = await applyDelta({ base: META_BASE, delta: join(CONVENTIONS_DIR, convention, "delta"), target: out });
      expect(result.convention).toBe(convention);
      const run = await modernRun(convention);
      const got = await readAll(out);
      expect(got.map((t) => t.name).sort()).toEqual(run.tensors.map((t) => t.name).sort());
      for (const t of got) {
        const want = run.tensors.find((w) => w.name === t.name)!;
        expect({ dtype: t.dtype, shape: t.shape, sha256: sha256Bytes(t.data) }, `${t.name} (${want.rule})`).toEqual({ dtype: want.dtype, shape: want.shape, sha256: want.sha256 });
      }
    });
  }

  it("fastchat takes config.json from the base: the one the conversion writes", async () => {
    const out = join(await makeTempDir(), "out");
    await applyDelta({ base: META_BASE, delta: join(CONVENTIONS_DIR, "fastchat/delta"), target: out });
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ hidden_size: 64, intermediate_size: 176, num_key_value_heads: 2, vocab_size: 512, torch_dtype: "float16" });
  });

  it("make-delta --base <meta-dir>: the delta applies, verified, from the Meta checkpoint and from its Hugging Face conversion", async () => {
    const work = await makeTempDir();
    const target = await writeModel(join(work, "target"), finetune(await readAll(HF_BASE), { seed: 7 }), { maxShardBytes: 120_000 });
    const made = await makeDelta({ base: META_BASE, target, delta: join(work, "delta") });
    expect(made.tensors).toBeGreaterThan(0);
    for (const [name, base] of [["meta", META_BASE], ["hf", HF_BASE]] as const) {
      const out = join(work, `out-${name}`);
      const applied = await applyDelta({ base, delta: join(work, "delta"), target: out });
      expect(applied.verified, name).toBe(true);
    }
    // and the other way round: made against the conversion, applied from the Meta checkpoint
    await makeDelta({ base: HF_BASE, target, delta: join(work, "delta-hf") });
    expect((await applyDelta({ base: META_BASE, delta: join(work, "delta-hf"), target: join(work, "out-2") })).verified).toBe(true);
  });

  it("a delta for another size is refused by tensor, naming the base", async () => {
    const out = join(await makeTempDir(), "out");
    const run = runCli(["apply", "--base", join(REPO_ROOT, "test/fixtures/meta/two-shards"), "--delta", join(CONVENTIONS_DIR, "fastchat/delta"), "--target", out]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^error: .*/);
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("identify hashes the rank files (none of these tiny ones is a published file)", async () => {
    const result = await identifyModel(META_BASE);
    expect(result.files.map((f) => f.path)).toEqual(["consolidated.00.pth", "consolidated.01.pth"]);
    expect(result.model).toBeUndefined();
  });

  it("identify names Meta's LLaMA-13B from the published SHA-256 of its two rank files (a Hub cache names blobs by digest)", async () => {
    const repo = join(await makeTempDir(), "models--someone--llama-13b-original");
    const snapshot = join(repo, "snapshots", "0".repeat(40));
    await mkdir(join(repo, "blobs"), { recursive: true });
    await mkdir(snapshot, { recursive: true });
    const published = ["745bf4e29a4dd6f411e72976d92b452da1b49168a4f41c951cfcc8051823cf08", "d5ccbcc465c71c0de439a5aeffebe8344c68a519bce70bc7f9f92654ee567085"];
    for (const [i, digest] of published.entries()) {
      await writeFile(join(repo, "blobs", digest), "not read: the cache named it by its sha256");
      await symlink(`../../blobs/${digest}`, join(snapshot, `consolidated.0${i}.pth`));
    }
    await copyFile(join(META_BASE, "params.json"), join(snapshot, "params.json"));
    const result = await identifyModel(snapshot);
    expect(result.model).toBe("LLaMA-13B (Meta's original checkpoint)");
    expect(describeIdentity(result)).toMatch(/^base: LLaMA-13B \(Meta's original checkpoint\), every weight file's SHA-256 as listed by/);
  });

  it("an apply hashes a Meta base only when its file count is one whose digests are published", async () => {
    expect(["consolidated.00.pth"]).toSatisfy(mayBeKnownConversion);
    expect(["consolidated.00.pth", "consolidated.01.pth"]).toSatisfy(mayBeKnownConversion);
    expect(["consolidated.00.pth", "consolidated.01.pth", "consolidated.02.pth", "consolidated.03.pth"]).toSatisfy(mayBeKnownConversion);
    expect(Array.from({ length: 8 }, (_, i) => `consolidated.0${i}.pth`).some((_, __, all) => mayBeKnownConversion(all))).toBe(false);
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: META_BASE, delta: join(CONVENTIONS_DIR, "fastchat/delta"), target: out });
    expect(result.notes.join("\n")).toMatch(/^base: not a conversion this tool knows/m);
  });

  it("inspect lists the converted tensors", () => {
    const run = runCli(["inspect", META_BASE, "--json"]);
    expect(run.status).toBe(0);
    const doc = JSON.parse(run.stdout) as { format: string; files: string[]; tensors: { name: string; dtype: string }[] };
    expect(doc.files).toEqual(["consolidated.00.pth", "consolidated.01.pth"]);
    expect(doc).toMatchObject({ readAs: expect.stringMatching(/^Meta's original checkpoint, read as transformers' convert_llama_weights_to_hf\.py converts it$/) });
    expect(doc.tensors.map((t) => t.name)).toContain("model.layers.1.self_attn.q_proj.weight");
    expect(doc.tensors.every((t) => t.dtype === "F16")).toBe(true);
  });
});
