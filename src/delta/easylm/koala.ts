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
import { dtypeBytes } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import { convertedLayout, type OutputFile } from "../../formats/output-layout.js";
import { planShards } from "../../formats/shard-plan.js";
import { RECORD_HEADER_BYTES, looksLikeEasyLmCheckpoint, scanEasyLmCheckpoint, type EasyLmRecord } from "../../easylm/streaming-checkpoint.js";
import { readJsonFile } from "../../io/files.js";
import { addInto, convertInto } from "../../kernels/index.js";
import { releasedChunk } from "../../io/memory.js";
import { CONVERTER_MAX_SHARD_BYTES } from "../../model/meta-checkpoint.js";
import type { ModelSource } from "../../model/types.js";
import { permutedSourceRow } from "../../model/meta-checkpoint.js";
import type { RandomAccess } from "../../tensors.js";
import { compareCodePoints } from "../../text.js";
import { MAX_INDEX_BYTES } from "../../limits.js";
import type { InputFile, PlannedFile } from "../engine/recover.js";
import { copiedFile, textFile } from "../engine/tensor-file.js";
import type { Convention, ConventionPlan, DeltaView } from "../conventions/types.js";
import { numel } from "../engine/pairing.js";

/** How much of a diff tensor is gathered at once: a transposed block is one read per kernel row of this / rows bytes, so larger blocks mean fewer, longer reads. */
const DIFF_BLOCK_BYTES = 4 * 1024 * 1024;
/** Span reads of a transposed block in flight at once. */
const READS_IN_FLIGHT = 64;
/** Elements put through the float32 arithmetic at once. */
const ARITHMETIC_ELEMENTS = 256 * 1024;
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
      // Shards as save_pretrained cuts them (10 GB), in the converted model's tensor order.
      const shards = planShards(tensors.map((t) => ({ name: t.name, byteLength: numel(t.shape) * 2 })), CONVERTER_MAX_SHARD_BYTES);
      const layout = convertedLayout(shards.files, tensors.map((t) => ({ name: t.name, dtype: "F16" as const, shape: t.shape, file: shards.assignment.get(t.name)! })));
      const byName = new Map(tensors.map((t) => [t.name, t]));
      const planned: PlannedFile[] = layout.files.map((f) => shardFile(f, byName, base, source, { files: view.deltaFiles, path: file }));
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

/** One output safetensors shard, each tensor made from the base and the diff as it is written. */
function shardFile(file: OutputFile, byName: ReadonlyMap<string, KoalaTensor>, base: ModelSource, diff: RandomAccess, diffFile: InputFile): PlannedFile {
  const baseFiles = new Set(file.tensors.map((t) => base.tensors.get(t.name)!.file));
  return {
    path: file.file,
    size: file.size,
    reads: [diffFile, ...[...baseFiles].map((path) => ({ files: base.files, path }))],
    async produce(sink, { advance }) {
      const writer = SAFETENSORS_OUTPUT.verbatim(sink, sink.finalPath, file.headerText);
      for (const spec of writer.tensors) {
        const t = byName.get(spec.name)!;
        await writer.writeTensor(t.name, recovered(t, base, diff, (bytes) => advance(bytes, t.name)));
      }
      await writer.finish();
      advance(0, file.file);
      return {};
    },
  };
}

/** The tensor's float16 bytes: f16(bf16(f32(base + diff))), a block of whole rows (of about `blockBytes`) at a time. */
export async function* recovered(t: KoalaTensor, base: ModelSource, diff: RandomAccess, advance: (bytes: number) => void, blockBytes = DIFF_BLOCK_BYTES): AsyncGenerator<Uint8Array> {
  const item = dtypeBytes(t.record.dtype);
  const [rows, cols] = t.shape.length === 2 ? [t.shape[0]!, t.shape[1]!] : [1, t.shape[0]!];
  // Whole rows (whole heads for a permuted tensor), about a block's worth.
  const unit = t.headRows ?? 1;
  const blockRows = unit * Math.max(1, Math.floor(blockBytes / (unit * cols * item)));
  const bf = new Uint8Array(Math.min(rows * cols, ARITHMETIC_ELEMENTS) * 4);
  const df = new Uint8Array(bf.length);
  const sum = new Uint8Array(bf.length);
  const rounded = new Uint8Array(bf.length / 2);
  // The transposed read's buffers, reused block after block.
  const scratch = t.transposed ? { spans: new Uint8Array(blockRows * cols * item), rows: new Uint8Array(blockRows * cols * item) } : undefined;
  for (let row = 0; row < rows; row += blockRows) {
    const k = Math.min(blockRows, rows - row);
    const count = k * cols;
    const d = await diffRows(t, diff, row, k, cols, scratch);
    const b = await collect(base.readTensor(t.name, { start: row * cols * 2, end: (row + k) * cols * 2, chunkBytes: count * 2 }), count * 2);
    const out = new Uint8Array(count * 2);
    for (let e = 0; e < count; e += ARITHMETIC_ELEMENTS) {
      const n = Math.min(ARITHMETIC_ELEMENTS, count - e);
      convertInto("F16", "F32", b.subarray(e * 2, (e + n) * 2), bf.subarray(0, n * 4));
      if (t.record.dtype === "F32") df.set(d.subarray(e * 4, (e + n) * 4));
      else convertInto(t.record.dtype as "BF16" | "F16", "F32", d.subarray(e * item, (e + n) * item), df.subarray(0, n * 4));
      // numpy adds float16 and bfloat16 in float32; diff_checkpoint.py saves the sum as bfloat16; convert_easylm_to_hf.py casts to float16.
      addInto("F32", bf.subarray(0, n * 4), df.subarray(0, n * 4), sum.subarray(0, n * 4));
      convertInto("F32", "BF16", sum.subarray(0, n * 4), rounded.subarray(0, n * 2));
      convertInto("BF16", "F16", rounded.subarray(0, n * 2), out.subarray(e * 2, (e + n) * 2));
    }
    if (scratch === undefined) releasedChunk(d.length);
    releasedChunk(b.length);
    advance(out.length);
    yield out;
    // The writer is done with it once it asks for the next block.
    releasedChunk(out.length);
  }
}

/**
 * Rows [row, row + k) of the diff tensor in the Hugging Face layout, in the
 * diff's dtype. A Flax kernel [in, out] holds output row r as its column r:
 * the block's columns are one contiguous span of every kernel row, read
 * span by span (many reads in flight) and transposed in memory; for q/k the
 * rows of each head are then put in Hugging Face's rotary order (output row
 * j * head/2 + i of a head is its column 2i + j).
 */
async function diffRows(t: KoalaTensor, diff: RandomAccess, row: number, k: number, cols: number, scratch?: { spans: Uint8Array; rows: Uint8Array }): Promise<Uint8Array> {
  const { record } = t;
  const item = dtypeBytes(record.dtype);
  if (scratch === undefined) return diff.read(record.dataStart + row * cols * item, k * cols * item);
  const inDim = record.shape[0]!;
  const outDim = record.shape[1]!;
  const spanBytes = k * item;
  const spans = scratch.spans.subarray(0, inDim * spanBytes);
  for (let i0 = 0; i0 < inDim; i0 += READS_IN_FLIGHT) {
    const batch: Promise<void>[] = [];
    for (let i = i0; i < Math.min(inDim, i0 + READS_IN_FLIGHT); i++) {
      batch.push(diff.read(record.dataStart + (i * outDim + row) * item, spanBytes).then((bytes) => {
        spans.set(bytes, i * spanBytes);
        releasedChunk(bytes.length);
      }));
    }
    await Promise.all(batch);
  }
  // spans is [inDim, k]: transpose to [k, inDim], each output row taken from the span column it comes from.
  const out = scratch.rows.subarray(0, k * cols * item);
  const from = item === 2 ? new Uint16Array(spans.buffer, 0, spans.length / 2) : new Uint32Array(spans.buffer, 0, spans.length / 4);
  const to = item === 2 ? new Uint16Array(out.buffer, 0, out.length / 2) : new Uint32Array(out.buffer, 0, out.length / 4);
  for (let r = 0; r < k; r++) {
    const column = t.headRows === undefined ? r : permutedSourceRow(row + r, t.headRows) - row;
    const base = r * inDim;
    for (let i = 0, src = column; i < inDim; i++, src += k) to[base + i] = from[src]!;
  }
  return out;
}

async function collect(chunks: AsyncIterable<Uint8Array>, length: number): Promise<Uint8Array> {
  let out: Uint8Array | undefined;
  let at = 0;
  for await (const chunk of chunks) {
    // A block served as one chunk (the usual case) is used as it is: no second copy in memory.
    if (at === 0 && chunk.length === length) {
      out = chunk;
      at = length;
      continue;
    }
    out ??= new Uint8Array(length);
    if (at + chunk.length > length) throw new DeltaError(`internal: read more than the ${length} bytes expected`);
    out.set(chunk, at);
    at += chunk.length;
  }
  if (at !== length || out === undefined) throw new DeltaError(`internal: read ${at} bytes where ${length} were expected`);
  return out;
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
