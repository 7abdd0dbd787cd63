import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ModelError } from "../../src/errors.js";
import { openModel } from "../../src/model/open-model.js";
import type { ModelSource } from "../../src/model/types.js";
import { hasRealdata, realPath } from "../helpers/realdata.js";
import { buildSafetensors } from "../helpers/safetensors-bytes.js";
import { makeTempDir } from "../helpers/temp-dir.js";

async function tensorDigests(model: ModelSource): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [name, info] of model.tensors) {
    const hash = createHash("sha256").update(`${info.dtype} ${info.shape.join("x")}\n`);
    for await (const chunk of model.readTensor(name, { chunkBytes: 1000 })) hash.update(chunk);
    out.set(name, hash.digest("hex"));
  }
  return out;
}

async function withModel<T>(src: string, fn: (m: ModelSource) => Promise<T>): Promise<T> {
  const model = await openModel(src);
  try {
    return await fn(model);
  } finally {
    await model.close();
  }
}

describe.skipIf(!hasRealdata)("real sharded directories agree with their single-file twins", () => {
  it("tiny-llama: the 2-shard copy holds the same 21 tensors, byte for byte", async () => {
    const single = await withModel(realPath("tiny-llama-bf16/model.safetensors"), tensorDigests);
    const sharded = await withModel(realPath("tiny-llama-bf16/sharded"), async (m) => {
      expect(m.indexFile).toBe("model.safetensors.index.json");
      expect(m.weightFiles).toEqual(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
      expect(m.tensors.get("lm_head.weight")?.file).toBe("model-00001-of-00002.safetensors");
      expect(m.tensors.get("model.norm.weight")?.file).toBe("model-00002-of-00002.safetensors");
      return tensorDigests(m);
    });
    expect(sharded.size).toBe(21);
    expect(sharded).toEqual(single);
  });

  it("SafeTensors.jl: the 6 shards hold the 36 tensors of non_sharded/model.safetensors", async () => {
    const single = await withModel(realPath("safetensors-jl-dtypes/non_sharded/model.safetensors"), tensorDigests);
    const sharded = await withModel(realPath("safetensors-jl-dtypes/sharded"), async (m) => {
      expect(m.weightFiles).toHaveLength(6);
      expect(m.metadata.get("model-00003-of-00006.safetensors")).toEqual({ format: "pt" });
      return tensorDigests(m);
    });
    expect(sharded.size).toBe(36);
    expect(sharded).toEqual(single);
  });

  it("a directory with model.safetensors opens it and lists config.json as a travelling file", async () => {
    await withModel(realPath("tiny-llama-bf16"), async (m) => {
      expect(m.format).toBe("safetensors");
      expect(m.weightFiles).toEqual(["model.safetensors"]);
      expect(m.indexFile).toBeUndefined();
      expect(m.extraFiles).toEqual(["config.json"]);
      expect(m.tensors.size).toBe(21);
    });
  });

  it("a single file carries no companion files", async () => {
    await withModel(realPath("tiny-llama-bf16/model.safetensors"), async (m) => {
      expect(m.extraFiles).toEqual([]);
      expect(m.tensors.get("model.norm.weight")?.file).toBe("model.safetensors");
    });
  });
});

/** A sharded model in a temp dir: a.safetensors {x, y}, b.safetensors {z} and an index. */
async function shardedDir(index?: Record<string, string>): Promise<string> {
  const dir = await makeTempDir();
  writeFileSync(join(dir, "a.safetensors"), buildSafetensors([{ name: "x", dtype: "F32", shape: [2] }, { name: "y", dtype: "U8", shape: [3] }]));
  writeFileSync(join(dir, "b.safetensors"), buildSafetensors([{ name: "z", dtype: "BF16", shape: [4] }]));
  const weightMap = index ?? { x: "a.safetensors", y: "a.safetensors", z: "b.safetensors" };
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 19 }, weight_map: weightMap }));
  return dir;
}

describe("index problems", () => {
  it("opens a consistent sharded directory", async () => {
    const dir = await shardedDir();
    await withModel(dir, async (m) => {
      expect([...m.tensors.keys()]).toEqual(["x", "y", "z"]);
      expect(m.weightFiles).toEqual(["a.safetensors", "b.safetensors"]);
    });
  });

  it("opens the directory when SRC names its index file", async () => {
    const dir = await shardedDir();
    await withModel(join(dir, "model.safetensors.index.json"), async (m) => {
      expect(m.indexFile).toBe("model.safetensors.index.json");
      expect(m.tensors.size).toBe(3);
    });
  });

  it("rejects a missing shard", async () => {
    const dir = await shardedDir();
    rmSync(join(dir, "b.safetensors"));
    await expect(openModel(dir)).rejects.toThrow(/lists b\.safetensors, but .*b\.safetensors does not exist/);
  });

  it("rejects a tensor in two shards", async () => {
    const dir = await shardedDir();
    writeFileSync(join(dir, "b.safetensors"), buildSafetensors([{ name: "z", dtype: "BF16", shape: [4] }, { name: "x", dtype: "F32", shape: [2] }]));
    await expect(openModel(dir)).rejects.toThrow(/tensor "x" is in both .*a\.safetensors and .*b\.safetensors/);
  });

  it("rejects an index that puts a tensor in the wrong shard", async () => {
    const dir = await shardedDir({ x: "b.safetensors", y: "a.safetensors", z: "b.safetensors" });
    await expect(openModel(dir)).rejects.toThrow(/puts tensor "x" in b\.safetensors, but it is in a\.safetensors/);
  });

  it("rejects an index listing a tensor no shard holds", async () => {
    const dir = await shardedDir({ x: "a.safetensors", y: "a.safetensors", z: "b.safetensors", w: "b.safetensors" });
    await expect(openModel(dir)).rejects.toThrow(/puts tensor "w" in b\.safetensors, but no shard holds it/);
  });

  it("rejects an index that omits a tensor a shard holds", async () => {
    const dir = await shardedDir({ x: "a.safetensors", z: "b.safetensors" });
    await expect(openModel(dir)).rejects.toThrow(/does not list tensor "y"/);
  });

  it("rejects a shard path escaping the directory with ../", async () => {
    const dir = await shardedDir({ x: "../a.safetensors", y: "a.safetensors", z: "b.safetensors" });
    await expect(openModel(dir)).rejects.toThrow(/names the shard "\.\.\/a\.safetensors", which is outside the model directory/);
  });

  it("rejects an absolute shard path", async () => {
    const dir = await shardedDir({ x: "/etc/passwd", y: "a.safetensors", z: "b.safetensors" });
    await expect(openModel(dir)).rejects.toThrow(/names the shard "\/etc\/passwd", which is outside the model directory/);
  });

  it("rejects a tensor listed twice in weight_map", async () => {
    const dir = await shardedDir();
    writeFileSync(join(dir, "model.safetensors.index.json"), '{"weight_map":{"x":"a.safetensors","x":"b.safetensors"}}');
    await expect(openModel(dir)).rejects.toThrow(/lists tensor "x" twice/);
  });

  it("rejects an index that is not JSON or has no weight_map", async () => {
    const dir = await shardedDir();
    writeFileSync(join(dir, "model.safetensors.index.json"), "{oops");
    await expect(openModel(dir)).rejects.toThrow(ModelError);
    writeFileSync(join(dir, "model.safetensors.index.json"), '{"metadata":{}}');
    await expect(openModel(dir)).rejects.toThrow(/no "weight_map" object/);
  });
});

describe("directories without an index", () => {
  it("reads *.safetensors in name order and refuses a tensor in two files", async () => {
    const dir = await makeTempDir();
    writeFileSync(join(dir, "part-2.safetensors"), buildSafetensors([{ name: "b", dtype: "U8", shape: [1] }]));
    writeFileSync(join(dir, "part-1.safetensors"), buildSafetensors([{ name: "a", dtype: "U8", shape: [1] }]));
    await withModel(dir, async (m) => {
      expect(m.weightFiles).toEqual(["part-1.safetensors", "part-2.safetensors"]);
      expect([...m.tensors.keys()]).toEqual(["a", "b"]);
    });
    writeFileSync(join(dir, "part-3.safetensors"), buildSafetensors([{ name: "a", dtype: "U8", shape: [1] }]));
    await expect(openModel(dir)).rejects.toThrow(/tensor "a" is in both/);
  });

  it("prefers safetensors over a PyTorch checkpoint in the same directory", async () => {
    const dir = await makeTempDir();
    writeFileSync(join(dir, "model.safetensors"), buildSafetensors([{ name: "a", dtype: "U8", shape: [1] }]));
    writeFileSync(join(dir, "pytorch_model.bin"), "not a zip");
    await withModel(dir, async (m) => {
      expect(m.format).toBe("safetensors");
      expect(m.extraFiles).toEqual([]);
    });
  });

  it("refuses a directory with no weights", async () => {
    const dir = await makeTempDir();
    writeFileSync(join(dir, "config.json"), "{}");
    await expect(openModel(dir)).rejects.toThrow(/holds no weight files/);
  });

  it("follows symlinks, as in the Hugging Face cache layout", async () => {
    const dir = await makeTempDir();
    mkdirSync(join(dir, "blobs"));
    mkdirSync(join(dir, "snapshot"));
    writeFileSync(join(dir, "blobs", "abc"), buildSafetensors([{ name: "a", dtype: "U8", shape: [4] }]));
    writeFileSync(join(dir, "blobs", "def"), '{"model_type":"llama"}');
    symlinkSync("../blobs/abc", join(dir, "snapshot", "model.safetensors"));
    symlinkSync("../blobs/def", join(dir, "snapshot", "config.json"));
    await withModel(join(dir, "snapshot"), async (m) => {
      expect(m.extraFiles).toEqual(["config.json"]);
      expect(m.tensors.get("a")?.byteLength).toBe(4);
    });
  });
});

describe.skipIf(!hasRealdata)("copies of real data", () => {
  it("rejects the real tiny-llama index once a shard is deleted", async () => {
    const dir = await makeTempDir();
    cpSync(realPath("tiny-llama-bf16/sharded"), dir, { recursive: true });
    rmSync(join(dir, "model-00002-of-00002.safetensors"));
    await expect(openModel(dir)).rejects.toThrow(/model-00002-of-00002\.safetensors does not exist/);
    expect(readFileSync(join(dir, "model.safetensors.index.json"), "utf8")).toContain("weight_map");
  });
});
