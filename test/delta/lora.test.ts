/**
 * LoRA adapters merged into a base (test/fixtures/lora, made with PyTorch by
 * scripts/make-lora-fixtures.py following PEFT's merge as read from its
 * source): recognised from adapter_config.json, every output tensor
 * bit-identical to torch's merge for both PEFT generations, the base's
 * layout kept, side files chosen, and what cannot be merged refused by name
 * before any output.
 */
import { existsSync } from "node:fs";
import { cp, mkdir, open, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { MERGE_RECORD_FILE } from "../../src/delta/adapters/merge-record.js";
import { verifyModel } from "../../src/delta/own/verify-model.js";
import { readAll } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join(REPO_ROOT, "test/fixtures/lora");
const BASE = join(FIXTURES, "base-f16");

interface Expected { merges: Record<string, Record<string, Record<string, string>>> }
const expected = JSON.parse(await readFile(join(FIXTURES, "expected.json"), "utf8")) as Expected;

async function merge(adapter: string, convention?: string) {
  const target = join(await makeTempDir("lora-"), "out");
  const result = await applyDelta({ base: BASE, delta: join(FIXTURES, adapter), target, ...(convention === undefined ? {} : { convention }) });
  return { target, result };
}

describe("LoRA adapters merged as PEFT merges them", () => {
  for (const adapter of ["fp16-bin", "bf16-rslora", "fp32-qlora"]) {
    for (const convention of ["lora", "lora-base-dtype"]) {
      it(`${adapter}, ${convention}: every tensor bit-identical to torch's merge`, async () => {
        const { target, result } = await merge(adapter, convention === "lora" ? undefined : convention);
        expect(result.convention).toBe(convention);
        const want = expected.merges[adapter]![convention]!;
        const got = Object.fromEntries((await readAll(target)).map((t) => [t.name, sha256Bytes(t.data)]));
        const wrong = Object.keys(want).filter((name) => got[name] !== want[name]);
        expect(wrong).toEqual([]);
        expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
      });
    }
  }

  it("the two PEFT generations differ where the update is rounded twice (a half-precision base)", () => {
    const a = expected.merges["fp16-bin"]!.lora!;
    const b = expected.merges["fp16-bin"]!["lora-base-dtype"]!;
    expect(Object.keys(a).filter((k) => a[k] !== b[k]).length).toBeGreaterThan(0);
  });

  it("keeps the base's shards and index, its config, and the adapter's tokenizer files; says unverified", async () => {
    const { target, result } = await merge("bf16-rslora");
    const files = (await readdir(target)).filter((f) => !f.startsWith(".")).sort();
    expect(files).toEqual(["config.json", "delta-weights-merge.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer_config.json"]);
    expect(await readFile(join(target, "config.json"), "utf8")).toBe(await readFile(join(BASE, "config.json"), "utf8"));
    expect(JSON.parse(await readFile(join(target, "tokenizer_config.json"), "utf8")).from).toBe("adapter");
    expect(existsSync(join(target, "adapter_config.json"))).toBe(false);
    expect(result.verified).toBe(false);
    expect(result.reason).toMatch(/adapter_config\.json/);
  });

  it("copies the tensors no adapter touches byte for byte", async () => {
    const { target } = await merge("fp16-bin");
    const base = new Map((await readAll(BASE)).map((t) => [t.name, sha256Bytes(t.data)]));
    const out = new Map((await readAll(target)).map((t) => [t.name, sha256Bytes(t.data)]));
    expect(out.get("model.layers.0.self_attn.k_proj.weight")).toBe(base.get("model.layers.0.self_attn.k_proj.weight"));
    expect(out.get("model.layers.0.self_attn.q_proj.weight")).not.toBe(base.get("model.layers.0.self_attn.q_proj.weight"));
  });
});

describe("the merge's record", () => {
  it("lists every output file and tensor; verify re-checks them and names a tensor that changed", async () => {
    const { target, result } = await merge("bf16-rslora");
    const record = join(target, MERGE_RECORD_FILE);
    const checked = await verifyModel(target, { manifest: record, threads: 1 });
    const outputs = Object.keys(result.files).filter((f) => f !== MERGE_RECORD_FILE).sort();
    expect(Object.keys(checked.files).sort()).toEqual(outputs);
    for (const f of outputs) expect(checked.files[f]!.sha256).toBe(result.files[f]!.sha256);
    const manifest = JSON.parse(await readFile(record, "utf8")) as { target: { tensors: Record<string, { sha256: string }> } };
    const want = expected.merges["bf16-rslora"]!.lora!;
    expect(Object.fromEntries(Object.entries(manifest.target.tensors).map(([k, v]) => [k, v.sha256]))).toEqual(want);
    // One byte of the last tensor of the second shard flipped.
    const shard = join(target, "model-00002-of-00002.safetensors");
    const handle = await open(shard, "r+");
    const size = (await handle.stat()).size;
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, size - 1);
    byte[0] = byte[0]! ^ 1;
    await handle.write(byte, 0, 1, size - 1);
    await handle.close();
    await expect(verifyModel(target, { manifest: record, threads: 1 })).rejects.toThrow(/model-00002-of-00002\.safetensors has sha256 .*tensor ".*" differs/);
  });
});

describe("verified only against what a publisher gave", () => {
  it("--checksums covering every model file: verified; a rerun keeps them and records them again", async () => {
    const first = await merge("fp16-bin");
    const model = Object.entries(first.result.files).filter(([f]) => f !== MERGE_RECORD_FILE);
    const list = join(await makeTempDir("lora-"), "SHA256SUMS");
    await writeFile(list, model.map(([f, e]) => `${e.sha256}  ${f}\n`).join(""));
    const target = join(await makeTempDir("lora-"), "out");
    const checked = await applyDelta({ base: BASE, delta: join(FIXTURES, "fp16-bin"), target, checksums: list });
    expect(checked.verified).toBe(true);
    expect(checked.unchecked).toEqual([]);
    const again = await applyDelta({ base: BASE, delta: join(FIXTURES, "fp16-bin"), target, checksums: list });
    expect(Object.entries(again.files).filter(([f]) => f !== MERGE_RECORD_FILE).every(([, e]) => e.status === "kept")).toBe(true);
    await expect(verifyModel(target, { manifest: join(target, MERGE_RECORD_FILE), threads: 1 })).resolves.toMatchObject({ verified: true });
  });

  it("a checksums list that disagrees fails the run, and no wrong file gets its name", async () => {
    const list = join(await makeTempDir("lora-"), "SHA256SUMS");
    await writeFile(list, `${"0".repeat(64)}  model-00001-of-00002.safetensors\n`);
    const target = join(await makeTempDir("lora-"), "out");
    await expect(applyDelta({ base: BASE, delta: join(FIXTURES, "fp16-bin"), target, checksums: list })).rejects.toThrow(/model-00001-of-00002\.safetensors: its sha256 .* does not match/);
    expect(existsSync(join(target, "model-00001-of-00002.safetensors"))).toBe(false);
  });
});

describe("what a LoRA merge refuses, before any output", () => {
  const cases: [string, RegExp][] = [
    ["refused-dora", /use_dora true: DoRA adapters/],
    ["refused-loha", /peft_type "LOHA" \(LoHa\) is not a LoRA adapter/],
    ["refused-shape", /q_proj\.lora_A\.weight" makes a \[64,128\] update for "model\.layers\.0\.self_attn\.q_proj\.weight", which is \[64,64\]/],
  ];
  // fp16-bin's weights with one field of its adapter_config.json changed.
  const configCases: [string, Record<string, unknown>, RegExp][] = [
    ["lora_bias", { lora_bias: true }, /lora_bias true: a LoRA bias merges into the layer's bias/],
    ["trained biases", { bias: "all" }, /bias "all": trained biases are saved beside the adapter/],
    ["a rank that is not the config's", { r: 4 }, /has rank 8, adapter_config\.json says r = 4/],
    ["a PiSSA initialisation", { init_lora_weights: "pissa" }, /init_lora_weights "pissa": such an adapter was trained on a modified base/],
    ["layer replication", { layer_replication: [[0, 1]] }, /layer_replication .*changes what the merge does/],
  ];
  for (const [what, change, message] of configCases) {
    it(`refuses ${what}`, async () => {
      const adapter = join(await makeTempDir("lora-"), "adapter");
      await cp(join(FIXTURES, "fp16-bin"), adapter, { recursive: true });
      const config = JSON.parse(await readFile(join(adapter, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      await writeFile(join(adapter, "adapter_config.json"), JSON.stringify({ ...config, ...change }));
      const target = join(await makeTempDir("lora-"), "out");
      await expect(applyDelta({ base: BASE, delta: adapter, target })).rejects.toThrow(message);
      expect(existsSync(target)).toBe(false);
    });
  }

  it("factors too large to hold as float32: refused when planned, before the merge starts", async () => {
    const dir = await makeTempDir("lora-");
    /** A safetensors file of float16 zeros whose data is a hole in the file (never read here). */
    const sparse = async (file: string, tensors: Record<string, number[]>) => {
      let offset = 0;
      const header: Record<string, unknown> = {};
      for (const [name, shape] of Object.entries(tensors)) {
        const bytes = shape.reduce((n, d) => n * d, 1) * 2;
        header[name] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
        offset += bytes;
      }
      const json = JSON.stringify(header);
      const text = Buffer.from(json.padEnd(8 * Math.ceil(json.length / 8)));
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(text.length));
      const handle = await open(file, "w");
      await handle.write(Buffer.concat([prefix, text]));
      await handle.truncate(8 + text.length + offset);
      await handle.close();
    };
    const [base, adapter, target] = [join(dir, "base"), join(dir, "adapter"), join(dir, "out")];
    await Promise.all([base, adapter].map((d) => mkdir(d)));
    const q = "model.layers.0.self_attn.q_proj";
    await sparse(join(base, "model.safetensors"), { [`${q}.weight`]: [4096, 4096] });
    await writeFile(join(base, "config.json"), JSON.stringify({ model_type: "llama", hidden_size: 4096, vocab_size: 32000 }));
    // Rank 2049: 2049 x (4096 + 4096) float32 values, just over 64 MiB.
    await sparse(join(adapter, "adapter_model.safetensors"), { [`base_model.model.${q}.lora_A.weight`]: [2049, 4096], [`base_model.model.${q}.lora_B.weight`]: [4096, 2049] });
    await writeFile(join(adapter, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 2049, lora_alpha: 16, target_modules: ["q_proj"] }));
    const phases: string[] = [];
    await expect(applyDelta({ base, delta: adapter, target }, { onProgress: (e) => { if (e.kind === "start") phases.push(e.phase); } }))
      .rejects.toThrow(/q_proj\.lora_A\.weight": rank 2049 factors of 4096 and 4096 elements need 67141632 bytes as float32, more than the 67108864/);
    expect(phases).toEqual([]);
    expect(existsSync(target)).toBe(false);
  });

  for (const [adapter, message] of cases) {
    it(adapter, async () => {
      const target = join(await makeTempDir("lora-"), "out");
      await expect(applyDelta({ base: BASE, delta: join(FIXTURES, adapter), target })).rejects.toThrow(message);
      expect(existsSync(target)).toBe(false);
    });
  }
});

describe("what a LoRA merge takes as its base", () => {
  // model/foreign-weights.ts decides what a base is: weights that open as a model beside an
  // adapter's config (a model merged from it, saved in the adapter's folder) are a model.
  it("a model with an adapter's adapter_config.json beside its weights: merged like the model alone", async () => {
    const base = join(await makeTempDir("lora-"), "base");
    await cp(BASE, base, { recursive: true });
    await cp(join(FIXTURES, "fp16-bin", "adapter_config.json"), join(base, "adapter_config.json"));
    const target = join(await makeTempDir("lora-"), "out");
    const result = await applyDelta({ base, delta: join(FIXTURES, "fp16-bin"), target });
    expect(result.convention).toBe("lora");
    const want = expected.merges["fp16-bin"]!.lora!;
    const got = Object.fromEntries((await readAll(target)).map((t) => [t.name, sha256Bytes(t.data)]));
    expect(got).toEqual(want);
  });
});

describe("adapters merged one after another", () => {
  it("two PEFT adapters (--delta twice): each merged into the last's result, as merge_and_unload twice", async () => {
    const target = join(await makeTempDir("lora-"), "out");
    const result = await applyDelta({ base: BASE, delta: join(FIXTURES, "fp16-bin"), chained: [join(FIXTURES, "fp32-qlora")], target });
    expect(result.convention).toBe("lora");
    const want = expected.merges["chain-fp16-bin-fp32-qlora"]!.lora!;
    const got = Object.fromEntries((await readAll(target)).map((t) => [t.name, sha256Bytes(t.data)]));
    expect(Object.keys(want).filter((name) => got[name] !== want[name])).toEqual([]);
  });

  it("Chinese-LLaMA-Alpaca's two adapters: recognised, grown vocabulary, every tensor as its script merges it, the last tokenizer", async () => {
    const target = join(await makeTempDir("lora-"), "out");
    const result = await applyDelta({ base: BASE, delta: join(FIXTURES, "chinese-1"), chained: [join(FIXTURES, "chinese-2")], target });
    expect(result.convention).toBe("chinese-llama-alpaca");
    const run = expected.merges.chinese as unknown as { "chinese-llama-alpaca": Record<string, string>; vocab_size: number };
    const want = run["chinese-llama-alpaca"];
    const got = Object.fromEntries((await readAll(target)).map((t) => [t.name, sha256Bytes(t.data)]));
    expect(Object.keys(want).filter((name) => got[name] !== want[name])).toEqual([]);
    expect(JSON.parse(await readFile(join(target, "config.json"), "utf8")).vocab_size).toBe(run.vocab_size);
    expect(await readFile(join(target, "tokenizer.model"))).toEqual(await readFile(join(FIXTURES, "chinese-2/tokenizer.model")));
    expect(existsSync(join(target, "added_tokens.json"))).toBe(true);
    // The fixtures' adapters are not the project's: SHA256.md's digests say so, as a note.
    expect(result.notes).toContainEqual(expect.stringMatching(/chinese-1\/adapter_model\.bin is none of the files Chinese-LLaMA-Alpaca's SHA256\.md lists/));
  });

  it("a grown vocabulary changes vocab_size alone in the base's config.json: Python's 1e-06 and its layout stay as written", async () => {
    const base = join(await makeTempDir("lora-"), "base");
    await cp(BASE, base, { recursive: true });
    // as transformers writes a LLaMA config: Python's float repr, then vocab_size last
    const text = (await readFile(join(BASE, "config.json"), "utf8")).replace('"num_key_value_heads": 4,', '"num_key_value_heads": 4,\n  "rms_norm_eps": 1e-06,');
    await writeFile(join(base, "config.json"), text);
    const target = join(await makeTempDir("lora-"), "out");
    await applyDelta({ base, delta: join(FIXTURES, "chinese-1"), chained: [join(FIXTURES, "chinese-2")], target });
    const vocab = (expected.merges.chinese as unknown as { vocab_size: number }).vocab_size;
    expect(await readFile(join(target, "config.json"), "utf8")).toBe(text.replace('"vocab_size": 96', `"vocab_size": ${vocab}`));
  });

  it("Chinese-LLaMA-Alpaca's adapters in the wrong order are refused (the tokenizer shrinks)", async () => {
    const target = join(await makeTempDir("lora-"), "out");
    await expect(applyDelta({ base: BASE, delta: join(FIXTURES, "chinese-2"), chained: [join(FIXTURES, "chinese-1")], target })).rejects.toThrow(/fewer than the \d+ of the adapter before it/);
    expect(existsSync(target)).toBe(false);
  });

  it("a second --delta is refused for a delta that is not an adapter", async () => {
    const target = join(await makeTempDir("lora-"), "out");
    await expect(applyDelta({ base: join(REPO_ROOT, "test/fixtures/conventions/base/safetensors"), delta: join(REPO_ROOT, "test/fixtures/conventions/fastchat/delta"), chained: [join(FIXTURES, "fp16-bin")], target }))
      .rejects.toThrow(/only LoRA adapters are merged one after another/);
  });
});
