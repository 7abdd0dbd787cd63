import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError, VerifyError } from "../errors.js";
import { HashPool } from "../hash/hash-pool.js";
import { AtomicFile, copyFileAtomic, removeStalePartials } from "../io/atomic-file.js";
import { withOutputLock } from "../io/output-lock.js";
import { prefetch, tap } from "../io/chunk-streams.js";
import { checkFreeSpace, inputOf, refuseOverlap } from "../io/paths.js";
import { openModel } from "../model/open-model.js";
import type { ModelSource } from "../model/types.js";
import { SafetensorsWriter } from "../safetensors/writer.js";
import type { ApplyDeltaOptions, ApplyDeltaResult } from "./apply-delta.js";
import { blockMismatch } from "./block.js";
import { convertedLayout } from "./target-layout.js";
import { baseConversionProblem, legacyAddProblem, transformTensor, type TensorPlan } from "./tensor-transform.js";

/** `model.layers.N.self_attn.rotary_emb.inv_freq`: a buffer transformers 4.28-4.30 saved, not a weight. */
export function isRotaryBuffer(name: string): boolean {
  return name.endsWith("rotary_emb.inv_freq");
}

/**
 * A legacy delta (FastChat, Vicuna, WizardVicunaLM: no delta.json):
 * `delta + base` in the delta's dtype, the block rule for grown vocabularies,
 * output sharded like the delta, in safetensors. Nothing proves the result
 * but a published checksum list (`--checksums`).
 */
export async function applyLegacyDelta(options: ApplyDeltaOptions, checksums: Map<string, string> | undefined): Promise<ApplyDeltaResult> {
  const delta = await openModel(options.delta, options);
  try {
    const base = await openModel(options.base, options);
    try {
      refuseOverlap(options.target, [inputOf("base", base), inputOf("delta", delta)]);
      return await withOutputLock(options.target, "apply-delta", async () => {
        await removeStalePartials(options.target);
        return applyLegacy(base, delta, checksums, options);
      });
    } finally {
      await base.close();
    }
  } finally {
    await delta.close();
  }
}

async function applyLegacy(
  base: ModelSource,
  delta: ModelSource,
  checksums: Map<string, string> | undefined,
  options: ApplyDeltaOptions,
): Promise<ApplyDeltaResult> {
  const out = options.target;
  // FastChat asserts that every base tensor has its delta; a delta without
  // one would leave that tensor out of the model. Rotary inv_freq buffers are
  // not weights (transformers >= 4.31 computes them), so they may be missing.
  const missing = [...base.tensors.keys()].find((n) => !delta.tensors.has(n) && !isRotaryBuffer(n));
  if (missing !== undefined) {
    throw new DeltaError(`the delta ${delta.source} has no tensor "${missing}", which the base ${base.source} has: the delta is incomplete or made from another base`);
  }
  const plans = new Map<string, TensorPlan>();
  for (const t of delta.tensors.values()) {
    const b = base.tensors.get(t.name);
    const plan: TensorPlan = { name: t.name, dtype: t.dtype, shape: t.shape, op: b === undefined ? "copy" : "add" };
    if (b !== undefined) {
      const problem = legacyAddProblem(t.dtype) ?? baseConversionProblem(t.dtype, b.dtype) ?? blockMismatch(t.shape, b.shape);
      if (problem !== undefined) throw new DeltaError(`base ${base.source}: tensor "${t.name}" cannot be added to the delta's ${t.dtype} [${t.shape}]: ${problem}`);
      plan.base = { dtype: b.dtype, shape: b.shape };
    }
    plans.set(t.name, plan);
  }
  const layout = convertedLayout(delta);
  const outputs = [...layout.files.map((f) => f.file), ...(layout.index === undefined ? [] : [layout.index.file]), ...delta.extraFiles];
  const notProduced = [...(checksums?.keys() ?? [])].find((rel) => !outputs.includes(rel));
  if (notProduced !== undefined) throw new VerifyError(`${options.checksums} lists ${notProduced}, which this delta does not produce; nothing was written`);
  const totalBytes = layout.files.reduce((n, f) => n + f.size, 0);
  await mkdir(out, { recursive: true });
  await checkFreeSpace(out, totalBytes);

  const result: ApplyDeltaResult = {
    target: out, verified: false, unchecked: [], kind: "legacy", files: {}, tensors: plans.size,
    dropped: [...base.tensors.keys()].filter((n) => !delta.tensors.has(n)), fixups: 0, bytes: 0,
  };
  const progress = options.onProgress;
  const pool = new HashPool(options.threads);
  progress?.({ kind: "start", phase: "apply", totalBytes });
  try {
    for (const file of layout.files) {
      const dest = join(out, file.file);
      const sink = await AtomicFile.create(dest, pool.create());
      try {
        const writer = SafetensorsWriter.verbatim(sink, dest, file.headerText);
        for (const t of writer.tensors) {
          const plan = plans.get(t.name)!;
          const chunks = transformTensor("apply", plan, {
            primary: delta.readTensor(t.name),
            base: plan.op === "copy" ? undefined : base.readTensor(t.name),
          });
          await writer.writeTensor(t.name, tap(prefetch(chunks), (chunk) => progress?.({ kind: "advance", phase: "apply", bytes: chunk.length, label: t.name })));
        }
        await writer.finish();
        const size = sink.size;
        result.files[file.file] = { size, sha256: await sink.commit(checksums?.get(file.file)), status: "written" };
      } catch (err) {
        await sink.abort();
        throw err;
      }
    }
    if (layout.index !== undefined) {
      const sink = await AtomicFile.create(join(out, layout.index.file));
      const bytes = new TextEncoder().encode(layout.index.text);
      await sink.write(bytes);
      result.files[layout.index.file] = { size: bytes.length, sha256: await sink.commit(checksums?.get(layout.index.file)), status: "written" };
    }
    for (const rel of delta.extraFiles) {
      const entry = await copyFileAtomic(join(delta.root, rel), join(out, rel), checksums?.get(rel));
      result.files[rel] = { ...entry, status: "written" };
    }
  } finally {
    progress?.({ kind: "end", phase: "apply" });
    await pool.close();
  }
  // Verified only when the publisher's list covered every output.
  result.unchecked = Object.keys(result.files).filter((rel) => checksums?.has(rel) !== true);
  result.verified = checksums !== undefined && result.unchecked.length === 0;
  result.bytes = Object.values(result.files).reduce((n, f) => n + f.size, 0);
  return result;
}
