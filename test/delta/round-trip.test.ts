import { readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { TINY_LLAMA, convert, finetune, readAll, writeModel } from "../helpers/finetune.js";
import { REALDATA, hasRealdata } from "../helpers/realdata.js";
import { makeTempDir as tempDir } from "../helpers/temp-dir.js";

const CONFIG = join(REALDATA, "tiny-llama-bf16/config.json");

async function filesOf(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) out[name] = sha256Bytes(await readFile(join(dir, name)));
  return out;
}

describe.skipIf(!hasRealdata)("make-delta then apply-delta recovers the target byte for byte", () => {
  for (const dtype of ["BF16", "F16", "F32"] as const) {
    for (const codec of ["add", "xor"] as const) {
      it(`${dtype}, codec ${codec}, vocabulary +1, base in 3 shards, target in 2`, async () => {
        const work = await tempDir();
        const base = (await readAll(TINY_LLAMA)).map((t) => convert(t, dtype));
        // Noise as large as the weights, so that many sums round away from the target and need fix-ups.
        const target = finetune(base, { growRows: 1, seed: 7, scale: 0.03 });
        const totalBytes = base.reduce((n, t) => n + t.data.length, 0);
        await writeModel(join(work, "base"), base, { maxShardBytes: Math.ceil(totalBytes / 3) + 1 });
        await writeModel(join(work, "target"), target, {
          maxShardBytes: Math.ceil(totalBytes / 2) + 4096,
          companions: { "config.json": await readFile(CONFIG, "utf8"), "tokenizer_config.json": "{}\n" },
        });
        const made = await makeDelta({ base: join(work, "base"), target: join(work, "target"), delta: join(work, "delta"), codec });
        expect(made.tensors).toBe(target.length);
        if (codec === "add" && dtype !== "F32") expect(made.fixups).toBeGreaterThan(0);

        // No delta tensor equals its base tensor.
        const deltaTensors = await readAll(join(work, "delta"));
        for (const d of deltaTensors) {
          const b = base.find((t) => t.name === d.name)!;
          expect(Buffer.compare(d.data, b.data), d.name).not.toBe(0);
        }

        const applied = await applyDelta({ base: join(work, "base"), delta: join(work, "delta"), target: join(work, "out") });
        expect(applied.verified).toBe(true);
        expect(await filesOf(join(work, "out"))).toEqual(await filesOf(join(work, "target")));
      });
    }
  }

  it("works on the real Hugging Face-written base, target a single file", async () => {
    const work = await tempDir();
    const target = finetune(await readAll(TINY_LLAMA), { seed: 99, scale: 0.03 });
    await writeModel(join(work, "target"), target, { metadata: null });
    const made = await makeDelta({ base: TINY_LLAMA, target: join(work, "target"), delta: join(work, "delta") });
    expect(made.fixups).toBeGreaterThan(0);
    const applied = await applyDelta({ base: TINY_LLAMA, delta: join(work, "delta"), target: join(work, "out") });
    expect(applied.verified).toBe(true);
    expect(await filesOf(join(work, "out"))).toEqual(await filesOf(join(work, "target")));
  });
});

describe("PyTorch .bin models in make-delta", () => {
  const LEGACY = join(import.meta.dirname, "../fixtures/legacy");

  it("a .bin base (2 shards, torch.save) recovers the safetensors target byte for byte", async () => {
    const work = await tempDir();
    const base = join(LEGACY, "f16/base-bin");
    const target = join(LEGACY, "f16/target");
    await makeDelta({ base, target, delta: join(work, "delta") });
    const applied = await applyDelta({ base, delta: join(work, "delta"), target: join(work, "out") });
    expect(applied.verified).toBe(true);
    expect(await filesOf(join(work, "out"))).toEqual(await filesOf(target));
  });

  it("a .bin target is recovered as safetensors holding exactly its tensors", async () => {
    const work = await tempDir();
    const base = join(LEGACY, "bf16/base-bin");
    const target = join(LEGACY, "bf16/delta-bin"); // any .bin model will do as a target
    await makeDelta({ base, target, delta: join(work, "delta") });
    const applied = await applyDelta({ base, delta: join(work, "delta"), target: join(work, "out") });
    expect(applied.verified).toBe(true);
    expect(Object.keys(applied.files).sort()).toEqual(
      ["config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"],
    );
    const want = new Map((await readAll(target)).map((t) => [t.name, t]));
    const got = await readAll(join(work, "out"));
    expect(got).toHaveLength(want.size);
    for (const t of got) expect(Buffer.compare(t.data, want.get(t.name)!.data), t.name).toBe(0);
  });
});

describe.skipIf(!hasRealdata)("every dtype, on real files written by Hugging Face's serializer", () => {
  const JL = join(REALDATA, "safetensors-jl-dtypes");

  for (const codec of ["add", "xor"] as const) {
    it(`recovers a 12-dtype file (F8, integers, bool by XOR; floats by ${codec}) with its metadata header, byte for byte`, async () => {
      const work = await tempDir();
      const base = join(JL, "non_sharded/model.numpy.safetensors"); // 9 dtypes: lacks BF16 and the F8 pair
      const target = join(JL, "non_sharded/model.with_metadata.safetensors");
      const made = await makeDelta({ base, target, delta: join(work, "delta"), codec });
      expect(made.added.sort()).toEqual(["bfloat16_3", "bfloat16_35", "bfloat16_357", "float8_e4m3fn_3", "float8_e4m3fn_35", "float8_e4m3fn_357", "float8_e5m2_3", "float8_e5m2_35", "float8_e5m2_357"]);
      const applied = await applyDelta({ base, delta: join(work, "delta"), target: join(work, "out") });
      expect(applied.verified).toBe(true);
      expect(sha256Bytes(await readFile(join(work, "out/model.with_metadata.safetensors")))).toBe(sha256Bytes(await readFile(target)));
    });
  }
});

describe.skipIf(!hasRealdata)("make-delta into a directory holding an earlier delta", () => {
  it("replaces the earlier delta's files (no stale shard left to push) and keeps the user's own", async () => {
    const work = await tempDir();
    const target = join(work, "target");
    await writeModel(target, finetune(await readAll(TINY_LLAMA), { seed: 21 }), { metadata: null });
    const delta = join(work, "delta");
    await makeDelta({ base: TINY_LLAMA, target, delta, maxShardBytes: 100_000 });
    const resharded = (await readdir(delta)).filter((f) => f.startsWith("model-"));
    expect(resharded.length).toBeGreaterThan(1);
    await writeFile(join(delta, "NOTES.txt"), "mine\n");

    const again = await makeDelta({ base: TINY_LLAMA, target, delta });
    const expected = ["NOTES.txt", "delta.json", "model.safetensors", ...(again.fixups > 0 ? ["delta-fixups.safetensors"] : [])];
    expect((await readdir(delta)).sort()).toEqual(expected.sort());
    const applied = await applyDelta({ base: TINY_LLAMA, delta, target: join(work, "out") });
    expect(applied.verified).toBe(true);
  });
});
