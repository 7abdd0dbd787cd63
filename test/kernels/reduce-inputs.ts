/**
 * The inputs of test/fixtures/reduce, regenerated instead of stored: element i
 * of input (kind, seed) is a float32 built from murmur3's fmix32 of a counter,
 * the same function as `generate` in scripts/make-reduce-fixtures.py. Only
 * integer arithmetic touches the bits, so both languages agree exactly.
 */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { TorchCpuCapability } from "../../src/kernels/torch-reduce.js";

export type InputKind = "mixed" | "embedding" | "positive" | "negative-zero";

export const fixtureDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/reduce");

export interface ReduceCase {
  name: string;
  op: "sum" | "mean0";
  shape: number[];
  kind: InputKind;
  seed: number;
  /** torch[capability][threads]: a sum's float32 bits as hex, or the .bin file of a mean. */
  torch: Record<TorchCpuCapability, Record<string, string>>;
}

interface ReduceIndex {
  torch: string;
  kinds: Record<Exclude<InputKind, "negative-zero">, { lowest_exponent: number; highest_exponent: number; signed: boolean }>;
  cases: ReduceCase[];
}

export const reduceIndex = JSON.parse(readFileSync(path.join(fixtureDir, "reduce.json"), "utf8")) as ReduceIndex;

/** The float32 values of a mean fixture file. */
export function meanFixture(file: string): Float32Array {
  const bytes = readFileSync(path.join(fixtureDir, file));
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Elements [start, start + out.length) of input (kind, seed), written into `out`. */
export function generateInto(kind: InputKind, seed: number, start: number, out: Float32Array): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  if (kind === "negative-zero") {
    bits.fill(0x80000000);
    return;
  }
  const { lowest_exponent: lowest, highest_exponent: highest, signed } = reduceIndex.kinds[kind];
  const span = highest - lowest + 1;
  const seedTerm = (Math.imul(seed, 0x85ebca77) + 0x165667b1) >>> 0;
  for (let i = 0; i < out.length; i++) {
    // (index * 0x9E3779B1 + seedTerm) mod 2^32, with index < 2^32.
    const h = fmix32((Math.imul((start + i) >>> 0, 0x9e3779b1) + seedTerm) >>> 0);
    const exponent = lowest + 127 + (((h >>> 23) & 0xff) % span);
    const sign = signed ? h & 0x80000000 : 0;
    bits[i] = (sign | (exponent << 23) | (h & 0x7fffff)) >>> 0;
  }
}
