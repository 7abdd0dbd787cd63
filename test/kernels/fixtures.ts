/**
 * Loads the PyTorch-made oracle arrays in test/fixtures/kernels (written by
 * scripts/make-kernel-fixtures.py; kernels.json lists them).
 */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/kernels");

interface FixtureIndex {
  torch: string;
  files: Record<string, { type: "u16" | "u32" | "u64"; count: number; note: string }>;
}

export const fixtureIndex = JSON.parse(readFileSync(path.join(dir, "kernels.json"), "utf8")) as FixtureIndex;

/** Raw little-endian bytes of one fixture array (a fresh, aligned copy). */
export function fixtureBytes(name: string): Uint8Array {
  const entry = fixtureIndex.files[name];
  if (!entry) throw new Error(`no fixture ${name}`);
  const file = readFileSync(path.join(dir, `${name}.bin`));
  const size = { u16: 2, u32: 4, u64: 8 }[entry.type];
  if (file.byteLength !== entry.count * size) throw new Error(`fixture ${name} has the wrong size`);
  return new Uint8Array(file.buffer.slice(file.byteOffset, file.byteOffset + file.byteLength));
}

export function fixtureU16(name: string): Uint16Array {
  const bytes = fixtureBytes(name);
  return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
}

export function fixtureU32(name: string): Uint32Array {
  const bytes = fixtureBytes(name);
  return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

