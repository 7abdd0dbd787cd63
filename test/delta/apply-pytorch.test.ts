/**
 * apply-delta --format pytorch: the recovered model as torch.save
 * checkpoints named as save_pretrained names them, each tensor checked as it
 * streams against its sha256 in delta.json (the publisher recorded the
 * safetensors files' digests, which a .bin cannot match).
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { UsageError } from "../../src/errors.js";
import { convertModel } from "../../src/model/convert.js";
import { openModel } from "../../src/model/open-model.js";
import { editedDelta, makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function tensorDigests(path: string): Promise<Map<string, string>> {
  const model = await openModel(path);
  try {
    const digests = new Map<string, string>();
    for (const name of model.tensors.keys()) {
      const hash = createHash("sha256");
      for await (const chunk of model.readTensor(name)) hash.update(chunk);
      digests.set(name, hash.digest("hex"));
    }
    return digests;
  } finally {
    await model.close();
  }
}

let small: SmallDelta;
beforeAll(async () => {
  small = await makeSmallDelta(await makeTempDir());
});

describe("apply-delta --format pytorch", () => {
  it("writes .bin shards and their index, verified tensor by tensor against delta.json", async () => {
    const target = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: small.base, delta: small.delta, target, format: "pytorch" });
    const shards = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"];
    expect(readdirSync(target).filter((n) => !n.startsWith(".")).sort()).toEqual(["config.json", ...shards, "pytorch_model.bin.index.json", "tokenizer_config.json"]);
    expect(result.verified).toBe(true);
    expect(result.files[shards[0]!]!.checkedAgainst).toBe("delta.json's tensor sha256s");
    expect(result.files["config.json"]!.checkedAgainst).toBe("delta.json");
    // Every file's reported sha256 is the file's.
    for (const [path, f] of Object.entries(result.files)) expect(f.sha256, path).toBe(sha256(readFileSync(join(target, path))));
    // The same tensors as the publisher's target, in a model transformers would load (index included).
    expect(await tensorDigests(target)).toEqual(await tensorDigests(small.target));
    const index = JSON.parse(readFileSync(join(target, "pytorch_model.bin.index.json"), "utf8")) as { weight_map: Record<string, string> };
    const safetensorsIndex = JSON.parse(readFileSync(join(small.target, "model.safetensors.index.json"), "utf8")) as { metadata: unknown; weight_map: Record<string, string> };
    expect(index).toEqual({
      metadata: safetensorsIndex.metadata,
      weight_map: Object.fromEntries(Object.entries(safetensorsIndex.weight_map).map(([k, v]) => [k, v.replace(/^model-/, "pytorch_model-").replace(/\.safetensors$/, ".bin")])),
    });
    // Each shard is what convert writes from the publisher's safetensors shard: torch.save's bytes for its tensors.
    const dir = await makeTempDir();
    for (const [i, shard] of shards.entries()) {
      await convertModel(join(small.target, `model-0000${i + 1}-of-00002.safetensors`), join(dir, shard));
      expect(sha256(readFileSync(join(target, shard))), shard).toBe(sha256(readFileSync(join(dir, shard))));
    }
  });

  it("a tensor that does not match its recorded sha256 stops the run, and no .bin gets its name", async () => {
    const dir = await makeTempDir();
    const delta = await editedDelta(small.delta, join(dir, "delta"), (m) => {
      const name = Object.keys(m.target.tensors).find((n) => m.target.tensors[n]!.file === "model-00001-of-00002.safetensors")!;
      m.target.tensors[name]!.sha256 = "0".repeat(64);
    });
    const target = join(dir, "out");
    await expect(applyDelta({ base: small.base, delta, target, format: "pytorch" })).rejects.toThrow(/recovered tensor ".+" of pytorch_model-00001-of-00002\.bin: its sha256 [0-9a-f]{64} does not match 0{64} from delta\.json/);
    expect(existsSync(join(target, "pytorch_model-00001-of-00002.bin"))).toBe(false);
  });

  it("--byteorder-record without --format pytorch is refused, before anything is written", async () => {
    const target = join(await makeTempDir(), "out");
    await expect(applyDelta({ base: small.base, delta: small.delta, target, byteorderRecord: true })).rejects.toThrow(UsageError);
    expect(existsSync(target)).toBe(false);
  });

  it("a byte codec (XOR payload) restores the publisher's own files: --format pytorch is refused", async () => {
    const codecs = fileURLToPath(new URL("../fixtures/codecs/xor/", import.meta.url));
    const target = join(await makeTempDir(), "out");
    await expect(applyDelta({ base: join(codecs, "base"), delta: join(codecs, "payload"), target, format: "pytorch" })).rejects.toThrow(/restores the publisher's own files/);
    expect(existsSync(target)).toBe(false);
  });

  it("a LoRA merge (its own safetensors writer) is refused saying how to get .bin files, not that it restores a publisher's files", async () => {
    const lora = fileURLToPath(new URL("../fixtures/lora/", import.meta.url));
    const target = join(await makeTempDir(), "out");
    const refused = applyDelta({ base: join(lora, "base-f16"), delta: join(lora, "fp16-bin"), target, format: "pytorch" });
    await expect(refused).rejects.toThrow(UsageError);
    await expect(refused).rejects.toThrow(/--format pytorch: the lora convention writes safetensors only; run without --format, then delta-weights convert .* --format pytorch/);
    expect(existsSync(target)).toBe(false);
  });
});
