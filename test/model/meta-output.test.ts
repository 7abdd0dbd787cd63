import { createHash } from "node:crypto";
import { cpSync, existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ModelError, UsageError } from "../../src/errors.js";
import { convertModel } from "../../src/model/convert.js";
import { defaultMetaRanks, metaIntermediateSize, metaParamsJson, planMetaOutput } from "../../src/model/meta-output.js";
import { openModel } from "../../src/model/open-model.js";
import type { ModelSource } from "../../src/model/types.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join("test", "fixtures", "meta-output");
const HF = join(FIXTURES, "hf");
/** SHA-256 of what torch.save wrote, running the script's save path (scripts/make-meta-output-fixtures.py). */
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as Record<string, Record<string, string>>;
const CONFIG = JSON.parse(readFileSync(join(HF, "config.json"), "utf8")) as Record<string, unknown>;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function readWhole(model: ModelSource, name: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of model.readTensor(name)) parts.push(chunk);
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

describe("Meta's layout output (--format meta)", () => {
  for (const ranks of [1, 2]) {
    it(`writes consolidated.NN.pth and params.json byte-identical to the script's torch.save output, ${ranks} rank(s)`, async () => {
      const out = join(await makeTempDir("meta-out-"), "model");
      const result = await convertModel(HF, out, { format: "meta", numShards: ranks });
      const expected = EXPECTED[String(ranks)]!;
      for (const [name, digest] of Object.entries(expected)) {
        expect(sha256(readFileSync(join(out, name))), name).toBe(digest);
      }
      // The tokenizer travels with it, as the script's save_pretrained writes it (a copy of the file).
      expect(readFileSync(join(out, "tokenizer.model"))).toEqual(readFileSync(join(HF, "tokenizer.model")));
      expect(readdirSync(out).filter((f) => !f.startsWith(".")).sort()).toEqual([...Object.keys(expected), "tokenizer.model"].sort());
      expect(result.files.map((f) => f.path)).toContain("params.json");
    });
  }

  // One rank: our Meta reader takes only even splits, and the script gives the last rank the odd output row (see README).
  it("reads back through our Meta reader as the source's tensors (inv_freq dropped)", async () => {
    for (const ranks of [1]) {
      const out = join(await makeTempDir("meta-back-"), "model");
      await convertModel(HF, out, { format: "meta", numShards: ranks });
      await withModel(HF, async (source) =>
        withModel(out, async (back) => {
          const names = [...source.tensors.keys()].filter((n) => !n.endsWith("rotary_emb.inv_freq"));
          expect([...back.tensors.keys()].sort()).toEqual(names.sort());
          for (const name of names) expect(sha256(await readWhole(back, name)), `${ranks} ranks: ${name}`).toBe(sha256(await readWhole(source, name)));
        }),
      );
    }
  });

  it("params.json: the script's table for the four LLaMA sizes, the config's values otherwise", () => {
    const shape = (hidden: number, heads: number, layers: number, normEps: number) => ({ hidden, heads, layers, intermediate: metaIntermediateSize(hidden), vocab: 32000, normEps });
    expect(metaParamsJson(shape(4096, 32, 32, 1e-6))).toBe('{"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1}');
    expect(metaParamsJson(shape(8192, 64, 80, 1e-6))).toBe('{"dim": 8192, "multiple_of": 256, "n_heads": 64, "n_layers": 80, "norm_eps": 1e-05, "vocab_size": -1}');
    expect(metaParamsJson(shape(64, 4, 3, 1e-5))).toBe('{"dim": 64, "multiple_of": 256, "n_heads": 4, "n_layers": 3, "norm_eps": 1e-05, "vocab_size": -1}');
    expect([4096, 5120, 6656, 8192, 64].map(defaultMetaRanks)).toEqual([1, 2, 4, 8, 1]);
    expect([4096, 5120, 6656, 8192].map((d) => metaIntermediateSize(d))).toEqual([11008, 13824, 17920, 22016]);
  });

  it("orders keys as merge_shards does: base files by their L-file names in string order (L1, L10, L2)", async () => {
    await withModel(HF, async (model) => {
      // Pretend the second file is the tenth of ten: its L-file, L10-, sorts before L2-.
      const files = Array.from({ length: 10 }, (_, i) => `pytorch_model-${String(i + 1).padStart(5, "0")}-of-00010.bin`);
      const renamed = new Map([...model.tensors].map(([k, t]) => [k, { ...t, file: t.file.includes("00001") ? files[0]! : files[9]! }]));
      const plan = planMetaOutput("m", { tensors: renamed, weightFiles: files }, CONFIG, 1);
      expect(plan.files[0]!.tensors[0]!.name).toBe("tok_embeddings.weight");
      expect(plan.files[0]!.tensors.map((t) => t.name).slice(0, 10)).toEqual([
        "tok_embeddings.weight", "layers.0.attention.wq.weight", "layers.0.attention.wk.weight", "layers.0.attention.wv.weight", "layers.0.attention.wo.weight",
        "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight", "layers.0.feed_forward.w3.weight", "layers.0.attention_norm.weight", "layers.0.ffn_norm.weight",
      ]);
      const swapped = new Map([...model.tensors].map(([k, t]) => [k, { ...t, file: t.file.includes("00001") ? "pytorch_model-00002-of-00010.bin" : "pytorch_model-00010-of-00010.bin" }]));
      const order = planMetaOutput("m", { tensors: swapped, weightFiles: files }, CONFIG, 1).files[0]!.tensors.map((t) => t.name);
      // L10- (the second layer's file) before L2- (the embeddings' file).
      expect(order[0]).toBe("layers.1.attention.wq.weight");
      expect(order.indexOf("tok_embeddings.weight")).toBeGreaterThan(order.indexOf("output.weight"));
    });
  });

  it("refuses, before any output, what the layout cannot hold", async () => {
    await withModel(HF, async (model) => {
      const plan = (config: Record<string, unknown>, ranks?: number, tensors = model.tensors) => () => planMetaOutput("m", { tensors, weightFiles: model.weightFiles }, { ...CONFIG, ...config }, ranks);
      expect(plan({ model_type: "mistral", architectures: ["MistralForCausalLM"] })).toThrow(/model_type "mistral" is not llama/);
      expect(plan({ num_key_value_heads: 2 })).toThrow(/num_key_value_heads 2 differs from num_attention_heads 4/);
      expect(plan({}, 3)).toThrow(/3 ranks do not divide the hidden size \(32\)/);
      expect(plan({}, 8)).toThrow(/8 ranks do not divide the attention heads \(4\)/);
      expect(plan({ intermediate_size: 300 })).toThrow(/intermediate_size 300 is not what params.json/);
      expect(plan({ num_hidden_layers: 3 })).toThrow(/has no tensor "model.layers.2.self_attn.q_proj.weight"/);
      expect(plan({ rope_scaling: { type: "linear", factor: 2 } })).toThrow(/rope_scaling/);
      const asF64 = new Map([...model.tensors].map(([k, t]) => [k, k === "lm_head.weight" ? { ...t, dtype: "I32" as const } : t]));
      expect(plan({}, 1, asF64)).toThrow(/tensor "lm_head.weight" is I32: Meta's layout holds float16, bfloat16 or float32/);
      const extra = new Map([...model.tensors, ["model.layers.0.self_attn.q_proj.bias", { ...model.tensors.get("model.norm.weight")!, name: "model.layers.0.self_attn.q_proj.bias" }]]);
      expect(plan({}, 1, extra)).toThrow(/"model.layers.0.self_attn.q_proj.bias" has no name in Meta's LLaMA layout/);
      const wrong = new Map([...model.tensors].map(([k, t]) => [k, k === "model.layers.1.mlp.up_proj.weight" ? { ...t, shape: [128, 32] } : t]));
      expect(plan({}, 1, wrong)).toThrow(/"model.layers.1.mlp.up_proj.weight" is \[128, 32\], config.json makes it \[256, 32\]/);
    });
    // Through convert: nothing written.
    const dir = await makeTempDir("meta-refuse-");
    const src = join(dir, "src");
    cpSync(HF, src, { recursive: true });
    writeFileSync(join(src, "config.json"), JSON.stringify({ ...CONFIG, num_key_value_heads: 1 }));
    await expect(convertModel(src, join(dir, "out"), { format: "meta" })).rejects.toThrow(ModelError);
    expect(existsSync(join(dir, "out"))).toBe(false);
    await expect(convertModel(HF, join(dir, "out2"), { format: "pytorch", numShards: 2 })).rejects.toThrow(UsageError);
  });
});
