import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { formatIndex, planShards, pythonJsonString, shardFileName } from "../../src/formats/shard-plan.js";
import { MAX_TENSORS_PER_FILE } from "../../src/limits.js";
import { hasRealdata, realPath } from "../helpers/realdata.js";

const GB = 1_000_000_000;

function shardsOf(sizes: number[], max: number | undefined): string[][] {
  const tensors = sizes.map((byteLength, i) => ({ name: `t${i}`, byteLength }));
  const plan = planShards(tensors, max);
  return plan.files.map((f) => tensors.filter((t) => plan.assignment.get(t.name) === f).map((t) => t.name));
}

describe("planShards follows huggingface_hub's split_state_dict_into_shards_factory", () => {
  it("splits [6, 6, 2, 6, 2, 2] GB at 10 GB into [6], [6+2], [6+2+2] (the docstring's example)", () => {
    expect(shardsOf([6, 6, 2, 6, 2, 2].map((g) => g * GB), 10 * GB)).toEqual([["t0"], ["t1", "t2"], ["t3", "t4", "t5"]]);
  });

  it("gives a tensor larger than the limit its own shard, before the shard still being filled", () => {
    expect(shardsOf([2, 12, 3, 4], 10)).toEqual([["t1"], ["t0", "t2", "t3"]]);
  });

  it("keeps a tensor exactly at the limit with what fits (only > splits)", () => {
    expect(shardsOf([5, 5, 1], 10)).toEqual([["t0", "t1"], ["t2"]]);
  });

  it("names one shard model.safetensors and several model-0000i-of-0000n.safetensors", () => {
    expect(planShards([{ name: "a", byteLength: 4 }], 100).files).toEqual(["model.safetensors"]);
    expect(planShards([{ name: "a", byteLength: 4 }, { name: "b", byteLength: 4 }], 5).files).toEqual([
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
    ]);
    expect(shardFileName(12, 345)).toBe("model-00012-of-00345.safetensors");
  });

  it("closes a shard at MAX_TENSORS_PER_FILE tensors, with or without a size limit (the writer refuses more)", () => {
    const tensors = Array.from({ length: 2 * MAX_TENSORS_PER_FILE + 1 }, (_, i) => ({ name: `t${i}`, byteLength: 2 }));
    for (const max of [undefined, 10 * GB]) {
      const plan = planShards(tensors, max);
      const counts = plan.files.map((f) => [...plan.assignment.values()].filter((file) => file === f).length);
      expect(counts).toEqual([MAX_TENSORS_PER_FILE, MAX_TENSORS_PER_FILE, 1]);
    }
    expect(planShards(tensors.slice(0, MAX_TENSORS_PER_FILE), undefined).files).toEqual(["model.safetensors"]);
  });

  it("puts everything in one file without a limit, and an empty model in model.safetensors", () => {
    expect(shardsOf([GB, GB, GB], undefined)).toEqual([["t0", "t1", "t2"]]);
    expect(planShards([], 10).files).toEqual(["model.safetensors"]);
  });
});

describe("formatIndex", () => {
  it.skipIf(!hasRealdata)("reproduces the real tiny-llama index (transformers' json.dumps(indent=2, sort_keys=True) + newline) byte for byte", () => {
    const text = readFileSync(realPath("tiny-llama-bf16/sharded/model.safetensors.index.json"), "utf8");
    const index = JSON.parse(text) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    // shuffle the map: the output must not depend on insertion order
    const entries = Object.entries(index.weight_map).reverse();
    expect(formatIndex(index.metadata.total_size, new Map(entries))).toBe(text);
  });

  it("writes an empty weight_map as {}", () => {
    expect(formatIndex(0, new Map())).toBe('{\n  "metadata": {\n    "total_size": 0\n  },\n  "weight_map": {}\n}\n');
  });

  it("escapes like Python's json.dumps with ensure_ascii", () => {
    expect(pythonJsonString('é"\\\n\u007f\u{1F600}/')).toBe('"\\u00e9\\"\\\\\\n\\u007f\\ud83d\\ude00/"');
  });
});
