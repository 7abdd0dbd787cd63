import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { layoutGguf } from "../../src/gguf/format.js";
import { sizeLabel } from "../../src/gguf/llama.js";
import { convertChunk, encodeF32As, permuteHeadRows } from "../../src/gguf/quantize.js";
import { readSentencePieceModel } from "../../src/tokenizer/sentencepiece.js";
import { ModelError } from "../../src/errors.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { readGgufBytes } from "../helpers/gguf-read.js";

const FIXTURES = join(REPO_ROOT, "test", "fixtures", "gguf");
const expected = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as { tokenizer: { pieces: string[]; scores: number[]; types: number[] } };

describe("SentencePiece tokenizer.model reader", () => {
  it("reads every piece, score and type as SentencePiece itself does (byte pieces, control tokens, unknown)", () => {
    const model = readSentencePieceModel(new Uint8Array(readFileSync(join(FIXTURES, "model", "tokenizer.model"))), "tokenizer.model");
    expect(model.pieces.map((p) => p.piece)).toEqual(expected.tokenizer.pieces);
    expect(model.pieces.map((p) => p.score)).toEqual(expected.tokenizer.scores.map((s) => Math.fround(s)));
    expect(model.pieces.map((p) => p.type)).toEqual(expected.tokenizer.types);
    expect(model.modelType).toBe(2); // BPE, as LLaMA's
  });

  it("rejects a truncated tokenizer.model by name, without a crash", () => {
    const bytes = new Uint8Array(readFileSync(join(FIXTURES, "model", "tokenizer.model")));
    expect(() => readSentencePieceModel(bytes.subarray(0, 1000), "cut/tokenizer.model")).toThrow(ModelError);
    expect(() => readSentencePieceModel(bytes.subarray(0, 1000), "cut/tokenizer.model")).toThrow(/cut\/tokenizer\.model is not a SentencePiece model/);
  });

  it("rejects a file of no pieces (a JSON tokenizer renamed)", () => {
    expect(() => readSentencePieceModel(new TextEncoder().encode("{\"model\":{}}"), "tokenizer.model")).toThrow(/not a SentencePiece model/);
  });
});

describe("tensor encodings", () => {
  it("Q8_0 rounds half away from zero (gguf-py's np_roundf), with d = max|x|/127 stored as float16", () => {
    const block = new Float32Array(32);
    block.set([127, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997]);
    const out = encodeF32As("Q8_0", block);
    expect(out.length).toBe(34);
    expect(out[0]! | (out[1]! << 8)).toBe(0x3c00); // d = 1.0
    expect([...new Int8Array(out.buffer, 2, 7)]).toEqual([127, 1, -1, 2, 3, -3, 0]);
  });

  it("Q8_0 of an all-zero block has d = 0 and zero quants", () => {
    expect([...encodeF32As("Q8_0", new Float32Array(32))]).toEqual(new Array(34).fill(0));
  });

  it("F16 rounds to nearest even; BF16 rounds to nearest even and keeps a NaN quiet", () => {
    const f16 = new Uint16Array(encodeF32As("F16", new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 70000])).buffer);
    expect([...f16]).toEqual([0x3c00, 0x3c02, 0x7c00]);
    const nan = new Float32Array(new Uint32Array([0x7f800001]).buffer);
    const bf16 = new Uint16Array(encodeF32As("BF16", new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, nan[0]!])).buffer);
    expect([...bf16]).toEqual([0x3f80, 0x3f82, 0x7fc0]);
  });

  it("an F16 source written as F16 is copied byte for byte", () => {
    const bytes = new Uint8Array([1, 2, 3, 4]);
    expect(convertChunk("F16", "F16", bytes)).toBe(bytes);
  });

  it("permutes a head's rows as LlamaModel.permute: the two rotary halves interleaved", () => {
    const rows = new Uint8Array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]); // 6 rows of 2 bytes
    expect([...permuteHeadRows(rows, 6, 2)]).toEqual([0, 0, 3, 3, 1, 1, 4, 4, 2, 2, 5, 5]);
  });
});

describe("GGUF layout", () => {
  it("writes the tensor table innermost dim first, offsets padded to 32, and pads the header with zeros", () => {
    const layout = layoutGguf([["general.architecture", { type: "string", value: "llama" }]], [
      { name: "a", shape: [3], type: "F32" },
      { name: "b", shape: [2, 32], type: "Q8_0" },
    ]);
    const file = readGgufBytes(new Uint8Array([...layout.header, ...new Uint8Array(layout.fileSize - layout.header.length)]));
    expect(file.tensors).toEqual([
      { name: "a", dims: [3], type: 0, offset: 0 },
      { name: "b", dims: [32, 2], type: 8, offset: 32 },
    ]);
    expect(file.dataStart).toBe(layout.header.length);
    expect(layout.fileSize).toBe(layout.header.length + 32 + 96);
  });

  it("general.size_label as gguf-py rounds it", () => {
    expect(sizeLabel(6_738_415_616)).toBe("6.7B");
    expect(sizeLabel(13_015_864_320)).toBe("13B");
    expect(sizeLabel(137_856)).toBe("138K");
  });
});
