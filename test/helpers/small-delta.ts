/**
 * A small, valid delta made by the library itself, for tests that then
 * break one thing about it: a base, a fine-tuned target in two shards with
 * an index and companions, and the delta between them (with fix-ups).
 */
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { finetune, noise, rng, writeModel, type Tensor } from "./finetune.js";

export interface SmallDelta {
  base: string;
  target: string;
  delta: string;
}

export function smallTensors(seed = 1): Tensor[] {
  const next = rng(seed);
  return [
    { name: "embed.weight", dtype: "F16", shape: [64, 32], data: noise("F16", 64 * 32, 0.02, next) },
    { name: "layers.0.weight", dtype: "BF16", shape: [32, 32], data: noise("BF16", 32 * 32, 0.02, next) },
    { name: "norm.weight", dtype: "F32", shape: [32], data: noise("F32", 32, 1, next) },
    { name: "position_ids", dtype: "I64", shape: [8], data: new Uint8Array(new BigInt64Array([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n]).buffer) },
  ];
}

const COMPANIONS = { "config.json": '{"vocab_size": 64}\n', "tokenizer_config.json": '{"model_max_length": 128}\n' };

/** Makes base/, target/ and delta/ under `dir`. */
export async function makeSmallDelta(dir: string, tensors: Tensor[] = smallTensors()): Promise<SmallDelta> {
  const base = join(dir, "base");
  const target = join(dir, "target");
  const delta = join(dir, "delta");
  await writeModel(base, tensors, { companions: COMPANIONS });
  await writeModel(target, finetune(tensors, { seed: 7, scale: 0.05 }), { maxShardBytes: 4200, companions: COMPANIONS });
  await makeDelta({ base, target, delta });
  return { base, target, delta };
}

/** A copy of `delta` at `to` whose delta.json is `edit`ed (as parsed JSON; keys such as "__proto__" stay own properties). */
export async function editedDelta(delta: string, to: string, edit: (manifest: ManifestJson) => void): Promise<string> {
  await cp(delta, to, { recursive: true });
  const manifest = JSON.parse(await readFile(join(to, "delta.json"), "utf8")) as ManifestJson;
  edit(manifest);
  await writeFile(join(to, "delta.json"), JSON.stringify(manifest, null, 1) + "\n");
  return to;
}

export type Json = Record<string, unknown>;
export interface ManifestJson {
  base: { tensors: Record<string, Json>; dropped: string[]; source: string };
  target: { files: Record<string, Json>; tensors: Record<string, Json & { file: string }>; headers: Record<string, string>; index?: { file: string; text: string } };
  delta: { files: Record<string, Json>; weights: string[]; fixups?: string };
  [key: string]: unknown;
}

/** Sets `object[key] = value` as an own property, even for "__proto__" (plain assignment would set the prototype). */
export function setOwn(object: object, key: string, value: unknown): void {
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Renames a key of `object`, keeping its value (and own-property semantics for any name). */
export function renameKey(object: Record<string, unknown>, from: string, to: string): void {
  const value = object[from];
  delete object[from];
  setOwn(object, to, value);
}
