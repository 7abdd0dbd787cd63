import { createHash } from "node:crypto";
import { cpSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync, renameSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ModelError } from "../../src/errors.js";
import { convertModel } from "../../src/model/convert.js";
import { intermediateSize, parseMetaParams, permutedSourceRow } from "../../src/model/meta-checkpoint.js";
import { openModel } from "../../src/model/open-model.js";
import { pythonFloatOrInt } from "../../src/model/python-json.js";
import type { ModelSource } from "../../src/model/types.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join("test", "fixtures", "meta");

interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: number[];
  sha256: string;
}
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as Record<string, { shards: number; tensors: ExpectedTensor[] }>;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function readWhole(model: ModelSource, name: string, range: { start?: number; end?: number; chunkBytes?: number } = {}): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of model.readTensor(name, range)) {
    if (range.chunkBytes !== undefined) expect(chunk.length).toBeLessThanOrEqual(range.chunkBytes);
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

async function withModel<T>(path: string, use: (model: ModelSource) => Promise<T>): Promise<T> {
  const model = await openModel(path);
  try {
    return await use(model);
  } finally {
    await model.close();
  }
}

describe("a Meta checkpoint reads as transformers' convert_llama_weights_to_hf.py writes it", () => {
  for (const [fixture, expected] of Object.entries(EXPECTED)) {
    it(`${fixture}: every tensor, name, order, dtype and shape bit for bit (${expected.shards} rank${expected.shards > 1 ? "s" : ""})`, async () => {
      await withModel(join(FIXTURES, fixture), async (model) => {
        expect(model.format).toBe("pytorch");
        expect(model.weightFiles).toEqual(Array.from({ length: expected.shards }, (_, i) => `consolidated.0${i}.pth`));
        expect([...model.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }))).toEqual(
          expected.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
        );
        for (const t of expected.tensors) expect(sha256(await readWhole(model, t.name)), t.name).toBe(t.sha256);
      });
    });

    it(`${fixture}: any byte range in any chunk size gives the same bytes`, async () => {
      await withModel(join(FIXTURES, fixture), async (model) => {
        for (const t of expected.tensors.filter((e) => /embed_tokens|layers\.1\.self_attn\.[qk]_proj|down_proj|norm\.weight/.test(e.name))) {
          const whole = await readWhole(model, t.name);
          for (const chunkBytes of [1, 7, 130, 4096]) {
            const start = Math.floor(whole.length / 3) + 1;
            const end = whole.length - 5;
            const part = await readWhole(model, t.name, { start, end, chunkBytes });
            expect(Buffer.from(part).equals(Buffer.from(whole.subarray(start, end))), `${t.name} [${start}, ${end}) in ${chunkBytes}`).toBe(true);
          }
        }
      });
    });
  }

  it("naming one of the rank files opens the whole checkpoint", async () => {
    await withModel(join(FIXTURES, "two-shards", "consolidated.01.pth"), async (model) => {
      expect(model.weightFiles).toEqual(["consolidated.00.pth", "consolidated.01.pth"]);
      const t = EXPECTED["two-shards"]!.tensors[1]!;
      expect(sha256(await readWhole(model, t.name))).toBe(t.sha256);
    });
  });

  it("lists the files the script writes beside the weights, not params.json", async () => {
    await withModel(join(FIXTURES, "one-shard"), async (model) => {
      expect(model.extraFiles).toEqual(["config.json", "generation_config.json", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]);
    });
  });
});

describe("a directory with Hugging Face weights beside Meta's files", () => {
  it("is read by its Hugging Face weights, as transformers would load it", async () => {
    const dir = join(await makeTempDir(), "both");
    cpSync(join(FIXTURES, "one-shard"), dir, { recursive: true });
    await convertModel(join(FIXTURES, "two-shards"), join(dir, "model.safetensors"));
    await withModel(dir, async (model) => {
      expect(model.weightFiles).toEqual(["model.safetensors"]);
      expect(model.readAs).toBeUndefined();
    });
  });
});

describe("convert <meta-dir> <out> writes the Hugging Face model", () => {
  it("tensors bit for bit, config.json and tokenizer files as transformers 4.28 writes them", async () => {
    const out = join(await makeTempDir(), "hf");
    const result = await convertModel(join(FIXTURES, "two-shards"), out);
    expect(result.files.map((f) => f.path).sort()).toEqual(["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]);
    expect(readFileSync(join(out, "config.json"), "utf8")).toBe(`{
  "architectures": [
    "LlamaForCausalLM"
  ],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 64,
  "initializer_range": 0.02,
  "intermediate_size": 256,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "pad_token_id": 0,
  "rms_norm_eps": 1e-06,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.28.1",
  "use_cache": true,
  "vocab_size": 96
}
`);
    expect(readFileSync(join(out, "generation_config.json"), "utf8")).toBe(`{
  "_from_model_config": true,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "pad_token_id": 0,
  "transformers_version": "4.28.1"
}
`);
    const tokenizerConfig = readFileSync(join(out, "tokenizer_config.json"), "utf8");
    expect(tokenizerConfig).toContain('"model_max_length": 1000000000000000019884624838656,\n');
    expect(tokenizerConfig).toContain('"tokenizer_class": "LlamaTokenizer"');
    expect(JSON.parse(readFileSync(join(out, "special_tokens_map.json"), "utf8"))).toEqual({
      bos_token: { content: "<s>", lstrip: false, normalized: true, rstrip: false, single_word: false },
      eos_token: { content: "</s>", lstrip: false, normalized: true, rstrip: false, single_word: false },
      unk_token: { content: "<unk>", lstrip: false, normalized: true, rstrip: false, single_word: false },
    });
    expect(readFileSync(join(out, "tokenizer.model")).equals(readFileSync(join(FIXTURES, "two-shards", "tokenizer.model")))).toBe(true);
    await withModel(out, async (model) => {
      expect(model.metadata.get("model.safetensors")).toEqual({ format: "pt" });
      for (const t of EXPECTED["two-shards"]!.tensors) expect(sha256(await readWhole(model, t.name)), t.name).toBe(t.sha256);
    });
  });

  it("grouped-query attention: num_key_value_heads, the LLaMA-2 context length, bfloat16 ranks written float16", async () => {
    const out = join(await makeTempDir(), "hf");
    await convertModel(join(FIXTURES, "gqa-bf16"), out, { maxShardBytes: 100_000 });
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ num_key_value_heads: 2, intermediate_size: 224, max_position_embeddings: 4096, rms_norm_eps: 1e-5, torch_dtype: "float16" });
    expect(readdirSync(out)).toContain("model.safetensors.index.json");
    await withModel(out, async (model) => {
      for (const t of EXPECTED["gqa-bf16"]!.tensors) expect(sha256(await readWhole(model, t.name)), t.name).toBe(t.sha256);
    });
  });

  it("a checkpoint without tokenizer.model takes the one beside its folder, as Meta laid out its release", async () => {
    const root = await makeTempDir();
    mkdirSync(join(root, "7B"));
    for (const f of ["consolidated.00.pth", "params.json"]) cpSync(join(FIXTURES, "one-shard", f), join(root, "7B", f));
    cpSync(join(FIXTURES, "one-shard", "tokenizer.model"), join(root, "tokenizer.model"));
    const out = join(root, "hf");
    const result = await convertModel(join(root, "7B"), out);
    expect(result.files.map((f) => f.path)).toContain("tokenizer.model");
  });
});

describe("a Meta checkpoint that is not what params.json says is refused by name", () => {
  async function broken(fixture: string, change: (dir: string) => void): Promise<string> {
    const dir = join(await makeTempDir(), fixture);
    cpSync(join(FIXTURES, fixture), dir, { recursive: true });
    change(dir);
    return dir;
  }
  const params = (dir: string, edit: (p: Record<string, unknown>) => void) => {
    const p = JSON.parse(readFileSync(join(dir, "params.json"), "utf8")) as Record<string, unknown>;
    edit(p);
    writeFileSync(join(dir, "params.json"), JSON.stringify(p));
  };

  it("refuses a missing rank file (two-rank shapes read as one rank)", async () => {
    const dir = await broken("two-shards", (d) => rmSync(join(d, "consolidated.01.pth")));
    await expect(openModel(dir)).rejects.toThrow(/holds 32 of dim 64 columns, so the checkpoint has 2 model-parallel files, but 1 are there/);
  });

  it("refuses a gap in the rank files", async () => {
    const dir = await broken("two-shards", (d) => renameSync(join(d, "consolidated.01.pth"), join(d, "consolidated.02.pth")));
    await expect(openModel(dir)).rejects.toThrow(/must be consolidated\.00\.pth to consolidated\.01\.pth, with none missing/);
  });

  it("refuses more layers than the files hold", async () => {
    const dir = await broken("one-shard", (d) => params(d, (p) => (p.n_layers = 3)));
    await expect(openModel(dir)).rejects.toThrow(/consolidated\.00\.pth has no tensor "layers\.2\.attention\.wq\.weight"/);
  });

  it("refuses fewer layers than the files hold", async () => {
    const dir = await broken("one-shard", (d) => params(d, (p) => (p.n_layers = 1)));
    await expect(openModel(dir)).rejects.toThrow(/holds tensor "layers\.1\.attention\.wq\.weight", which a LLaMA checkpoint of 1 layers has not/);
  });

  it("refuses an intermediate size the conversion's config would not fit", async () => {
    const dir = await broken("one-shard", (d) => params(d, (p) => (p.multiple_of = 512)));
    await expect(openModel(dir)).rejects.toThrow(/intermediate size of 512/);
  });

  it("refuses params.json that is not JSON", async () => {
    const dir = await broken("one-shard", (d) => writeFileSync(join(d, "params.json"), "{"));
    await expect(openModel(dir)).rejects.toThrow(ModelError);
  });

  it("leaves no file under a final name when converting a broken checkpoint", async () => {
    const dir = await broken("one-shard", (d) => params(d, (p) => (p.dim = 128)));
    const out = join(await makeTempDir(), "hf");
    await expect(convertModel(dir, out)).rejects.toThrow(/tok_embeddings\.weight/);
    expect(() => readdirSync(out)).toThrow();
  });
});

describe("the conversion's arithmetic", () => {
  it("permute(): rows of a head go from Meta's interleaved pairs to two halves", () => {
    // head of 8 rows: output rows 0..3 take input rows 0,2,4,6; output rows 4..7 take 1,3,5,7
    expect(Array.from({ length: 16 }, (_, r) => permutedSourceRow(r, 8))).toEqual([0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]);
  });

  it("intermediate sizes of every LLaMA-1 size and LLaMA-2 70B", () => {
    const p = (dim: number, extra: Record<string, number> = {}) => parseMetaParams("params.json", JSON.stringify({ dim, n_layers: 1, n_heads: dim / 128, norm_eps: 1e-6, multiple_of: 256, ...extra }));
    expect([4096, 5120, 6656, 8192].map((d) => intermediateSize(p(d)))).toEqual([11008, 13824, 17920, 22016]);
    expect(intermediateSize(p(8192, { ffn_dim_multiplier: 1.3, multiple_of: 4096, n_kv_heads: 8 }))).toBe(28672);
  });

  it("floats as Python's repr writes them", () => {
    expect([1e-6, 1e-5, 0.02, 1.5, 4096, 1e-4, 123456789.25, 1e16 + 2].map(pythonFloatOrInt)).toEqual(["1e-06", "1e-05", "0.02", "1.5", "4096", "0.0001", "123456789.25", "1.0000000000000002e+16"]);
  });
});
