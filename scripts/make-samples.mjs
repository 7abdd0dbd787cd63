#!/usr/bin/env node
// Builds samples/: a tiny LLaMA-shaped F16 base (config and tokenizer files
// included) and the delta of a "fine-tune" of it, made by our own make-delta.
// Deterministic: the same bytes on every run and machine (integer xorshift
// noise, no transcendental functions). Usage: node scripts/make-samples.mjs [OUT]
// (run `npm run build` first). The fine-tuned target itself is not kept:
// publishing it is what a delta avoids; delta.json records its checksums.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { AtomicFile } from "../dist/io/atomic-file.js";
import { convertInto } from "../dist/kernels/index.js";
import { makeDelta, SafetensorsWriter } from "../dist/index.js";

const out = resolve(process.argv[2] ?? "samples");
const HIDDEN = 64, LAYERS = 2, HEADS = 4, KV_HEADS = 2, INTERMEDIATE = 176, VOCAB = 512;
const HEAD_DIM = HIDDEN / HEADS;

function rng(seed) {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

/** Roughly normal values (Irwin-Hall: a sum of 4 uniforms), as F16 bytes. */
function randomF16(count, scale, next) {
  const f32 = new Float32Array(count);
  for (let i = 0; i < count; i++) f32[i] = (next() + next() + next() + next() - 2) * scale;
  const bytes = new Uint8Array(count * 2);
  convertInto("F32", "F16", new Uint8Array(f32.buffer), bytes);
  return bytes;
}

function onesF16(count) {
  const bytes = new Uint8Array(count * 2);
  for (let i = 0; i < count; i++) bytes[i * 2 + 1] = 0x3c; // 1.0 = 0x3C00
  return bytes;
}

function llama(vocab, seed, scale) {
  const next = rng(seed);
  const t = [];
  const add = (name, shape, data) => t.push({ name, dtype: "F16", shape, data: data ?? randomF16(shape.reduce((a, b) => a * b, 1), scale, next) });
  add("model.embed_tokens.weight", [vocab, HIDDEN]);
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}.`;
    add(p + "self_attn.q_proj.weight", [HEADS * HEAD_DIM, HIDDEN]);
    add(p + "self_attn.k_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN]);
    add(p + "self_attn.v_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN]);
    add(p + "self_attn.o_proj.weight", [HIDDEN, HEADS * HEAD_DIM]);
    add(p + "mlp.gate_proj.weight", [INTERMEDIATE, HIDDEN]);
    add(p + "mlp.up_proj.weight", [INTERMEDIATE, HIDDEN]);
    add(p + "mlp.down_proj.weight", [HIDDEN, INTERMEDIATE]);
    add(p + "input_layernorm.weight", [HIDDEN], onesF16(HIDDEN));
    add(p + "post_attention_layernorm.weight", [HIDDEN], onesF16(HIDDEN));
  }
  add("model.norm.weight", [HIDDEN], onesF16(HIDDEN));
  add("lm_head.weight", [vocab, HIDDEN]);
  return t;
}

/** A fine-tune: base + small updates, one token added to the vocabulary (as Vicuna's pad token). */
function finetune(base) {
  const next = rng(20230330);
  return base.map((t) => {
    const n = t.data.length / 2;
    // Updates as large as the weights: some sums then round away from the target, so the sample exercises the fix-ups.
    const updates = randomF16(n, 0.02, next);
    const a = new Float32Array(n), b = new Float32Array(n);
    convertInto("F16", "F32", t.data, new Uint8Array(a.buffer));
    convertInto("F16", "F32", updates, new Uint8Array(b.buffer));
    for (let i = 0; i < n; i++) a[i] = a[i] + b[i];
    let data = new Uint8Array(n * 2);
    convertInto("F32", "F16", new Uint8Array(a.buffer), data);
    let shape = t.shape;
    if (t.name === "model.embed_tokens.weight" || t.name === "lm_head.weight") {
      data = Buffer.concat([data, randomF16(HIDDEN, 0.02, next)]);
      shape = [shape[0] + 1, HIDDEN];
    }
    return { ...t, shape, data };
  });
}

async function writeModel(dir, tensors, vocab, extraTokens) {
  await mkdir(dir, { recursive: true });
  const sink = await AtomicFile.create(join(dir, "model.safetensors"));
  const writer = SafetensorsWriter.create(sink, "model.safetensors", tensors, { format: "pt" });
  for (const t of writer.tensors) await writer.writeTensor(t.name, [tensors.find((x) => x.name === t.name).data]);
  await writer.finish();
  await sink.commit();
  const json = (value) => JSON.stringify(value, null, 2) + "\n";
  await writeFile(join(dir, "config.json"), json({
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: HIDDEN, intermediate_size: INTERMEDIATE,
    num_hidden_layers: LAYERS, num_attention_heads: HEADS, num_key_value_heads: KV_HEADS, vocab_size: vocab,
    max_position_embeddings: 256, rms_norm_eps: 1e-6, bos_token_id: 1, eos_token_id: 2, torch_dtype: "float16",
    tie_word_embeddings: false,
  }));
  await writeFile(join(dir, "generation_config.json"), json({ bos_token_id: 1, eos_token_id: 2 }));
  // A word-level tokenizer in the Hugging Face tokenizers format: <unk>, <s>, </s>, then w3..w511.
  const vocabMap = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let i = 3; i < VOCAB; i++) vocabMap[`w${i}`] = i;
  const added = [["<unk>", 0], ["<s>", 1], ["</s>", 2], ...extraTokens].map(([content, id]) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  await writeFile(join(dir, "tokenizer.json"), json({
    version: "1.0", truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: "Whitespace" }, post_processor: null, decoder: null,
    model: { type: "WordLevel", vocab: vocabMap, unk_token: "<unk>" },
  }));
  await writeFile(join(dir, "tokenizer_config.json"), json({
    bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", ...(extraTokens.length > 0 ? { pad_token: extraTokens[0][0] } : {}),
    model_max_length: 256, tokenizer_class: "PreTrainedTokenizerFast",
  }));
  await writeFile(join(dir, "special_tokens_map.json"), json({
    bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", ...(extraTokens.length > 0 ? { pad_token: extraTokens[0][0] } : {}),
  }));
}

const base = llama(VOCAB, 7, 0.02);
const target = finetune(base);
await rm(join(out, "base"), { recursive: true, force: true });
await rm(join(out, "delta"), { recursive: true, force: true });
await writeModel(join(out, "base"), base, VOCAB, []);
const scratch = await mkdtemp(join(tmpdir(), "delta-weights-samples-"));
try {
  await writeModel(join(scratch, "tiny-vicuna"), target, VOCAB + 1, [["<pad>", VOCAB]]);
  const result = await makeDelta({ base: join(out, "base"), target: join(scratch, "tiny-vicuna"), delta: join(out, "delta") });
  console.log(`samples: base and delta (${result.tensors} tensors, ${result.fixups} fix-ups) written to ${out}`);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
