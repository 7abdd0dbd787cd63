/**
 * A delta's pytorch-checkpoints.json comes from its publisher, who may be
 * hostile: delta.json can list whatever sha256 they like for it. Each attack
 * below is consistent with delta.json and must still be refused, before any
 * file is written, with nothing written outside the target.
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { PYTORCH_CHECKPOINTS_FILE } from "../../src/delta/engine/pytorch-checkpoints.js";
import { noise, readAll, rng, writeModel } from "../helpers/finetune.js";
import { editedDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const fixtures = fileURLToPath(new URL("../fixtures/pytorch-writer/", import.meta.url));

let base: string;
let delta: string;
let skeleton: { format: string; files: Record<string, { output: string; size: number; sha256: string; segments: ({ bytes: string } | { tensor: string; length: number })[] }>; index?: { file: string; text: string } };

beforeAll(async () => {
  const dir = await makeTempDir();
  const target = join(dir, "release");
  mkdirSync(target);
  for (const f of ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]) copyFileSync(join(fixtures, "sharded", f), join(target, f));
  const next = rng(5);
  base = await writeModel(join(dir, "base"), (await readAll(target)).map((t) => ({ name: t.name, dtype: "F16" as const, shape: t.shape, data: noise("F16", t.shape.reduce((n, d) => n * d, 1), 0.5, next) })));
  delta = join(dir, "delta");
  await makeDelta({ base, target, delta });
  skeleton = JSON.parse(readFileSync(join(delta, PYTORCH_CHECKPOINTS_FILE), "utf8")) as typeof skeleton;
});

/** A copy of the delta whose skeleton is `edit`ed, with delta.json agreeing with it (as a hostile publisher's would). */
async function forged(edit: (doc: typeof skeleton) => void): Promise<{ delta: string; dir: string }> {
  const dir = await makeTempDir();
  const doc = JSON.parse(JSON.stringify(skeleton)) as typeof skeleton;
  edit(doc);
  const bytes = Buffer.from(JSON.stringify(doc));
  const copy = await editedDelta(delta, join(dir, "delta"), (m) => {
    m.delta.files[PYTORCH_CHECKPOINTS_FILE] = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
  });
  writeFileSync(join(copy, PYTORCH_CHECKPOINTS_FILE), bytes);
  return { delta: copy, dir };
}

async function refused(edit: (doc: typeof skeleton) => void, message: RegExp): Promise<void> {
  const { delta: bad, dir } = await forged(edit);
  const target = join(dir, "out");
  await expect(applyDelta({ base, delta: bad, target, format: "pytorch" })).rejects.toThrow(message);
  expect(existsSync(target) ? readdirSync(target).filter((n) => !n.startsWith(".")) : []).toEqual([]);
  expect(readdirSync(dir).sort()).toEqual(["delta", ...(existsSync(target) ? ["out"] : [])]);
}

const first = "pytorch_model-00001-of-00002.bin";

describe("a forged pytorch-checkpoints.json", () => {
  it("naming a file outside the target (../)", async () => {
    await refused((doc) => {
      doc.files["../escaped.bin"] = doc.files[first]!;
      delete doc.files[first];
    }, /names "\.\.\/escaped\.bin", not a checkpoint file name/);
  });

  it("naming a file that is not a checkpoint (config.json, to replace the model's config)", async () => {
    await refused((doc) => {
      doc.files["config.json"] = doc.files[first]!;
      delete doc.files[first];
    }, /names "config\.json", not a checkpoint file name/);
  });

  it("whose segments do not add up to the size it states", async () => {
    await refused((doc) => { doc.files[first]!.size += 1; }, /segments make/);
  });

  it("placing a tensor with another length than delta.json's header gives it", async () => {
    await refused((doc) => {
      const segment = doc.files[first]!.segments.find((s) => "tensor" in s) as { tensor: string; length: number };
      segment.length += 2;
      doc.files[first]!.size += 2;
    }, /places \d+ bytes of tensor/);
  });

  it("placing one tensor twice and leaving another out", async () => {
    await refused((doc) => {
      const tensors = doc.files[first]!.segments.filter((s) => "tensor" in s) as { tensor: string; length: number }[];
      const [one, other] = tensors.flatMap((a) => tensors.filter((b) => b !== a && b.length === a.length).map((b) => [a, b] as const))[0]!;
      other.tensor = one.tensor;
    }, /does not place each tensor .* exactly once/);
  });

  it("with an index under another name", async () => {
    await refused((doc) => { doc.index!.file = "../pytorch_model.bin.index.json"; }, /malformed index/);
  });

  it("that is not JSON", async () => {
    const { delta: bad, dir } = await forged(() => undefined);
    const bytes = Buffer.from("{\"format\": ");
    const copy = await editedDelta(bad, join(dir, "delta2"), (m) => {
      m.delta.files[PYTORCH_CHECKPOINTS_FILE] = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
    });
    writeFileSync(join(copy, PYTORCH_CHECKPOINTS_FILE), bytes);
    await expect(applyDelta({ base, delta: copy, target: join(dir, "out"), format: "pytorch" })).rejects.toThrow(/is not JSON/);
  });
});
