/**
 * The legacy FastChat-style fixtures (scripts/make-legacy-fixtures.py) read
 * through the PyTorch reader: each sharded .bin base and delta holds, tensor
 * for tensor, what torch computed and recorded in expected.json.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { openModel } from "../../src/model/open-model.js";

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/legacy");
type Described = Record<string, { dtype: string; shape: number[]; sha256: string }>;
const expected = JSON.parse(readFileSync(path.join(dir, "expected.json"), "utf8")) as {
  dtypes: Record<string, { base: Described; delta: Described }>;
};

async function describeModel(src: string): Promise<Described> {
  const model = await openModel(src);
  try {
    expect(model.format).toBe("pytorch");
    const out: Described = {};
    for (const [name, info] of model.tensors) {
      const hash = createHash("sha256");
      for await (const chunk of model.readTensor(name)) hash.update(chunk);
      out[name] = { dtype: info.dtype, shape: info.shape, sha256: hash.digest("hex") };
    }
    return out;
  } finally {
    await model.close();
  }
}

describe("legacy fixtures read as PyTorch wrote them", () => {
  for (const label of ["f16", "bf16", "f32"]) {
    it(`${label}: the .bin base and the .bin delta (vocabulary 513 vs 512)`, async () => {
      const want = expected.dtypes[label]!;
      expect(await describeModel(path.join(dir, label, "base-bin"))).toEqual(want.base);
      const delta = await describeModel(path.join(dir, label, "delta-bin"));
      expect(delta).toEqual(want.delta);
      expect(delta["lm_head.weight"]!.shape).toEqual([513, 64]);
    });
  }
});
