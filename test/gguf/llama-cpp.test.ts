/**
 * The GGUF output in llama.cpp itself (node-llama-cpp's prebuilt CPU build):
 * the tiny LLaMA of test/fixtures/gguf, converted by `convert`, must load,
 * read back the metadata we wrote, tokenize as SentencePiece does, and
 * continue each prompt greedily as a PyTorch forward pass of the same model
 * does (scripts/make-gguf-fixtures.py recorded it). The tensor bytes are
 * checked against gguf-py's own quantization by an independent GGUF reader.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, LlamaLogLevel, readGgufFileInfo, type ControlledEvaluateInputItem, type Llama, type Token } from "node-llama-cpp";
import { convertModel } from "../../src/model/convert.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { ggmlBytes, readGgufBytes } from "../helpers/gguf-read.js";
import { REPO_ROOT } from "../helpers/realdata.js";

const FIXTURES = join(REPO_ROOT, "test", "fixtures", "gguf");
const MODEL = join(FIXTURES, "model");

interface Expected {
  config: Record<string, unknown>;
  tokenizer: { pieces: string[]; scores: number[]; types: number[] };
  prompts: { text: string; ids: number[]; greedy: number[]; margins: number[]; q8_0_greedy: number[]; q8_0_margins: number[] }[];
  tensors: Record<string, { name: string; type: string; sha256: string; bytes: number }[]>;
}
const expected = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as Expected;

const GGML_TYPE_IDS: Record<string, number> = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 };
const FILE_TYPES: Record<string, number> = { f32: 0, f16: 1, bf16: 32, q8_0: 7 };

/**
 * Steps of a greedy continuation a lossy output must reproduce: those before
 * the first step where the reference's top two logits are closer than
 * `margin` (Q8_0 and BF16 weights move logits by a few hundredths here).
 */
function decisiveSteps(margins: number[], margin: number): number {
  const close = margins.findIndex((m) => m < margin);
  return close < 0 ? margins.length : close;
}

let llama: Llama;
let dir: string;
const outputs: Record<string, string> = {};

beforeAll(async () => {
  // One thread: llama.cpp's spinning worker threads crawl on a busy two-core machine.
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
  dir = await makeTempDir();
  for (const outtype of ["f32", "f16", "bf16", "q8_0"] as const) {
    outputs[outtype] = join(dir, `tiny-${outtype}.gguf`);
    await convertModel(MODEL, outputs[outtype], { outtype });
  }
}, 120_000);

afterAll(async () => {
  await llama?.dispose();
});

/** llama.cpp's greedy continuation of each prompt (the top token of each next-token distribution), and its tokenization of the text. */
async function greedy(path: string): Promise<{ tokens: number[][]; tokenized: number[][] }> {
  const model = await llama.loadModel({ modelPath: path });
  try {
    const context = await model.createContext({ contextSize: 64, sequences: 1, threads: 1 });
    const sequence = context.getSequence();
    const tokens: number[][] = [];
    const tokenized: number[][] = [];
    for (const prompt of expected.prompts) {
      await sequence.clearHistory();
      const out: number[] = [];
      let input: Token[] = prompt.ids as Token[];
      while (out.length < prompt.greedy.length) {
        const last = input.length - 1;
        const items: ControlledEvaluateInputItem[] = [...input.slice(0, last), [input[last]!, { generateNext: { probabilities: true } }]];
        const result = await sequence.controlledEvaluate(items);
        const next = result[last]?.next?.probabilities?.keys().next().value;
        if (next === undefined) throw new Error(`llama.cpp gave no next token for "${prompt.text}"`);
        out.push(next);
        input = [next];
      }
      tokens.push(out);
      tokenized.push([...model.tokenize(prompt.text, false)]);
    }
    await context.dispose();
    return { tokens, tokenized };
  } finally {
    await model.dispose();
  }
}

describe("GGUF output in llama.cpp (node-llama-cpp 3.21.1)", () => {
  for (const outtype of ["f32", "f16"] as const) {
    it(`${outtype}: llama.cpp continues every prompt greedily exactly as the PyTorch reference`, async () => {
      const { tokens, tokenized } = await greedy(outputs[outtype]!);
      expected.prompts.forEach((prompt, i) => {
        expect(tokens[i], prompt.text).toEqual(prompt.greedy);
        // llama.cpp's SentencePiece tokenizer, from the vocabulary we wrote, splits the text as SentencePiece does.
        expect([1, ...tokenized[i]!], prompt.text).toEqual(prompt.ids);
      });
    }, 120_000);
  }

  it("q8_0: the first decisive steps match the reference run on the Q8_0 weights (dequantized)", async () => {
    const { tokens } = await greedy(outputs.q8_0!);
    let asserted = 0;
    expected.prompts.forEach((prompt, i) => {
      // llama.cpp also quantizes activations for Q8_0 products: a close call may go either way.
      const steps = decisiveSteps(prompt.q8_0_margins, 0.25);
      expect(tokens[i]!.slice(0, steps), prompt.text).toEqual(prompt.q8_0_greedy.slice(0, steps));
      asserted += steps;
    });
    expect(asserted).toBeGreaterThanOrEqual(30);
  }, 120_000);

  it("bf16: the decisive steps match the reference (bfloat16 keeps 8 bits of each weight)", async () => {
    const { tokens } = await greedy(outputs.bf16!);
    let asserted = 0;
    expected.prompts.forEach((prompt, i) => {
      const steps = decisiveSteps(prompt.margins, 0.5);
      expect(tokens[i]!.slice(0, steps), prompt.text).toEqual(prompt.greedy.slice(0, steps));
      asserted += steps;
    });
    expect(asserted).toBeGreaterThanOrEqual(30);
  }, 120_000);

  it("llama.cpp reads back the metadata: architecture, hyperparameters, tokenizer, file type", async () => {
    const c = expected.config;
    for (const [outtype, path] of Object.entries(outputs)) {
      const info = await readGgufFileInfo(path);
      const md = info.metadata as unknown as Record<string, Record<string, unknown>>;
      expect(md.general).toMatchObject({ architecture: "llama", type: "model", name: "model", file_type: FILE_TYPES[outtype], quantization_version: 2 });
      expect(md.llama).toMatchObject({
        block_count: c.num_hidden_layers,
        context_length: c.max_position_embeddings,
        embedding_length: c.hidden_size,
        feed_forward_length: c.intermediate_size,
        vocab_size: c.vocab_size,
        rope: { freq_base: c.rope_theta, dimension_count: 16 },
        attention: { head_count: c.num_attention_heads, head_count_kv: c.num_key_value_heads, key_length: 16, value_length: 16 },
      });
      expect((md.llama!.attention as Record<string, number>).layer_norm_rms_epsilon).toBe(Math.fround(c.rms_norm_eps as number));
      const tok = (md.tokenizer as Record<string, Record<string, unknown>>).ggml!;
      expect(tok).toMatchObject({ model: "llama", pre: "default", bos_token_id: 1, eos_token_id: 2, add_bos_token: true, add_eos_token: false });
      expect(tok.tokens).toEqual(expected.tokenizer.pieces);
      expect(tok.token_type).toEqual(expected.tokenizer.types.map((t, id) => (id <= 2 ? 3 : t))); // added_tokens_decoder marks 0-2 special: CONTROL
      expect((md.tokenizer as Record<string, unknown>).chat_template).toMatch(/^\{% for message in messages %\}/);
      expect(info.tensorInfo?.map((t) => t.name)).toEqual(expected.tensors[outtype]!.map((t) => t.name));
    }
  });
});

describe("GGUF bytes, read by an independent reader", () => {
  for (const outtype of ["f32", "f16", "bf16", "q8_0"] as const) {
    it(`${outtype}: every tensor's data is bit-identical to gguf-py's, at 32-byte aligned offsets, with dims innermost first`, () => {
      const bytes = new Uint8Array(readFileSync(outputs[outtype]!));
      const file = readGgufBytes(bytes);
      expect(file.version).toBe(3);
      expect(file.metadata.has("general.alignment")).toBe(false); // the default, 32, as the converter leaves it
      const want = expected.tensors[outtype]!;
      expect(file.tensors.map((t) => t.name)).toEqual(want.map((t) => t.name));
      let end = 0;
      file.tensors.forEach((t, i) => {
        const w = want[i]!;
        expect(t.type, t.name).toBe(GGML_TYPE_IDS[w.type]);
        expect(t.offset % 32, t.name).toBe(0);
        const length = ggmlBytes(t.type, t.dims);
        expect(length).toBe(w.bytes);
        const data = bytes.subarray(file.dataStart + t.offset, file.dataStart + t.offset + length);
        expect(createHash("sha256").update(data).digest("hex"), t.name).toBe(w.sha256);
        end = file.dataStart + t.offset + Math.ceil(length / 32) * 32;
      });
      expect(bytes.length).toBe(end);
      // dims innermost first: token_embd is [hidden, vocab].
      expect(file.tensors.find((t) => t.name === "token_embd.weight")?.dims).toEqual([64, expected.config.vocab_size]);
      const scores = file.metadata.get("tokenizer.ggml.scores")!.value as { items: number[] };
      expect(scores.items.slice(3)).toEqual(expected.tokenizer.scores.slice(3));
      expect(scores.items.slice(0, 3)).toEqual([-1000, -1000, -1000]);
    });
  }
});
