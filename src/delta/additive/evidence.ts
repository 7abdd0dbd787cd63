import { bf16ToF32, dtypeBytes, f16ToF32, isArithmeticDType, type DType } from "../../dtypes.js";
import type { ModelSource } from "../../model/types.js";
import type { TensorInfo } from "../../tensors.js";
import { readAddedTokens, tokenAtRow, type AddedTokens } from "./tokenizer-files.js";
import type { DeltaView } from "../conventions/types.js";

/**
 * What the publishers' tensor conventions are told apart by, read from the
 * files alone: the delta's dtype, its vocabulary rows against the base's,
 * its added tokens and config fields, and whether stored tensors are
 * differences (small, unrelated to the base) or whole values (pointing the
 * same way as the base's, with about its norm).
 */
export interface Evidence {
  /** The float dtype holding most of the delta's bytes. */
  dtype: DType | undefined;
  /** The delta's config.json, when it is a JSON object. */
  config: Record<string, unknown> | undefined;
  /** The tokens its tokenizer files record as added, wherever they record them. */
  tokens: AddedTokens;
  /** The embedding matrix's rows in the delta and in the base, when both have it. */
  vocab: { name: string; deltaRows: number; baseRows: number } | undefined;
}

export const EMBEDDING = "model.embed_tokens.weight";

export async function gatherEvidence(view: DeltaView): Promise<Evidence> {
  const [delta, base] = [await view.model(), await view.base()];
  const bytes = new Map<DType, number>();
  for (const t of delta.tensors.values()) if (isArithmeticDType(t.dtype)) bytes.set(t.dtype, (bytes.get(t.dtype) ?? 0) + t.byteLength);
  const dtype = [...bytes].sort((a, b) => b[1] - a[1])[0]?.[0];
  const config = asObject(await view.json("config.json"));
  const tokens = await readAddedTokens(view);
  const d = delta.tensors.get(EMBEDDING);
  const b = base.tensors.get(EMBEDDING);
  const vocab = d !== undefined && b !== undefined && d.shape.length === 2 && b.shape.length === 2 ? { name: EMBEDDING, deltaRows: d.shape[0]!, baseRows: b.shape[0]! } : undefined;
  return { dtype, config, tokens, vocab };
}

/**
 * The added token the tokenizer files place at the delta's first new
 * vocabulary row (`[PAD]` at 32000), if any, and which files say so.
 */
export function newRowToken(evidence: Evidence): { token: string; from: string } | undefined {
  const vocab = evidence.vocab;
  if (vocab === undefined || vocab.deltaRows <= vocab.baseRows) return undefined;
  return tokenAtRow(evidence.tokens, vocab.baseRows, vocab.deltaRows - vocab.baseRows);
}

/** The delta's config.json `vocab_size`, when it is an integer. */
export function configVocabSize(evidence: Evidence): number | undefined {
  const value = evidence.config !== undefined && Object.hasOwn(evidence.config, "vocab_size") ? evidence.config.vocab_size : undefined;
  return typeof value === "number" && Number.isSafeInteger(value) ? value : undefined;
}

function asObject(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** How a stored tensor relates to the base's: cosine of the two and the ratio of their norms. */
export interface Similarity {
  cosine: number;
  normRatio: number;
}

/** Elements compared per tensor: enough to tell a difference from a whole value, cheap to read. */
const SAMPLE_ELEMENTS = 1 << 20;

/**
 * Compares the first elements (up to `elements`, whole rows of the base's
 * width for a grown matrix) of a delta tensor with its base tensor. A
 * difference of a fine-tune has a cosine near 0 and a norm about 1e-3 of the
 * base's; a whole value (a stored row, a full model mistaken for a delta)
 * has a cosine near 1 and the base's norm.
 */
export async function similarity(delta: ModelSource, base: ModelSource, name: string, elements = SAMPLE_ELEMENTS): Promise<Similarity | undefined> {
  const d = delta.tensors.get(name);
  const b = base.tensors.get(name);
  if (d === undefined || b === undefined || !isArithmeticDType(d.dtype) || !isArithmeticDType(b.dtype)) return undefined;
  // Rows are comparable element for element only when their widths agree.
  if (d.shape.length !== b.shape.length || d.shape.slice(1).some((n, i) => n !== b.shape[i + 1])) return undefined;
  const count = Math.min(elements, numel(d), numel(b));
  if (count === 0) return undefined;
  const [x, y] = [await firstValues(delta, d, count), await firstValues(base, b, count)];
  let dot = 0, xx = 0, yy = 0;
  for (let i = 0; i < count; i++) {
    dot += x[i]! * y[i]!;
    xx += x[i]! * x[i]!;
    yy += y[i]! * y[i]!;
  }
  // A zero base under a nonzero tensor is infinitely larger (a delta given as the base, its norm weights untouched by the fine-tune).
  if (!(xx > 0) || !(yy > 0)) return { cosine: 0, normRatio: yy > 0 ? Math.sqrt(xx / yy) : xx > 0 ? Infinity : 0 };
  return { cosine: dot / Math.sqrt(xx * yy), normRatio: Math.sqrt(xx / yy) };
}

function numel(t: TensorInfo): number {
  return t.shape.reduce((n, d) => n * d, 1);
}

async function firstValues(model: ModelSource, t: TensorInfo, count: number): Promise<Float64Array> {
  const size = dtypeBytes(t.dtype);
  const out = new Float64Array(count);
  let at = 0;
  for await (const chunk of model.readTensor(t.name, { start: 0, end: count * size })) {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let p = 0; p + size <= chunk.length; p += size) out[at++] = decode(t.dtype, view, p);
  }
  return out;
}

function decode(dtype: DType, view: DataView, at: number): number {
  switch (dtype) {
    case "F16": return f16ToF32(view.getUint16(at, true));
    case "BF16": return bf16ToF32(view.getUint16(at, true));
    case "F32": return view.getFloat32(at, true);
    default: return view.getFloat64(at, true);
  }
}
