/**
 * The recipe vocabulary's row-by-row pairing (engine/pairing.ts RowOrder): a
 * delta stored transposed and/or with each head's rows in Meta's rotary
 * order, read a block of whole rows (whole heads) at a time; and the output
 * layout each convention declares (engine/output-layout.ts). Koala's
 * EasyLM-made fixtures (koala.test.ts) check the same loop against the
 * publisher's arithmetic; here it is checked against the element-wise loop
 * on a delta rearranged by hand, as transformers' conversion rearranges it.
 */
import { describe, expect, it } from "vitest";
import { DeltaError } from "../../src/errors.js";
import { planTensor, type TensorRecipe } from "../../src/delta/engine/recipe.js";
import { recoverTensor } from "../../src/delta/engine/tensor-transform.js";
import { layOutOutputs } from "../../src/delta/engine/output-layout.js";
import { loadConventions } from "../../src/delta/conventions/registry.js";
import type { RowOrder } from "../../src/delta/engine/pairing.js";

const ROWS = 24, COLS = 10, HEAD_ROWS = 8;

/** float16 bits of small values, deterministic. */
function halfs(count: number, seed: number, high: number): Uint16Array {
  const out = new Uint16Array(count);
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = high | (x >>> 22);
  }
  return out;
}

const bytes = (a: Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** transformers' permute: w.view(heads, headRows / 2, 2, cols).transpose(1, 2).reshape(rows, cols). */
function permuteRows(w: Uint16Array, rows: number, cols: number, headRows: number): Uint16Array {
  const out = new Uint16Array(w.length);
  const half = headRows / 2;
  for (let h = 0; h < rows / headRows; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = h * headRows + i * 2 + j; // view index (h, i, j)
        const to = h * headRows + j * half + i; // after transpose(1, 2): (h, j, i)
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

function transpose(w: Uint16Array, rows: number, cols: number): Uint16Array {
  const out = new Uint16Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c]!;
  return out;
}

async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < data.length; at += size) yield data.slice(at, at + size);
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<{ data: Uint8Array; parts: number }> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk.slice());
  return { data: Uint8Array.from(parts.flatMap((p) => [...p])), parts: parts.length };
}

const spec = { name: "w", dtype: "F16" as const, shape: [ROWS, COLS] };
const base = halfs(ROWS * COLS, 7, 0x3800);

/** The output the element-wise loop makes from a delta already in the output's layout. */
async function inOrder(delta: Uint16Array): Promise<Uint8Array> {
  const recipe = planTensor(spec, spec, "add", { baseSource: "base", role: "delta" });
  return (await collect(recoverTensor(recipe, { delta: chunked(bytes(delta), 13), base: chunked(bytes(base), 17) }))).data;
}

function rowRecipe(order: RowOrder, storedShape: number[]): TensorRecipe {
  return planTensor(spec, spec, "add", { baseSource: "base", role: "delta", rowOrder: { order, storedShape } });
}

async function byRows(recipe: TensorRecipe, stored: Uint16Array, chunkBytes: number) {
  const raw = bytes(stored);
  const reads: number[] = [];
  const result = await collect(recoverTensor(recipe, {
    delta: chunked(raw, 11),
    deltaRange: async (start, length) => {
      reads.push(length);
      return raw.slice(start, start + length);
    },
    base: chunked(bytes(base), 5),
  }, {}, chunkBytes));
  return { ...result, reads };
}

describe("a delta paired row by row", () => {
  const hf = halfs(ROWS * COLS, 3, 0x1000);

  it("read transposed with q/k's rotary permutation: the same bytes as the element-wise loop on the delta rearranged as transformers rearranges it", async () => {
    // Stored as EasyLM keeps a q kernel: the unpermuted [rows, cols] matrix, transposed to [cols, rows].
    const unpermuted = halfs(ROWS * COLS, 5, 0x1000);
    const stored = transpose(unpermuted, ROWS, COLS);
    const want = await inOrder(permuteRows(unpermuted, ROWS, COLS, HEAD_ROWS));
    const recipe = rowRecipe({ transposed: true, headRows: HEAD_ROWS }, [COLS, ROWS]);
    for (const chunkBytes of [1, HEAD_ROWS * COLS * 2 + 1, 1 << 20]) {
      const got = await byRows(recipe, stored, chunkBytes);
      expect(got.data, `blocks of ${chunkBytes} bytes`).toEqual(want);
      // A block is whole heads: one head per block at the smallest size, everything at once at the largest.
      expect(got.parts).toBe(chunkBytes === 1 << 20 ? 1 : ROWS / HEAD_ROWS);
      // One span read per stored row per block.
      expect(got.reads.length).toBe(COLS * got.parts);
    }
  });

  it("read transposed alone, and permuted alone, each as the element-wise loop on the rearranged delta", async () => {
    expect((await byRows(rowRecipe({ transposed: true }, [COLS, ROWS]), transpose(hf, ROWS, COLS), 3 * COLS * 2)).data).toEqual(await inOrder(hf));
    const permutedOnly = await byRows(rowRecipe({ transposed: false, headRows: HEAD_ROWS }, [ROWS, COLS]), hf, 1);
    expect(permutedOnly.data).toEqual(await inOrder(permuteRows(hf, ROWS, COLS, HEAD_ROWS)));
    expect(permutedOnly.reads).toEqual([]); // in the stored order: read as a stream
  });

  it("refuses, naming the tensor, what cannot pair row by row", () => {
    expect(() => rowRecipe({ transposed: true }, [ROWS, COLS])).toThrow(/tensor "w" of the delta: the delta's \[24,10\] transposed is \[10,24\], not \[24,10\]/);
    expect(() => rowRecipe({ transposed: false, headRows: 5 }, [ROWS, COLS])).toThrow(/tensor "w".*heads of 5 rows/);
    expect(() => rowRecipe({ transposed: false, headRows: 16 }, [ROWS, COLS])).toThrow(DeltaError);
    expect(() => planTensor(spec, spec, "xor", { baseSource: "base", role: "delta", rowOrder: { order: { transposed: true }, storedShape: [COLS, ROWS] } })).toThrow(/op xor cannot read a delta row by row/);
    // The base pairs same-shape: a grown vocabulary is not paired row by row.
    expect(() => planTensor({ ...spec, shape: [ROWS, COLS] }, { ...spec, shape: [ROWS - 1, COLS] }, "add", { baseSource: "base", role: "delta", rowOrder: { order: { transposed: false }, storedShape: [ROWS, COLS] } })).toThrow(/cannot pair/);
  });

  it("refuses a transposed read without a range reader, and a delta stream longer than its tensor", async () => {
    const recipe = rowRecipe({ transposed: true }, [COLS, ROWS]);
    await expect(collect(recoverTensor(recipe, { delta: chunked(bytes(hf), 8), base: chunked(bytes(base), 8) }))).rejects.toThrow(/read transposed, and its reader cannot read a range/);
    const long = new Uint16Array(ROWS * COLS + 1);
    await expect(collect(recoverTensor(rowRecipe({ transposed: false }, [ROWS, COLS]), { delta: chunked(bytes(long), 8), base: chunked(bytes(base), 8) }))).rejects.toThrow(DeltaError);
  });
});

describe("the output layout a convention declares", () => {
  const tensors = [
    { name: "a", dtype: "F16" as const, shape: [4, 4] },
    { name: "b", dtype: "F16" as const, shape: [4, 4] },
    { name: "c", dtype: "F16" as const, shape: [8] },
  ];
  const delta = { weightFiles: ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"], tensors: new Map([["a", { file: "pytorch_model-00001-of-00002.bin" }], ["b", { file: "pytorch_model-00002-of-00002.bin" }], ["c", { file: "pytorch_model-00002-of-00002.bin" }]]) };
  const base = { weightFiles: ["model.safetensors"], tensors: new Map(tensors.map((t) => [t.name, { file: "model.safetensors" }])) };
  const placed = (layout: ReturnType<typeof layOutOutputs>) => layout.files.map((f) => [f.file, f.tensors.map((t) => t.name)]);

  it("follows the delta's shards, the base's, or cuts fresh ones as save_pretrained does", () => {
    expect(placed(layOutOutputs({ follows: "delta" }, { delta, base }, tensors))).toEqual([["model-00001-of-00002.safetensors", ["a"]], ["model-00002-of-00002.safetensors", ["b", "c"]]]);
    expect(placed(layOutOutputs({ follows: "base" }, { delta, base }, tensors))).toEqual([["model.safetensors", ["a", "b", "c"]]]);
    const fresh = layOutOutputs({ follows: "fresh", maxShardBytes: 48 }, { base }, tensors);
    expect(placed(fresh)).toEqual([["model-00001-of-00002.safetensors", ["a"]], ["model-00002-of-00002.safetensors", ["b", "c"]]]);
    expect(JSON.parse(fresh.index!.text).weight_map).toEqual({ a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors", c: "model-00002-of-00002.safetensors" });
    expect(() => layOutOutputs({ follows: "delta" }, { base }, tensors)).toThrow(/follows the delta, which the plan did not give/);
  });

  it("is declared by every convention that makes tensors, and by none that restores the publisher's files", async () => {
    const declared = Object.fromEntries((await loadConventions()).map((c) => [c.name, c.layout?.follows ?? "none"]));
    expect(declared).toEqual({
      enc: "none", xor: "none", "delta-weights": "none",
      koala: "fresh",
      "chinese-llama-alpaca": "base", lora: "base", "lora-base-dtype": "base",
      llava: "delta", ziya: "delta", "fastchat-v0": "delta", alpaca: "delta", fastchat: "delta",
    });
  });
});
