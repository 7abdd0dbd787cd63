/**
 * Koala (Berkeley, young-geng/koala): a diff against LLaMA in EasyLM's
 * streaming checkpoint format (one extension-less file of msgpack records,
 * bfloat16, Flax kernels, Meta's rotary layout). Its users recover it in
 * three passes with EasyLM's scripts (read at young-geng/EasyLM):
 *   convert_torch_to_easylm.py (f082cf87): the base from Meta's checkpoint,
 *       ranks concatenated, linear weights transposed, float16 kept;
 *   diff_checkpoint.py --recover_diff (75ca80dd): base + diff over numpy
 *       arrays: float16 with bfloat16 promotes to float32 (one float32 add),
 *       saved as bfloat16 (round to nearest even);
 *   convert_easylm_to_hf.py (0e8e52d3): kernels transposed back, cast to
 *       float16 (round to nearest even), wq/wk permuted as transformers'
 *       conversion permutes them.
 * Here in one pass, straight to the Hugging Face layout: each output
 * element is f16(bf16(f32(base + diff))), the base read in the Hugging Face
 * layout (a Meta checkpoint is read as its conversion, whose tensors are
 * Meta's values, moved; a Hugging Face conversion of Meta's float16 weights
 * holds the same values) and the diff read transposed and permuted to match.
 * No publisher hash exists: the result is unverified, its SHA-256s in the
 * summary's file list.
 */
import { createHash } from "node:crypto";
import { dtypeBytes, type DType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import type { OutputFile } from "../../formats/output-layout.js";
import { RECORD_HEADER_BYTES, looksLikeEasyLmCheckpoint, scanEasyLmCheckpoint, type EasyLmRecord } from "../../easylm/streaming-checkpoint.js";
import { readJsonFile } from "../../io/files.js";
import { CONVERTER_MAX_SHARD_BYTES } from "../../model/meta-checkpoint.js";
import type { ModelSource } from "../../model/types.js";
import type { RandomAccess } from "../../tensors.js";
import { compareCodePoints } from "../../text.js";
import { CHUNK_BYTES, MAX_INDEX_BYTES } from "../../limits.js";
import type { InputFile, PlannedFile } from "../engine/recover.js";
import { copiedFile, textFile, writeRecipes, type TensorFileSpec, type TensorReader } from "../engine/tensor-file.js";
import { layOutOutputs, type OutputLayoutRule } from "../engine/output-layout.js";
import { planTensor, type TensorRecipe } from "../engine/recipe.js";
import { recoverTensor, rowBlocks } from "../engine/tensor-transform.js";
import type { Convention, ConventionPlan, DeltaView } from "../conventions/types.js";

/** Shards as save_pretrained cuts them (10 GB), in the converted model's tensor order: the diff is one file, the base perhaps Meta's checkpoints. */
const KOALA_LAYOUT: OutputLayoutRule = { follows: "fresh", maxShardBytes: CONVERTER_MAX_SHARD_BYTES };
/** The list of the recovered files' SHA-256, written last into the target. */
export const RECOVERY_DIGESTS = "koala-recovery.sha256";

/** One Hugging Face tensor and where it is in the diff. */
export interface KoalaTensor {
  name: string;
  shape: number[];
  record: EasyLmRecord;
  /** A Flax kernel, stored [in, out]: read transposed. */
  transposed: boolean;
  /** q/k: Meta's rotary layout, permuted with heads of this many rows. */
  headRows?: number;
}

async function easyLmFiles(view: DeltaView): Promise<string[]> {
  const candidates = (await view.files()).filter((f) => !f.includes("/") && !f.includes("."));
  const found: string[] = [];
  for (const file of candidates) if (looksLikeEasyLmCheckpoint(await view.head(file, RECORD_HEADER_BYTES))) found.push(file);
  return found;
}

export const koala: Convention = {
  name: "koala",
  streams: true,
  accepts: ["checksums"],
  layout: KOALA_LAYOUT,

  async recognize(view) {
    const files = await easyLmFiles(view);
    if (files.length === 0) return { fits: false, reason: "no extension-less EasyLM streaming checkpoint (msgpack records of key paths and flax arrays)" };
    return { fits: true, reason: `${files.join(", ")}: EasyLM streaming checkpoint (msgpack records of key paths and flax arrays), as Koala's diffs are published` };
  },

  async plan(view) {
    const files = await easyLmFiles(view);
    if (files.length !== 1) {
      throw new DeltaError(`${view.source} holds ${files.length} EasyLM checkpoints (${files.join(", ")}): put the one to apply in a folder of its own and name that folder as --delta`);
    }
    const file = files[0]!;
    const label = `${view.source}/${file}`;
    const source = await view.deltaFiles.open(file);
    let records: EasyLmRecord[];
    try {
      records = await scanEasyLmCheckpoint((p, n) => source.read(p, n), source.size, label);
    } catch (err) {
      await source.close();
      throw err;
    }
    try {
      const base = await view.base();
      const tensors = mapToHuggingFace(label, records, base, await attentionHeads(base));
      const notes = [
        "Koala's diff: each element f16(bf16(f32(base + diff))), as EasyLM's diff_checkpoint.py and convert_easylm_to_hf.py compute it",
        // The summary's own verdict says unverified (or what --checksums covered): this says why.
        "Koala's publishers printed no hashes (EasyLM#21)",
      ];
      const dropped = [...base.tensors.keys()].filter((n) => !tensors.some((t) => t.name === n));
      const recipes = new Map(tensors.map((t) => [t.name, koalaRecipe(t, base)]));
      const layout = layOutOutputs(KOALA_LAYOUT, { base }, tensors.map((t) => ({ name: t.name, dtype: "F16" as const, shape: t.shape })));
      const diffFile = { files: view.deltaFiles, path: file };
      const diff = diffReader(tensors, source, diffFile);
      const planned: PlannedFile[] = layout.files.map((f) => shardFile(f, recipes, base, diff, diffFile));
      if (layout.index !== undefined) planned.push(textFile(layout.index.file, layout.index.text));
      for (const rel of base.extraFiles) planned.push(copiedFile(rel, { files: base.files, path: rel }, await base.files.size(rel)));
      if (base.extraFiles.length > 0) notes.push(`config and tokenizer files from the base (${base.extraFiles.join(", ")}): the diff carries none`);
      planned.push(...recordDigests(planned));
      notes.push(`${RECOVERY_DIGESTS}: the SHA-256 of every file written (sha256sum's format), to compare two recoveries: delta-weights verify DIR --checksums DIR/${RECOVERY_DIGESTS}`);
      return {
        files: planned,
        tensors: tensors.length,
        dropped,
        notes,
        fixups: () => 0,
        // The digests record this run: a checksums list covering the model's files verifies it without them.
        records: [RECOVERY_DIGESTS],
        close: () => source.close(),
      } satisfies ConventionPlan;
    } catch (err) {
      await source.close();
      throw err;
    }
  },
};

/**
 * The Hugging Face tensor for every record, checked against the base: the
 * key paths EasyLM's LLaMA uses, the same layers as the base, the shapes
 * transposed, float16 base tensors (the diff was made against Meta's
 * float16 weights). EasyLM's tree_map needs both trees identical: a record
 * or a base weight without its counterpart is refused.
 */
export function mapToHuggingFace(label: string, records: EasyLmRecord[], base: ModelSource, heads: number | undefined): KoalaTensor[] {
  const byPath = new Map(records.map((r) => [r.key.join("/"), r]));
  const layers = new Set(records.filter((r) => r.key[0] === "transformer" && r.key[1] === "h").map((r) => r.key[2]));
  const n = layers.size;
  const embedding = byPath.get("transformer/wte/embedding");
  if (embedding === undefined || embedding.shape.length !== 2) throw new DeltaError(`${label} has no 2-D "transformer/wte/embedding": not an EasyLM LLaMA checkpoint`);
  const dim = embedding.shape[1]!;
  const q = base.tensors.get("model.layers.0.self_attn.q_proj.weight");
  const headRows = heads === undefined || dim % heads !== 0 || (dim / heads) % 2 !== 0 ? undefined : dim / heads;
  if (q !== undefined && headRows === undefined) throw new DeltaError(`the base ${base.source} does not say how many attention heads it has (config.json num_attention_heads): the rotary permutation needs it`);
  const tensors: KoalaTensor[] = [];
  const used = new Set<string>();
  const add = (name: string, path: string, transposed: boolean, permuted = false) => {
    const record = byPath.get(path);
    if (record === undefined) throw new DeltaError(`${label} has no "${path}" (for ${name}): EasyLM's recovery needs the diff and the base to hold the same tensors`);
    used.add(path);
    const shape = transposed ? [...record.shape].reverse() : [...record.shape];
    if (record.dtype !== "BF16" && record.dtype !== "F16" && record.dtype !== "F32") throw new DeltaError(`${label}: "${path}" is ${record.dtype}`);
    const b = base.tensors.get(name);
    if (b === undefined) throw new DeltaError(`the base ${base.source} has no tensor "${name}", which the diff's "${path}" is added to: a base of another size or layout`);
    if (b.shape.length !== shape.length || b.shape.some((d, i) => d !== shape[i])) {
      throw new DeltaError(`base ${base.source}: tensor "${name}" is [${b.shape.join(", ")}], but the diff's "${path}" gives [${shape.join(", ")}]: the diff is for another model size`);
    }
    if (b.dtype !== "F16") throw new DeltaError(`base ${base.source}: tensor "${name}" is ${b.dtype}; Koala's diff was made against Meta's float16 weights, which a ${b.dtype} copy no longer holds`);
    tensors.push({ name, shape, record, transposed, ...(permuted && headRows !== undefined ? { headRows } : {}) });
  };
  add("model.embed_tokens.weight", "transformer/wte/embedding", false);
  for (let i = 0; i < n; i++) {
    const h = `transformer/h/${i}`;
    const p = `model.layers.${i}`;
    add(`${p}.self_attn.q_proj.weight`, `${h}/attention/wq/kernel`, true, true);
    add(`${p}.self_attn.k_proj.weight`, `${h}/attention/wk/kernel`, true, true);
    add(`${p}.self_attn.v_proj.weight`, `${h}/attention/wv/kernel`, true);
    add(`${p}.self_attn.o_proj.weight`, `${h}/attention/wo/kernel`, true);
    add(`${p}.mlp.gate_proj.weight`, `${h}/feed_forward/w1/kernel`, true);
    add(`${p}.mlp.down_proj.weight`, `${h}/feed_forward/w2/kernel`, true);
    add(`${p}.mlp.up_proj.weight`, `${h}/feed_forward/w3/kernel`, true);
    add(`${p}.input_layernorm.weight`, `${h}/attention_norm/kernel`, false);
    add(`${p}.post_attention_layernorm.weight`, `${h}/ffn_norm/kernel`, false);
  }
  add("model.norm.weight", "transformer/ln_f/kernel", false);
  add("lm_head.weight", "lm_head/kernel", true);
  for (const path of byPath.keys()) if (!used.has(path)) throw new DeltaError(`${label} holds "${path}", which is not a weight of EasyLM's LLaMA with ${n} layers`);
  for (const name of base.tensors.keys()) {
    if (!tensors.some((t) => t.name === name) && !name.endsWith("rotary_emb.inv_freq")) {
      throw new DeltaError(`the base ${base.source} has tensor "${name}", which the diff ${label} lacks: a base of another size or layout`);
    }
  }
  return tensors;
}

/** The base's attention heads (config.json num_attention_heads: a Meta checkpoint's is written from params.json). */
export async function attentionHeads(base: ModelSource): Promise<number | undefined> {
  if (!base.extraFiles.includes("config.json")) return undefined;
  const config = await readJsonFile(await base.files.whole("config.json"), MAX_INDEX_BYTES, "config.json", "E_MODEL");
  const heads = (config as { num_attention_heads?: unknown } | null)?.num_attention_heads;
  return typeof heads === "number" && Number.isSafeInteger(heads) && heads > 0 ? heads : undefined;
}

/** The engine's recipe for one tensor: the diff paired row by row (transposed, q/k permuted), f16(bf16(f32(base + diff))). */
function koalaRecipe(t: KoalaTensor, base: ModelSource): TensorRecipe {
  const b = base.tensors.get(t.name);
  return planTensor({ name: t.name, dtype: "F16", shape: t.shape }, b === undefined ? undefined : { name: t.name, dtype: b.dtype as DType, shape: b.shape }, "add", {
    baseSource: base.source,
    role: "diff",
    deltaDtype: t.record.dtype as DType,
    rowOrder: { order: { transposed: t.transposed, ...(t.headRows === undefined ? {} : { headRows: t.headRows }) }, storedShape: t.record.shape },
    // numpy adds float16 and bfloat16 in float32; diff_checkpoint.py saves the sum as bfloat16; convert_easylm_to_hf.py casts to float16.
    sum: { promoted: true, through: "BF16" },
  });
}

/** The diff's records as the engine's delta tensors, under their Hugging Face names (shapes as stored). */
function diffReader(tensors: readonly KoalaTensor[], diff: RandomAccess, diffFile: InputFile): TensorReader {
  const byName = new Map(tensors.map((t) => [t.name, t.record]));
  const record = (name: string): EasyLmRecord => {
    const r = byName.get(name);
    if (r === undefined) throw new DeltaError(`internal: the diff has no record for "${name}"`);
    return r;
  };
  const checked = (name: string, start: number, length: number): EasyLmRecord => {
    const r = record(name);
    if (start < 0 || length < 0 || start + length > r.byteLength) throw new DeltaError(`internal: bytes [${start}, ${start + length}) of "${r.key.join("/")}", which holds ${r.byteLength}`);
    return r;
  };
  return {
    tensors: new Map(tensors.map((t) => [t.name, { dtype: t.record.dtype, shape: [...t.record.shape], file: diffFile.path }])),
    files: diffFile.files,
    async *readTensor(name, range = {}) {
      const start = range.start ?? 0;
      const end = range.end ?? record(name).byteLength;
      const r = checked(name, start, end - start);
      const step = range.chunkBytes ?? CHUNK_BYTES;
      for (let at = start; at < end; at += step) yield await diff.read(r.dataStart + at, Math.min(step, end - at));
    },
    readRange: (name, start, length) => diff.read(checked(name, start, length).dataStart + start, length),
  };
}

/** One output safetensors shard, each tensor made by the engine from the base and the diff as it is written. */
function shardFile(file: OutputFile, recipes: ReadonlyMap<string, TensorRecipe>, base: ModelSource, diff: TensorReader, diffFile: InputFile): PlannedFile {
  const baseFiles = new Set(file.tensors.map((t) => base.tensors.get(t.name)!.file));
  const spec: TensorFileSpec = { path: file.file, header: file.headerText, recipes: new Map(file.tensors.map((t) => [t.name, recipes.get(t.name)!])), delta: diff, base };
  return {
    path: file.file,
    size: file.size,
    reads: [diffFile, ...[...baseFiles].map((path) => ({ files: base.files, path }))],
    // Written here rather than as a tensorFile: Koala's outputs stay safetensors (--format is refused), and its digests list wraps every file.
    produce: (sink, context) => writeRecipes(spec, SAFETENSORS_OUTPUT.verbatim(sink, sink.finalPath, spec.header), context, false),
  };
}

/** The tensor's float16 bytes as the engine makes them, a block of whole rows (whole heads for q/k) of about `blockBytes` of diff at a time. */
export async function* recovered(t: KoalaTensor, base: ModelSource, diff: RandomAccess, advance: (bytes: number) => void, blockBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  // The reader's file set names where the diff is for the plan's input bookkeeping; a lone tensor read here needs only its ranges.
  const reader = diffReader([t], diff, { files: base.files, path: diff.label });
  const recipe = koalaRecipe(t, base);
  const block = rowBlocks(recipe, blockBytes).blockElements;
  const chunks = recoverTensor(recipe, {
    ...(t.transposed ? {} : { delta: reader.readTensor(t.name, { chunkBytes: block * dtypeBytes(t.record.dtype) }) }),
    deltaRange: (start, length) => reader.readRange!(t.name, start, length),
    base: base.readTensor(t.name, { chunkBytes: block * 2 }),
  }, {}, blockBytes);
  for await (const chunk of chunks) {
    advance(chunk.length);
    yield chunk;
  }
}

/**
 * Every planned file hashed as it is written, and one more file, written
 * last, listing those digests as sha256sum does: no publisher hash exists,
 * so this is what two recoveries (two users, two machines) can compare.
 * Files are produced one after another in plan order, each rewritten on a
 * rerun (none has a digest to be kept by), so the list sees every digest.
 */
function recordDigests(files: PlannedFile[]): PlannedFile[] {
  const digests = new Map<string, string>();
  for (const file of files) {
    const produce = file.produce.bind(file);
    file.produce = async (sink, context) => {
      const hash = createHash("sha256");
      const write = async (bytes: Uint8Array) => {
        hash.update(bytes);
        await sink.write(bytes);
      };
      // Everything else of the sink as it is (its getters read its private state, so they run on the sink itself).
      const hashing = new Proxy(sink, {
        get(target, property) {
          if (property === "write") return write;
          const value: unknown = Reflect.get(target, property, target);
          return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
      const result = await produce(hashing, context);
      digests.set(file.path, hash.digest("hex"));
      return result;
    };
  }
  const listed = files.map((f) => f.path).sort(compareCodePoints);
  const size = listed.reduce((n, path) => n + 64 + 2 + Buffer.byteLength(path) + 1, 0);
  return [{
    path: RECOVERY_DIGESTS,
    size,
    async produce(sink, { advance }) {
      const text = listed.map((path) => {
        const digest = digests.get(path);
        if (digest === undefined) throw new DeltaError(`internal: ${path} was not written before ${RECOVERY_DIGESTS}`);
        return `${digest}  ${path}\n`;
      }).join("");
      const bytes = new TextEncoder().encode(text);
      await sink.write(bytes);
      advance(bytes.length, RECOVERY_DIGESTS);
      return {};
    },
  }];
}
