import { convertInto } from "../../kernels/index.js";
import { TorchColumnMeanAccumulator, TorchSumAccumulator } from "../../kernels/torch-reduce.js";
import { DeltaError, VerifyError } from "../../errors.js";
import { CHUNK_BYTES, MAX_INDEX_BYTES } from "../../limits.js";
import type { ModelSource } from "../../model/types.js";
import type { TensorInfo } from "../../tensors.js";
import { dtypeBytes, isArithmeticDType, type FloatDType } from "../../dtypes.js";
import { checkBaseFits } from "../engine/base-fit.js";
import { ExactReader } from "../engine/exact-reader.js";
import { isRotaryBuffer, sameShape } from "../engine/pairing.js";
import { isForeignInputError } from "../engine/open-input.js";
import { planTensor, type TensorRecipe, type Unpaired } from "../engine/recipe.js";
import { readSmallFile } from "../../io/files.js";
import { fitConfig, TORCH_DTYPE, type TensorFacts } from "../engine/model-config.js";
import { layOutOutputs, type OutputLayoutRule } from "../engine/output-layout.js";
import type { PlannedFile } from "../engine/recover.js";
import { copiedFile, tensorFile, textFile } from "../engine/tensor-file.js";
import { EMBEDDING, gatherEvidence, similarity, type Evidence } from "./evidence.js";
import type { Convention, ConventionPlan, ConventionSums, DeltaView, ExpectedSum, PlanOptions, Recognition } from "../conventions/types.js";

/**
 * The shape every published additive convention shares (FastChat, FastChat
 * v0, Alpaca and its kin, LLaVA, Ziya): output tensors are made from the
 * delta's tensors and the base's by a per-tensor rule, written as
 * safetensors sharded like the delta (ADDITIVE_LAYOUT), with the delta's
 * side files. The
 * conventions differ only in the rule, which state dict they walk, and
 * where the config comes from; each says so in its own module.
 */
export interface AdditiveRules {
  /** Whose tensors make the output: FastChat walks the base's state dict (delta-only tensors are dropped), the others the delta's. */
  walk: "base" | "delta";
  /**
   * The `torch_dtype` the publisher's script loads both models with: every
   * float tensor of the delta and of the base is converted to it (rounded to
   * nearest even, as from_pretrained does) before the rule, and the output
   * holds it. FastChat, LLaVA and Ziya load float16, Alpaca float32.
   */
  dtype: FloatDType;
  /** What one delta tensor becomes: added to its base tensor (the unpaired rows of a grown one as `unpaired` says), or copied as stored. */
  rule(delta: TensorInfo, base: TensorInfo | undefined): { op: "add" | "copy"; unpaired?: Unpaired };
  /** Where config.json and generation_config.json come from: the base (FastChat saves the base model) or the delta. */
  configFrom: "base" | "delta";
  /**
   * Whether a delta tensor no model of the base's kind has is taken from the
   * delta alone (FastChat: dropped; the others: stored). Default: every such
   * tensor. A tensor the base's model has but its files lack is never taken
   * (base-fit.ts): that is a wrong base.
   */
  deltaOnly?: (name: string) => boolean;
}

/**
 * A convention of this shape: how it recognises a delta from what its files
 * show (after the check every tensor convention makes: the weights read as
 * tensors), and its rules.
 */
/** Every additive convention's output follows the delta's shards: the publisher cut the delta as the model is cut. */
export const ADDITIVE_LAYOUT: OutputLayoutRule = { follows: "delta" };

export function additiveConvention(spec: {
  name: string;
  recognize(evidence: Evidence, view: DeltaView): Promise<Recognition> | Recognition;
  rules: AdditiveRules;
  /** Its integrity sums: Alpaca's family (the only publishers that printed sums), which then takes --expect-sum. */
  sums?: ConventionSums;
}): Convention {
  return {
    name: spec.name,
    accepts: ["checksums"],
    layout: ADDITIVE_LAYOUT,
    ...(spec.sums === undefined ? {} : { sums: spec.sums }),
    async recognize(view) {
      try {
        await view.model();
      } catch (err) {
        if (isForeignInputError(err)) throw err; // a LoRA adapter, a GGUF file...: named, whatever the convention
        return { fits: false, reason: `its weights cannot be read as tensors (${err instanceof Error ? err.message : String(err)})` };
      }
      return spec.recognize(await gatherEvidence(view), view);
    },
    plan: (view, options) => planAdditive(view, spec.name, spec.rules, options),
    streams: true,
  };
}

const CONFIG_FILES = new Set(["config.json", "generation_config.json"]);

async function planAdditive(view: DeltaView, name: string, rules: AdditiveRules, options: PlanOptions): Promise<ConventionPlan> {
  const [delta, base] = [await view.model(), await view.base()];
  const notes: string[] = [];

  await refuseSwappedInputs(view, delta, base);
  // Every base tensor the rule needs, with the delta's shape (base-fit.ts);
  // FastChat also asserts that every base tensor has its delta, as a delta
  // without one would leave that tensor out of the model. Rotary buffers are not weights.
  checkBaseFits(delta, base, {
    convention: name,
    storedWhole: (d, b) => rules.rule(d, b).op === "copy",
    deltaOnly: rules.deltaOnly ?? (() => true),
    everyBaseTensor: rules.walk === "base",
    ignored: isRotaryBuffer,
  });

  const recipes = new Map<string, TensorRecipe>();
  const dropped: string[] = [];
  const rotary: string[] = [];
  for (const t of delta.tensors.values()) {
    // A zero buffer (FastChat, Alpaca) or a stored one (Ziya) would be written
    // into the model as a weight; transformers >= 4.31 computes inv_freq itself
    // and ignores a stored one, so it is left out.
    if (isRotaryBuffer(t.name)) {
      rotary.push(t.name);
      continue;
    }
    const paired = base.tensors.get(t.name);
    if (rules.walk === "base" && paired === undefined) {
      dropped.push(t.name);
      continue;
    }
    const rule = rules.rule(t, paired);
    const output = isArithmeticDType(t.dtype) ? { name: t.name, dtype: rules.dtype, shape: t.shape } : t;
    recipes.set(t.name, planTensor(output, paired, rule.op, { unpaired: rule.unpaired ?? "stored", baseSource: base.source, role: "delta", deltaDtype: t.dtype }));
  }
  if (rotary.length > 0) notes.push(`left out ${rotary.length} rotary_emb.inv_freq buffers the delta carries: they are not weights, transformers >= 4.31 computes them`);
  if (dropped.length > 0) notes.push(`tensors only in the delta, left out as FastChat's apply_delta does: ${dropped.join(", ")}`);
  await refuseFullWeights(view, delta, base, recipes);

  const sums = options.expectSum === undefined ? undefined : sumCheck(delta, base, recipes, options.expectSum, ropeTheta(await view.json("config.json")));
  const means = new Map<string, Promise<Uint8Array>>();
  const converted = new Map<string, number>();
  for (const r of recipes.values()) if (r.deltaDtype !== undefined) converted.set(r.deltaDtype, (converted.get(r.deltaDtype) ?? 0) + 1);
  if (converted.size > 0) {
    const counts = [...converted].map(([dtype, n]) => `${n} ${dtype}`).join(" and ");
    notes.push(`${counts} tensors of the delta converted to ${rules.dtype} before the rule, as the publisher's script loads them with torch_dtype ${TORCH_DTYPE[rules.dtype]}`);
  }
  const layout = layOutOutputs(ADDITIVE_LAYOUT, { delta, base }, [...delta.tensors.values()].filter((t) => recipes.has(t.name)).map((t) => ({ name: t.name, dtype: recipes.get(t.name)!.dtype, shape: t.shape })));
  const files: PlannedFile[] = layout.files.map((f) => tensorFile({
    path: f.file,
    header: f.headerText,
    recipes: new Map(f.tensors.map((t) => [t.name, recipes.get(t.name)!])),
    delta,
    base,
    meanRow: (recipe) => {
      let mean = means.get(recipe.name);
      if (mean === undefined) {
        mean = meanRow(base, recipe);
        means.set(recipe.name, mean);
      }
      return mean;
    },
    ...(sums === undefined ? {} : { onTensorBytes: sums.add }),
  }));
  if (layout.index !== undefined) files.push(textFile(layout.index.file, layout.index.text));
  for (const rel of delta.extraFiles) {
    const fromBase = rules.configFrom === "base" && CONFIG_FILES.has(rel) && base.extraFiles.includes(rel);
    const from = fromBase ? base.files : delta.files;
    if (rel === "config.json") {
      files.push(await fittedConfig(fromBase ? base : delta, fromBase ? "base" : "delta", tensorFacts(recipes), notes));
      continue;
    }
    files.push(copiedFile(rel, { files: from, path: rel }, await from.size(rel)));
  }
  if (rules.configFrom === "base") notes.push("config.json and generation_config.json come from the base, as FastChat's apply_delta saves the base model");
  if (sums !== undefined) notes.push(sums.note);
  return {
    files,
    tensors: recipes.size,
    dropped: [...base.tensors.keys()].filter((n) => !recipes.has(n)),
    notes,
    fixups: () => 0,
    ...(sums === undefined ? {} : { finalCheck: sums.check }),
    close: async () => undefined,
  };
}

/** The rows of the embedding and the dtype of the float weights the plan writes. */
function tensorFacts(recipes: ReadonlyMap<string, TensorRecipe>): TensorFacts {
  const embedding = recipes.get(EMBEDDING);
  const float = [...recipes.values()].find((r) => isArithmeticDType(r.dtype));
  return { vocabRows: embedding?.shape.length === 2 ? embedding.shape[0] : undefined, floatDtype: float?.dtype as FloatDType | undefined };
}

/**
 * config.json for the output, checked against the tensors planned before
 * anything is written (model-config.ts): copied as it is when it agrees,
 * else with torch_dtype and vocab_size set as save_pretrained sets them.
 */
async function fittedConfig(model: ModelSource, role: "base" | "delta", facts: TensorFacts, notes: string[]): Promise<PlannedFile> {
  const path = await model.files.whole("config.json");
  const text = await readSmallFile(path, MAX_INDEX_BYTES, "a config", "E_DELTA");
  const own = model.tensors.get(EMBEDDING);
  const fitted = fitConfig(text, facts, { rows: own?.shape.length === 2 ? own.shape[0] : undefined, label: `the ${role}'s config.json (${model.source})` });
  if (fitted.changes.length === 0) return copiedFile("config.json", { files: model.files, path: "config.json" }, await model.files.size("config.json"));
  notes.push(`config.json from the ${role} with ${fitted.changes.join(", ")}: what the tensors written hold, as the publisher's save_pretrained records them`);
  return textFile("config.json", fitted.text);
}

/**
 * Full weights published as if they were a delta (the WizardVicunaLM 13B
 * release): added to the base they would double it. A stored difference
 * points nowhere in particular (cosine near 0) and is about a thousandth of
 * the base's norm; a whole tensor points the same way with the same norm.
 * Checked on a sample of the tensors the rule adds, before anything is written.
 */
async function refuseFullWeights(view: DeltaView, delta: ModelSource, base: ModelSource, recipes: Map<string, TensorRecipe>): Promise<void> {
  const added = [...recipes.values()].filter((r) => r.op === "add");
  // Norm weights show it most clearly (about 1 in a model, about 0 in a difference); then the largest matrices.
  const sample = [...added.filter((r) => r.shape.length === 1).slice(0, 3), ...added.filter((r) => r.shape.length === 2).slice(0, 2)];
  let whole = 0;
  let example: { name: string; cosine: number; normRatio: number } | undefined;
  for (const r of sample) {
    const s = await similarity(delta, base, r.name);
    if (s !== undefined && s.cosine > 0.9 && s.normRatio > 0.5 && s.normRatio < 2) {
      whole++;
      example ??= { name: r.name, ...s };
    }
  }
  if (example !== undefined && whole * 2 > sample.length) {
    throw new DeltaError(
      `${view.source} is already a model, not a delta: its tensor "${example.name}" points the same way as the base's (cosine ${example.cosine.toFixed(5)}, norm ratio ${example.normRatio.toFixed(4)}), ` +
        `so adding it to the base would double the weights; use it as it is (delta-weights convert ${view.source} OUT gives safetensors), or publish a delta of it with make-delta --target ${view.source}`,
    );
  }
}

/**
 * A base and a delta given the wrong way round: the "delta" is a whole model
 * and the "base" a difference, so the delta's tensors are many times the
 * base's (a real difference is about a thousandth of its base). Norm weights
 * show it most clearly: about 1 in a model, about 0 in a difference.
 * Checked before the shapes, whose complaints would mislead.
 */
async function refuseSwappedInputs(view: DeltaView, delta: ModelSource, base: ModelSource): Promise<void> {
  const paired = [...delta.tensors.values()].filter((t) => !isRotaryBuffer(t.name) && base.tensors.has(t.name) && sameShape(t.shape, base.tensors.get(t.name)!.shape));
  const sample = [...paired.filter((t) => t.shape.length === 1).slice(0, 3), ...paired.filter((t) => t.shape.length === 2).slice(0, 2)];
  let larger = 0;
  let largerMatrices = 0;
  let example: { name: string; normRatio: number } | undefined;
  for (const t of sample) {
    const s = await similarity(delta, base, t.name);
    if (s !== undefined && s.normRatio > SWAPPED_NORM_RATIO) {
      larger++;
      if (t.shape.length === 2) largerMatrices++;
      example ??= { name: t.name, normRatio: s.normRatio };
    }
  }
  // A matrix must agree when one was sampled: norm weights stored as offsets near 0 (Gemma's) may move more than they are.
  const matrices = sample.filter((t) => t.shape.length === 2).length;
  if (example !== undefined && larger * 2 > sample.length && (matrices === 0 || largerMatrices > 0)) {
    throw new DeltaError(
      `--base ${base.source} looks like a delta and --delta ${view.source} like the model it applies to: tensor "${example.name}" ` +
        `${Number.isFinite(example.normRatio) ? `of the --delta has ${example.normRatio.toFixed(0)} times the norm of the --base's` : "is all zeros in the --base and not in the --delta"}, ` +
        "where a delta is a small difference (about a thousandth of its base); --base and --delta look swapped: pass the model you hold as --base and the published delta as --delta",
      { rule: "inputs-swapped" },
    );
  }
}

/** A delta tensor this many times its base tensor's norm is no difference: a real one is about 1e-3 of it, a large fine-tune's below 0.5. */
const SWAPPED_NORM_RATIO = 10;

/**
 * Alpaca's `smart_tokenizer_and_embedding_resize`: the base's new rows are
 * the mean of its existing rows, `mean(dim=0)` of the float32 matrix as
 * torch computes it on CPU (kernels/torch-reduce.ts), in the output dtype.
 */
async function meanRow(base: ModelSource, recipe: TensorRecipe): Promise<Uint8Array> {
  const b = recipe.base!;
  const [rows, cols] = [b.shape[0] ?? 1, b.shape[1] ?? 1];
  const accumulator = new TorchColumnMeanAccumulator(rows, cols);
  const from = b.dtype as FloatDType;
  const rowBytes = cols * dtypeBytes(from);
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / Math.max(1, rowBytes)));
  const reader = new ExactReader(base.readTensor(b.name), `base tensor "${b.name}"`);
  try {
    for (let row = 0; row < rows; row += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - row);
      const raw = await reader.read(n * rowBytes);
      const f32 = new Uint8Array(n * cols * 4);
      convertInto(from, "F32", raw, f32);
      accumulator.push(new Float32Array(f32.buffer, 0, n * cols));
    }
  } finally {
    await reader.close();
  }
  const mean = new Uint8Array(accumulator.means().buffer);
  if (recipe.dtype === "F32") return mean;
  const out = new Uint8Array(cols * dtypeBytes(recipe.dtype));
  convertInto("F32", recipe.dtype as FloatDType, mean, out);
  return out;
}

/**
 * Alpaca's integrity check (weight_diff.py `recover`): the sum of every
 * tensor of the recovered state dict, each tensor summed on its own as torch
 * sums a float32 tensor, the sums added in float32 in state-dict order, must
 * be within the tolerance of a published constant. The delta's state dict
 * holds rotary inv_freq buffers when it was made with transformers 4.28-4.30,
 * and so did the publisher's recovered model: their values (the base's, or
 * transformers' formula) count, although they are not written.
 */
function sumCheck(delta: ModelSource, base: ModelSource, recipes: Map<string, TensorRecipe>, expected: ExpectedSum, theta: number) {
  for (const r of recipes.values()) {
    if (r.dtype !== "F32") throw new DeltaError(`an integrity sum is defined for float32 models; tensor "${r.name}" is ${r.dtype}`);
  }
  const accumulators = new Map<string, TorchSumAccumulator>();
  const sums = new Map<string, number>();
  return {
    note: `integrity sum checked against ${expected.value} (${expected.from}), tolerance ${expected.tolerance}`,
    add(recipe: TensorRecipe, chunk: Uint8Array, last: boolean): void {
      let acc = accumulators.get(recipe.name);
      if (acc === undefined) {
        acc = new TorchSumAccumulator(recipe.shape.reduce((n, d) => n * d, 1));
        accumulators.set(recipe.name, acc);
      }
      const aligned = chunk.byteOffset % 4 === 0 ? chunk : new Uint8Array(chunk);
      acc.push(new Float32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4));
      if (last) {
        sums.set(recipe.name, acc.result());
        accumulators.delete(recipe.name);
      }
    },
    async check(): Promise<void> {
      // Python's sum(): starts at 0, one float32 addition per tensor, in state-dict order.
      let total = 0;
      for (const t of delta.tensors.values()) {
        const s = isRotaryBuffer(t.name) ? await rotarySum(base, t, theta) : sums.get(t.name);
        if (s === undefined) continue;
        total = Math.fround(total + s);
      }
      if (!(Math.abs(total - expected.value) <= expected.tolerance)) {
        throw new VerifyError(`the recovered model sums to ${total}, ${expected.from} says ${expected.value} (tolerance ${expected.tolerance}): the base or the delta is not the one the publisher used; nothing was written under a final name`);
      }
    },
  };
}

/**
 * The sum of a rotary inv_freq buffer as the publisher's model held it: the
 * base's stored one, else what transformers computes when it builds the
 * model, `1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))` in float32.
 */
async function rotarySum(base: ModelSource, t: TensorInfo, theta: number): Promise<number> {
  const stored = base.tensors.get(t.name);
  if (stored !== undefined && stored.dtype === "F32" && stored.shape.length === 1) {
    const acc = new TorchSumAccumulator(stored.shape[0]!);
    for await (const chunk of base.readTensor(t.name)) {
      const aligned = chunk.byteOffset % 4 === 0 ? chunk : new Uint8Array(chunk);
      acc.push(new Float32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4));
    }
    return acc.result();
  }
  const half = t.shape[0] ?? 0;
  const dim = 2 * half;
  const values = new Float32Array(half);
  for (let i = 0; i < half; i++) values[i] = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / dim)));
  const acc = new TorchSumAccumulator(half);
  acc.push(values);
  return acc.result();
}

/** The rotary base of a LLaMA config (`rope_theta`, 10000 before it was configurable). */
function ropeTheta(config: unknown): number {
  const theta = typeof config === "object" && config !== null && Object.hasOwn(config, "rope_theta") ? (config as { rope_theta: unknown }).rope_theta : undefined;
  return typeof theta === "number" && theta > 0 ? theta : 10000;
}
