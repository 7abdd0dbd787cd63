import { dtypeBytes, isArithmeticDType, type DType, type FloatDType } from "../dtypes.js";
import { DeltaError } from "../errors.js";
import { addInto, addIntegersInto, convertInto, isIntegerDType, subInto, subIntoWithFixups, xorInto } from "../kernels/index.js";
import { CHUNK_BYTES } from "../limits.js";
import { windows, segments } from "./block.js";
import { releasedChunk } from "../io/memory.js";
import { prefetch } from "../io/chunk-streams.js";
import { ExactReader } from "./exact-reader.js";

/**
 * The per-tensor streaming loop shared by make-delta and apply-delta.
 *
 * make:  delta = target (op) base   on the paired block, target elsewhere;
 *        fix-ups record where base + delta does not round back to target.
 * apply: out   = delta  (op) base   on the paired block, delta elsewhere;
 *        then the fix-ups restore the exact target bits.
 *
 * Bytes move a window at a time (CHUNK_BYTES of output), so memory is
 * bounded by the chunk size whatever the tensor's size.
 */

export type Op = "add" | "xor" | "copy";

export interface TensorPlan {
  name: string;
  /** The tensor's dtype in the target and the delta. */
  dtype: DType;
  shape: number[];
  op: Op;
  /** The base tensor's dtype and shape, when the op pairs with a base. */
  base?: { dtype: DType; shape: number[] };
}

/** The op a tensor gets: arithmetic for floats under codec add, XOR otherwise, copy without a base. */
export function chooseOp(codec: "add" | "xor", dtype: DType, hasBase: boolean): Op {
  if (!hasBase) return "copy";
  return codec === "add" && isArithmeticDType(dtype) ? "add" : "xor";
}

/**
 * Why a legacy delta's tensor of this dtype cannot be added as its
 * publisher's torch would, or undefined: torch adds floats, integers (with
 * wrap-around) and bools (logical or), and has no addition for 8-bit floats.
 */
export function legacyAddProblem(dtype: DType): string | undefined {
  if (isArithmeticDType(dtype) || isIntegerDType(dtype)) return undefined;
  return `is ${dtype}, which torch cannot add (a legacy delta is base + delta in torch's arithmetic)`;
}

/** Why a base tensor cannot serve this plan, or undefined. */
export function baseConversionProblem(dtype: DType, baseDtype: DType): string | undefined {
  if (dtype === baseDtype) return undefined;
  if (isArithmeticDType(dtype) && isArithmeticDType(baseDtype)) return undefined;
  return `dtype ${baseDtype} cannot be converted to ${dtype}`;
}

export interface TransformHooks {
  /** Base bytes as used, after conversion to the plan's dtype (to hash). */
  onBase?(bytes: Uint8Array): void | Promise<void>;
  /** The primary input's bytes: target in make, delta in apply (to hash). */
  onPrimary?(bytes: Uint8Array): void | Promise<void>;
  /** make: elements where round(base + delta) differs from the target (flat indices). */
  onMismatches?(firstIndex: number, indices: Uint32Array, xors: Uint8Array): void | Promise<void>;
  /** apply: fix up the window of output elements starting at `firstIndex`, in place. */
  fixWindow?(firstIndex: number, out: Uint8Array): Promise<void>;
}

export interface TransformInput {
  /** make: the target tensor's bytes; apply: the delta tensor's bytes. */
  primary: AsyncIterable<Uint8Array>;
  /** The base tensor's bytes in its own dtype (required unless op is copy). */
  base?: AsyncIterable<Uint8Array>;
}

/** Yields the output tensor's bytes (the delta in make, the target in apply), window by window. */
export async function* transformTensor(
  mode: "make" | "apply",
  plan: TensorPlan,
  input: TransformInput,
  hooks: TransformHooks = {},
  chunkBytes = CHUNK_BYTES,
): AsyncGenerator<Uint8Array> {
  const size = dtypeBytes(plan.dtype);
  // Reading ahead overlaps the next chunk's I/O with this chunk's arithmetic.
  const primary = new ExactReader(prefetch(input.primary), `tensor "${plan.name}"`);
  const base = plan.op === "copy" ? undefined : openBase(plan, input.base === undefined ? undefined : prefetch(input.base));
  const maxElements = Math.max(1, Math.floor(chunkBytes / size));
  try {
    for (const win of windows(segments(plan.shape, plan.op === "copy" ? undefined : plan.base?.shape), maxElements)) {
      const input = await primary.read(win.length * size);
      await hooks.onPrimary?.(input);
      // apply works in place: the delta chunk is ours and not needed after. make
      // writes the delta beside the target chunk, which its fix-up check reads.
      const out = mode === "apply" ? input : new Uint8Array(input);
      for (const part of win.parts) {
        if (!part.paired || base === undefined) continue;
        const b = await base.read(part.length);
        await hooks.onBase?.(b);
        const from = (part.start - win.start) * size;
        const to = from + part.length * size;
        const src = input.subarray(from, to);
        const dst = out.subarray(from, to);
        if (plan.op === "xor") {
          xorInto(src, b, dst);
        } else if (mode === "apply") {
          if (isIntegerDType(plan.dtype)) addIntegersInto(plan.dtype, b, src, dst);
          else addInto(plan.dtype as FloatDType, b, src, dst);
        } else if (hooks.onMismatches === undefined) {
          subInto(plan.dtype as FloatDType, src, b, dst);
        } else {
          const found = subIntoWithFixups(plan.dtype as FloatDType, src, b, dst);
          if (found.indices.length > 0) await hooks.onMismatches(part.start, found.indices, found.xors);
        }
      }
      if (mode === "apply" && hooks.fixWindow !== undefined) await hooks.fixWindow(win.start, out);
      yield out;
      releasedChunk(out.length * (mode === "apply" ? 2 : 3));
    }
    if (base !== undefined) await base.finish();
  } finally {
    await primary.close();
    await base?.close();
  }
}

/** Reads base elements in order, converted to the plan's dtype. */
function openBase(plan: TensorPlan, chunks: AsyncIterable<Uint8Array> | undefined) {
  if (plan.base === undefined || chunks === undefined) throw new DeltaError(`tensor "${plan.name}" needs a base tensor`);
  const from = plan.base.dtype;
  const problem = baseConversionProblem(plan.dtype, from);
  if (problem !== undefined) throw new DeltaError(`base tensor "${plan.name}": ${problem}`);
  const reader = new ExactReader(chunks, `base tensor "${plan.name}"`);
  const fromSize = dtypeBytes(from);
  const toSize = dtypeBytes(plan.dtype);
  return {
    async read(elements: number): Promise<Uint8Array> {
      const raw = await reader.read(elements * fromSize);
      if (from === plan.dtype) return raw;
      const out = new Uint8Array(elements * toSize);
      convertInto(from as "F32", plan.dtype as FloatDType, raw, out);
      return out;
    },
    /** Every base element is used exactly once; nothing may be left. */
    async finish(): Promise<void> {
      await reader.close();
    },
    close: () => reader.close(),
  };
}
