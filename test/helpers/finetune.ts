/**
 * Test models built with the library's own writer (which is checked byte
 * for byte against Hugging Face's serializer elsewhere): a "fine-tuned"
 * target made from a real base by adding fine-tune-like noise, optionally
 * in another dtype, with a grown vocabulary, in a chosen shard layout.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { dtypeBytes, isArithmeticDType, type DType, type FloatDType } from "../../src/dtypes.js";
import { addInto, convertInto } from "../../src/kernels/index.js";
import { AtomicFile } from "../../src/io/atomic-file.js";
import { openModel } from "../../src/model/open-model.js";
import { formatIndex, planShards } from "../../src/formats/shard-plan.js";
import { SafetensorsWriter } from "../../src/safetensors/writer.js";

import { REALDATA } from "./realdata.js";

export const TINY_LLAMA = join(REALDATA, "tiny-llama-bf16/model.safetensors");

/** Deterministic xorshift32 in [0, 1). */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

export interface Tensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export async function readAll(src: string): Promise<Tensor[]> {
  const model = await openModel(src);
  try {
    const out: Tensor[] = [];
    for (const t of model.tensors.values()) {
      const parts: Uint8Array[] = [];
      for await (const c of model.readTensor(t.name)) parts.push(c);
      out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: Buffer.concat(parts) });
    }
    return out;
  } finally {
    await model.close();
  }
}

export function convert(t: Tensor, dtype: DType): Tensor {
  if (t.dtype === dtype) return t;
  const out = new Uint8Array((t.data.length / dtypeBytes(t.dtype)) * dtypeBytes(dtype));
  convertInto(t.dtype as FloatDType, dtype as FloatDType, t.data, out);
  return { ...t, dtype, data: out };
}

/** Random values of scale `scale` in `dtype`. */
export function noise(dtype: FloatDType, count: number, scale: number, next: () => number): Uint8Array {
  const f32 = new Float32Array(count);
  for (let i = 0; i < count; i++) f32[i] = (next() - 0.5) * 2 * scale;
  const out = new Uint8Array(count * dtypeBytes(dtype));
  convertInto("F32", dtype, new Uint8Array(f32.buffer), out);
  return out;
}

/** base + noise (relative scale ~1e-3, like a fine-tune), rows appended to the embeddings when `growRows`. */
export function finetune(tensors: Tensor[], options: { seed?: number; growRows?: number; scale?: number } = {}): Tensor[] {
  const next = rng(options.seed ?? 1234);
  return tensors.map((t) => {
    if (!isArithmeticDType(t.dtype)) return t;
    const n = t.data.length / dtypeBytes(t.dtype);
    const data = new Uint8Array(t.data.length);
    addInto(t.dtype, t.data, noise(t.dtype, n, options.scale ?? 2e-3, next), data);
    let shape = t.shape;
    let bytes = data;
    const grow = options.growRows ?? 0;
    if (grow > 0 && (t.name.endsWith("embed_tokens.weight") || t.name === "lm_head.weight")) {
      const row = t.shape[1]!;
      const extra = noise(t.dtype, grow * row, 0.02, next);
      bytes = Buffer.concat([data, extra]);
      shape = [t.shape[0]! + grow, row];
    }
    return { ...t, shape, data: bytes };
  });
}

/** Writes tensors as a model directory: one file, or HF shards with an index; companions optional. */
export async function writeModel(dir: string, tensors: Tensor[], options: { maxShardBytes?: number; metadata?: Record<string, string> | null; companions?: Record<string, string> } = {}): Promise<string> {
  await mkdir(dir, { recursive: true });
  const plan = planShards(tensors.map((t) => ({ name: t.name, byteLength: t.data.length })), options.maxShardBytes);
  let total = 0;
  for (const file of plan.files) {
    const inFile = tensors.filter((t) => plan.assignment.get(t.name) === file);
    const sink = await AtomicFile.create(join(dir, file));
    const writer = SafetensorsWriter.create(sink, file, inFile, options.metadata === undefined ? { format: "pt" } : options.metadata);
    for (const t of writer.tensors) {
      const data = inFile.find((x) => x.name === t.name)!.data;
      total += data.length;
      await writer.writeTensor(t.name, [data]);
    }
    await writer.finish();
    await sink.commit();
  }
  if (plan.files.length > 1) await writeFile(join(dir, "model.safetensors.index.json"), formatIndex(total, plan.assignment));
  for (const [name, text] of Object.entries(options.companions ?? {})) await writeFile(join(dir, name), text);
  return dir;
}
