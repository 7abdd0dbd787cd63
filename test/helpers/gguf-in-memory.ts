/**
 * The tiny GGUF fixture model written in memory with a chosen chunk size,
 * and the per-tensor SHA-256 that test/fixtures/gguf/expected.json records
 * from gguf-py's output: what the chunking and Q8_0-worker tests compare.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { openModel } from "../../src/model/open-model.js";
import { planGguf, writeGguf } from "../../src/model/gguf-output.js";
import { ggmlBytes, readGgufBytes } from "./gguf-read.js";
import { REPO_ROOT } from "./realdata.js";

export const GGUF_FIXTURES = join(REPO_ROOT, "test", "fixtures", "gguf");

export type TensorHash = { name: string; sha256: string };

/** gguf-py's tensor hashes of the fixture model, by outtype. */
export const expectedTensorHashes = (JSON.parse(readFileSync(join(GGUF_FIXTURES, "expected.json"), "utf8")) as { tensors: Record<string, TensorHash[]> }).tensors;

/** The fixture model as a GGUF of `outtype`, written in pieces read `chunkBytes` at a time. */
export async function ggufInMemory(outtype: "f16" | "q8_0" | "bf16" | "f32", chunkBytes: number): Promise<Uint8Array> {
  const model = await openModel(join(GGUF_FIXTURES, "model"));
  try {
    const { plan, layout } = await planGguf(model, "model", outtype);
    const parts: Uint8Array[] = [];
    // The sink copies each write: a chunk given back (and poisoned) before it was written would show in the bytes.
    await writeGguf(model, plan, layout, { write: async (bytes) => { parts.push(bytes.slice()); } }, "test", undefined, chunkBytes);
    return new Uint8Array(Buffer.concat(parts));
  } finally {
    await model.close();
  }
}

/** Each tensor's name and the SHA-256 of its data, in file order. */
export function tensorHashes(bytes: Uint8Array): TensorHash[] {
  const file = readGgufBytes(bytes);
  return file.tensors.map((t) => {
    const start = file.dataStart + t.offset;
    return { name: t.name, sha256: createHash("sha256").update(bytes.subarray(start, start + ggmlBytes(t.type, t.dims))).digest("hex") };
  });
}
