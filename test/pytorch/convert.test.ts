/**
 * `convert` of PyTorch checkpoints: the safetensors written hold, tensor for
 * tensor, the bytes torch.load returned (expected.json), for a sharded .bin
 * directory and for single files with shared storages and strided views.
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convertModel } from "../../src/model/convert.js";
import { openModel } from "../../src/model/open-model.js";
import { expected, fixture, type ExpectedTensor } from "./fixtures.js";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "pytorch-convert-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function tensorsOf(src: string): Promise<Map<string, Omit<ExpectedTensor, "name">>> {
  const model = await openModel(src);
  try {
    const out = new Map<string, Omit<ExpectedTensor, "name">>();
    for (const [name, info] of model.tensors) {
      const hash = createHash("sha256");
      for await (const chunk of model.readTensor(name)) hash.update(chunk);
      out.set(name, { dtype: info.dtype, shape: info.shape, sha256: hash.digest("hex") });
    }
    return out;
  } finally {
    await model.close();
  }
}

function expectedOf(...files: string[]): Map<string, Omit<ExpectedTensor, "name">> {
  return new Map(files.flatMap((f) => expected.files[f]!.map(({ name, ...rest }) => [name, rest] as const)));
}

describe("convert from PyTorch", () => {
  it("turns a sharded .bin directory into safetensors identical to torch.load", async () => {
    const out = path.join(scratch, "sharded-out");
    await convertModel(fixture("sharded"), out);
    const want = expectedOf("sharded/pytorch_model-00001-of-00002.bin", "sharded/pytorch_model-00002-of-00002.bin");
    expect(want.size).toBe(23);
    expect(await tensorsOf(out)).toEqual(want);
  });

  for (const name of ["views.bin", "dtypes.bin", "llama-parameters.bin", "zip64.bin"]) {
    it(`turns ${name} into one safetensors file identical to torch.load`, async () => {
      const out = path.join(scratch, `${name}.safetensors`);
      await convertModel(fixture(name), out);
      expect(await tensorsOf(out)).toEqual(expectedOf(name));
    });
  }
});
