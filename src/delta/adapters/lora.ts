import { DeltaError } from "../../errors.js";
import { readSmallFile } from "../../io/files.js";
import { MAX_INDEX_BYTES } from "../../limits.js";
import { isExtraFile } from "../../model/extra-files.js";
import { openWeightFiles } from "../../model/open-model.js";
import type { ModelSource } from "../../model/types.js";
import { isArithmeticDType, type FloatDType } from "../../dtypes.js";
import { checkLoraStep, mergedFile, type LoraStep, type MergedTensor } from "../engine/low-rank-merge.js";
import { MERGE_RECORD_FILE, MergeRecord } from "./merge-record.js";
import { fitConfig } from "../engine/model-config.js";
import { layOutOutputs, type OutputLayoutRule } from "../engine/output-layout.js";
import type { PlannedFile } from "../engine/recover.js";
import { copiedFile, textFile } from "../engine/tensor-file.js";
import { isRotaryBuffer } from "../engine/pairing.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, matchAdapter, readLoraConfig, type MatchedAdapter } from "./lora-adapter.js";
import type { Convention, ConventionPlan, DeltaView, Recognition } from "../conventions/types.js";

/**
 * LoRA adapters merged into the base as PEFT's `merge_and_unload()` merges
 * them (huggingface/peft at 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40,
 * tuners/lora/layer.py Linear.merge / get_delta_weight, Embedding.merge),
 * in two variants that differ in the dtype PEFT holds the adapter's
 * parameters in, which decides the last bits:
 *
 *   lora             PEFT >= 0.12, `PeftModel.from_pretrained` with its default
 *                    autocast_adapter_dtype=True: float16/bfloat16 parameters
 *                    are upcast to float32, so the float32 update is added
 *                    into the base's dtype (one rounding).
 *   lora-base-dtype  PEFT 0.6-0.11, or autocast_adapter_dtype=False: the
 *                    parameters take the base layer's dtype; on CPU a half
 *                    precision update is computed in float32 and cast back
 *                    to that dtype before the add (two roundings).
 *
 * The output follows the base's layout and shards (MERGE_LAYOUT: safetensors,
 * named as transformers names them); tensors without an adapter are the base's bytes.
 */

/** A merged model is the base with updates: its files follow the base's. */
export const MERGE_LAYOUT: OutputLayoutRule = { follows: "base" };

/** Whether the delta directory is a PEFT adapter, and which weights file it has. */
async function adapterFiles(view: DeltaView): Promise<{ weights: string | undefined; config: boolean }> {
  const files = await view.files();
  return { config: files.includes(ADAPTER_CONFIG), weights: ADAPTER_WEIGHTS.find((f) => files.includes(f)) };
}

async function recognizeAdapter(view: DeltaView): Promise<Recognition> {
  const { config, weights } = await adapterFiles(view);
  if (!config) return { fits: false, reason: `it has no ${ADAPTER_CONFIG} (not a PEFT adapter)` };
  if (weights === undefined) return { fits: false, reason: `it has ${ADAPTER_CONFIG} but neither ${ADAPTER_WEIGHTS.join(" nor ")}` };
  const raw = await view.json(ADAPTER_CONFIG);
  const type = typeof raw === "object" && raw !== null ? (raw as { peft_type?: unknown }).peft_type : undefined;
  return { fits: true, reason: `${ADAPTER_CONFIG} (peft_type ${JSON.stringify(type)}) with ${weights}: a PEFT adapter, merged into the base` };
}

/** The adapter of `view`, opened and matched to the base; refusals before anything is written. */
export async function openAdapter(view: DeltaView, base: ModelSource, transposeRule: "peft" | "config"): Promise<MatchedAdapter> {
  const { weights } = await adapterFiles(view);
  if (weights === undefined) throw new DeltaError(`${view.source} has no ${ADAPTER_WEIGHTS.join(" or ")}`);
  const config = readLoraConfig(await view.json(ADAPTER_CONFIG), `${view.source}/${ADAPTER_CONFIG}`);
  const model = await openWeightFiles(view.deltaFiles, [weights], weights.endsWith(".bin") ? "pytorch" : "safetensors", view.source);
  try {
    const matched = matchAdapter(model, config, base, `${view.source}/${weights}`, transposeRule);
    if (config.baseModel !== undefined && !namesSameModel(config.baseModel, base) && config.baseModel !== (await baseNameOrPath(base))) {
      matched.notes.push(`${view.source}/${ADAPTER_CONFIG} names its base "${config.baseModel}"; the base given is ${base.source} (every adapted tensor fits it)`);
    }
    return matched;
  } catch (err) {
    await model.close();
    throw err;
  }
}

/** The base config's `_name_or_path`, when it has one. */
async function baseNameOrPath(base: ModelSource): Promise<string | undefined> {
  if (!base.extraFiles.includes("config.json")) return undefined;
  try {
    const config = JSON.parse(await readSmall(base, "config.json")) as { _name_or_path?: unknown };
    return typeof config._name_or_path === "string" ? config._name_or_path : undefined;
  } catch {
    return undefined;
  }
}

/** Whether an adapter's base_model_name_or_path plausibly names the base given (its last path part, case-insensitively). */
function namesSameModel(named: string, base: ModelSource): boolean {
  const last = (s: string) => s.replace(/[\\/]+$/, "").split(/[\\/]/).pop()!.replace(/@.*$/, "").toLowerCase();
  return last(named) === last(base.source) || last(named) === last(base.root);
}

/**
 * A base the merge cannot honour: quantized weights (bitsandbytes, GPTQ or
 * AWQ tensors). Merging into them would need their dequantization, which is
 * not exact; the adapter is merged into the float model. An adapter given as
 * the base, and a config.json with a quantization_config, are refused before
 * this when the base is opened (model/foreign-weights.ts); the tensors of
 * bitsandbytes' layers are not, and a model saved without its config shows
 * nothing else.
 */
export function refuseQuantizedBase(base: ModelSource): void {
  const quantized = [...base.tensors.values()].find((t) => /\.(qweight|qzeros|scales|g_idx|SCB|absmax|quant_map|quant_state[\w.]*|weight_format)$/.test(t.name) || (t.name.endsWith(".weight") && t.shape.length === 2 && !isArithmeticDType(t.dtype)));
  if (quantized !== undefined) {
    throw new DeltaError(`base ${base.source}: tensor "${quantized.name}" (${quantized.dtype}) is quantized; a LoRA adapter is merged into the unquantized model (float16, bfloat16 or float32), which this base is not`);
  }
}

async function readSmall(model: ModelSource, file: string): Promise<string> {
  return readSmallFile(await model.files.whole(file), MAX_INDEX_BYTES, `${model.source}/${file}`, "E_MODEL");
}

/** Where the arithmetic of one adapter's steps comes from (see LoraStep). */
export type StepPrecision = (pair: { embedding: boolean }, target: { dtype: string }) => { factorDType: FloatDType; deltaDType: FloatDType };

/**
 * PEFT >= 0.12 (default autocast): factors as float32, a Linear's update not
 * cast; Embedding.merge casts its update to the base's dtype before the add.
 */
export const PEFT_FLOAT32: StepPrecision = (pair, target) => ({ factorDType: "F32", deltaDType: pair.embedding ? (target.dtype as FloatDType) : "F32" });

/**
 * Parameters in the base layer's dtype (PEFT 0.6-0.11; autocast off): the
 * saved values rounded to it, the float32 update cast back to it when it is
 * half precision (get_delta_weight's cast_to_fp32 path on CPU).
 */
export const PEFT_BASE_DTYPE: StepPrecision = (_pair, target) => {
  const dtype = target.dtype as FloatDType;
  return { factorDType: dtype, deltaDType: dtype === "F16" || dtype === "BF16" ? dtype : "F32" };
};

/**
 * The merged model's tensors and files, for adapters merged in order into
 * `base`. `replaceAs`: whole tensors keep the base's dtype (PEFT's copy) or
 * become float16 (Chinese-LLaMA-Alpaca's `.half()`).
 */
export async function planMerge(
  base: ModelSource,
  adapters: readonly { matched: MatchedAdapter; precision: StepPrecision; filesFrom?: DeltaView }[],
  options: { notes: string[]; replaceAs?: "base" | "F16"; configNote: string },
): Promise<ConventionPlan> {
  const notes = [...options.notes];
  const tensors = new Map<string, MergedTensor>();
  const rotary: string[] = [];
  let merged = 0;
  let replaced = 0;
  for (const t of base.tensors.values()) {
    if (isRotaryBuffer(t.name)) {
      rotary.push(t.name);
      continue;
    }
    let plan: MergedTensor = { name: t.name, dtype: t.dtype, shape: t.shape, from: { model: base, name: t.name, dtype: t.dtype }, steps: [] };
    for (const { matched, precision } of adapters) {
      const whole = matched.whole.get(t.name);
      if (whole !== undefined) {
        // Replaced: the adapter's values in the output dtype; earlier updates are gone with the old values.
        const dtype = options.replaceAs === "F16" ? "F16" : t.dtype;
        plan = { name: t.name, dtype, shape: whole.shape, from: { model: matched.weights, name: whole.name, dtype: whole.dtype }, steps: [] };
        replaced++;
      }
      const pair = matched.pairs.get(t.name);
      if (pair !== undefined) {
        const step: LoraStep = {
          weights: matched.weights,
          a: { name: pair.a.name, dtype: pair.a.dtype as FloatDType, shape: pair.a.shape },
          b: { name: pair.b.name, dtype: pair.b.dtype as FloatDType, shape: pair.b.shape },
          transposed: pair.transposed,
          scaling: pair.scaling,
          ...precision(pair, plan),
        };
        checkLoraStep(step, plan);
        plan.steps.push(step);
        merged++;
      }
    }
    tensors.set(t.name, plan);
  }
  if (rotary.length > 0) notes.push(`left out ${rotary.length} rotary_emb.inv_freq buffers the base carries: they are not weights, transformers >= 4.31 computes them`);
  const layout = layOutOutputs(MERGE_LAYOUT, { base }, [...tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })));
  const record = new MergeRecord(base.source, adapters.map(({ matched }) => matched.source).join(" + "), layout.index);
  for (const f of layout.files) record.weightFile(f.file, f.headerText);
  const files: PlannedFile[] = layout.files.map((f) => mergedFile({ path: f.file, headerText: f.headerText, tensors: new Map(f.tensors.map((t) => [t.name, tensors.get(t.name)!])), record }, f.size));
  const texts: { path: string; text: string }[] = [];
  const copies: { path: string; from: { files: ModelSource["files"]; path: string } }[] = [];
  if (layout.index !== undefined) {
    files.push(textFile(layout.index.file, layout.index.text));
    texts.push({ path: layout.index.file, text: layout.index.text });
  }

  // Side files: the base's, each overridden by the last adapter that ships one (its tokenizer);
  // config.json and generation_config.json from the base, as save_pretrained of the merged model writes them.
  const sideFiles = new Map<string, { files: ModelSource["files"]; path: string }>();
  for (const rel of base.extraFiles) sideFiles.set(rel, { files: base.files, path: rel });
  for (const { filesFrom } of adapters) {
    if (filesFrom === undefined) continue;
    for (const rel of await filesFrom.files()) {
      if (rel.includes("/") || !isExtraFile(rel) || rel === ADAPTER_CONFIG || rel === "config.json" || rel === "generation_config.json") continue;
      sideFiles.set(rel, { files: filesFrom.deltaFiles, path: rel });
    }
  }
  const vocab = grownVocabulary(base, tensors);
  for (const [rel, from] of sideFiles) {
    if (rel === "config.json" && vocab !== undefined) {
      // vocab_size alone rewritten in place, as every convention fits a copied config (model-config.ts).
      const { text } = fitConfig(await readSmall(base, rel), { vocabRows: vocab, floatDtype: undefined }, { rows: base.tensors.get("model.embed_tokens.weight")?.shape[0], label: `${base.source}/config.json` });
      files.push(textFile(rel, text));
      texts.push({ path: rel, text });
      notes.push(`config.json: the base's, with vocab_size ${vocab} (the adapter's embeddings)`);
      continue;
    }
    files.push(copiedFile(rel, from, await from.files.size(rel)));
    copies.push({ path: rel, from });
  }
  files.push(record.plannedFile(layout.files.map((f) => f.file), copies, texts));
  notes.push(`${MERGE_RECORD_FILE}: every output file's and tensor's sha256, as this run wrote them (delta-weights verify DIR --manifest DIR/${MERGE_RECORD_FILE} re-checks them)`);
  notes.push(options.configNote);
  notes.push(`merged ${merged} LoRA update${merged === 1 ? "" : "s"}${replaced > 0 ? `, ${replaced} tensor${replaced === 1 ? "" : "s"} replaced whole by the adapter's` : ""}; the other tensors are the base's bytes`);
  for (const { matched } of adapters) notes.push(...matched.notes);
  return {
    files,
    tensors: tensors.size,
    dropped: rotary,
    notes,
    fixups: () => 0,
    records: [MERGE_RECORD_FILE],
    close: async () => {
      await Promise.all(adapters.map(({ matched }) => matched.weights.close()));
    },
  };
}

/** The output's vocabulary when an adapter's whole embed_tokens grows it, else undefined. */
function grownVocabulary(base: ModelSource, tensors: ReadonlyMap<string, MergedTensor>): number | undefined {
  for (const name of ["model.embed_tokens.weight", "lm_head.weight"]) {
    const out = tensors.get(name);
    const was = base.tensors.get(name);
    if (out !== undefined && was !== undefined && out.shape[0] !== was.shape[0]) return out.shape[0];
  }
  return undefined;
}

/**
 * Opens every adapter (in order) and plans with them; on failure the ones
 * opened are closed (on success the plan closes them).
 */
export async function withAdapters<T>(views: readonly DeltaView[], base: ModelSource, transposeRule: "peft" | "config", planWith: (adapters: { matched: MatchedAdapter; view: DeltaView }[]) => Promise<T>): Promise<T> {
  const adapters: { matched: MatchedAdapter; view: DeltaView }[] = [];
  try {
    for (const view of views) {
      if (!(await recognizeAdapter(view)).fits) throw new DeltaError(`--delta ${view.source} is not a PEFT adapter (it has no ${ADAPTER_CONFIG} and adapter weights): only adapters are merged one after another`);
      adapters.push({ matched: await openAdapter(view, base, transposeRule), view });
    }
    return await planWith(adapters);
  } catch (err) {
    await Promise.all(adapters.map(({ matched }) => matched.weights.close()));
    throw err;
  }
}

function peftConvention(name: string, precision: StepPrecision, configNote: string): Convention {
  return {
    name,
    streams: true,
    recognize: recognizeAdapter,
    chains: true,
    accepts: ["checksums"],
    layout: MERGE_LAYOUT,
    async plan(view) {
      const base = await view.base();
      refuseQuantizedBase(base);
      return withAdapters([view, ...(view.chained ?? [])], base, "peft", (adapters) =>
        planMerge(base, adapters.map(({ matched, view: from }) => ({ matched, precision, filesFrom: from })), { notes: [], configNote }));
    },
  };
}

export const lora = peftConvention(
  "lora",
  PEFT_FLOAT32,
  "merged as PEFT >= 0.12 merge_and_unload() does on CPU (adapter weights in float32, the update added into the base's dtype); --convention lora-base-dtype for PEFT 0.6-0.11",
);

export const loraBaseDType = peftConvention(
  "lora-base-dtype",
  PEFT_BASE_DTYPE,
  "merged as PEFT 0.6-0.11 merge_and_unload() does on CPU (adapter weights in the base's dtype, the update cast to it before the add)",
);
