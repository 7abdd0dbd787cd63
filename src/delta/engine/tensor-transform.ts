import { dtypeBytes, isArithmeticDType, type DType, type FloatDType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { addInto, addIntegersInto, convertInto, isIntegerDType, subInto, subIntoWithFixups, xorInto } from "../../kernels/index.js";
import { CHUNK_BYTES } from "../../limits.js";
import { chunkPool } from "../../io/chunk-pool.js";
import { prefetch } from "../../io/chunk-streams.js";
import { ExactReader } from "./exact-reader.js";
import { segments, windows } from "./pairing.js";
import { conversionProblem, type TensorRecipe } from "./recipe.js";

/**
 * The per-tensor streaming loops: `recoverTensor` makes an output tensor from
 * a delta and a base as its recipe says (apply), `subtractTensor` makes the
 * delta from a target and a base (make). Bytes move a window at a time
 * (CHUNK_BYTES of output), so memory is bounded by the chunk size whatever
 * the tensor's size.
 */

export interface RecoverInput {
  /** The delta tensor's bytes (every op but "base"). */
  delta?: AsyncIterable<Uint8Array>;
  /** The base tensor's bytes in its own dtype (every op but "copy"). */
  base?: AsyncIterable<Uint8Array>;
  /** For unpaired "mean": one row of the base's row mean, in the output dtype. */
  meanRow?: Uint8Array;
}

export interface RecoverHooks {
  /** Base bytes as used, after conversion to the output dtype (to hash). */
  onBase?(bytes: Uint8Array): void | Promise<void>;
  /** Fixes up the window of output elements starting at `firstIndex`, in place (a convention's per-tensor hook: see tensor-file.ts). */
  fixWindow?(firstIndex: number, out: Uint8Array): Promise<void>;
}

/** Yields the output tensor's bytes window by window. */
export async function* recoverTensor(recipe: TensorRecipe, input: RecoverInput, hooks: RecoverHooks = {}, chunkBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  const size = dtypeBytes(recipe.dtype);
  const maxElements = Math.max(1, Math.floor(chunkBytes / size));
  const base = recipe.op === "copy" ? undefined : openBase(recipe, input.base);
  if (recipe.op === "base") {
    // The output is the base tensor itself, converted.
    try {
      for (const win of windows(segments(recipe.shape, undefined), maxElements)) {
        const out = await base!.read(win.length);
        await hooks.onBase?.(out);
        yield out;
      }
      await base!.finish();
    } finally {
      await base?.close();
    }
    return;
  }
  if (input.delta === undefined) throw new DeltaError(`tensor "${recipe.name}" has no delta to recover it from`);
  // Reading ahead overlaps the next chunk's I/O with this chunk's arithmetic.
  const delta = convertingReader(new ExactReader(prefetch(input.delta), `delta tensor "${recipe.name}"`), recipe.deltaDtype, recipe.dtype);
  const unpaired = unpairedAdder(recipe, input.meanRow);
  try {
    for (const win of windows(segments(recipe.shape, base === undefined ? undefined : recipe.base?.shape), maxElements)) {
      // In place: the delta chunk is ours and not needed after.
      const out = await delta.read(win.length * size);
      for (const part of win.parts) {
        const from = (part.start - win.start) * size;
        const span = out.subarray(from, from + part.length * size);
        if (part.paired && base !== undefined) {
          const b = await base.read(part.length);
          await hooks.onBase?.(b);
          combine(recipe, b, span);
          chunkPool.giveBack(b); // hashed (the copy awaited) and added: this was its last use
        } else if (!part.paired) {
          unpaired?.(part.start, span);
        }
      }
      if (hooks.fixWindow !== undefined) await hooks.fixWindow(win.start, out);
      yield out; // the consumer's now: its last user gives it back to the pool
    }
    await delta.expectEnd();
    await base?.finish();
  } finally {
    await delta.close();
    await base?.close();
  }
}

/**
 * Reads `bytes` of output-dtype elements from a reader of `from`-dtype ones,
 * converted (torch's `.to()`: round to nearest even); the reader itself
 * when nothing is converted.
 */
function convertingReader(reader: ExactReader, from: DType | undefined, to: DType): Pick<ExactReader, "read" | "expectEnd" | "close"> {
  if (from === undefined || from === to) return reader;
  if (!isArithmeticDType(from) || !isArithmeticDType(to)) throw new DeltaError(`dtype ${from} cannot be converted to ${to}`);
  const [fromSize, toSize] = [dtypeBytes(from), dtypeBytes(to)];
  return {
    async read(bytes: number): Promise<Uint8Array> {
      const elements = bytes / toSize;
      const raw = await reader.read(elements * fromSize);
      const out = chunkPool.take(bytes);
      convertInto(from, to, raw, out);
      chunkPool.giveBack(raw);
      return out;
    },
    expectEnd: () => reader.expectEnd(),
    close: () => reader.close(),
  };
}

/** span = delta (op) base, in place. */
function combine(recipe: TensorRecipe, base: Uint8Array, span: Uint8Array): void {
  if (recipe.op === "xor") xorInto(span, base, span);
  else if (isIntegerDType(recipe.dtype)) addIntegersInto(recipe.dtype, base, span, span);
  else addInto(recipe.dtype as FloatDType, base, span, span);
}

/**
 * What an unpaired span becomes, in place: nothing for "stored"; for "zero"
 * and "mean" the delta is added to zeros or to the mean row (columns
 * repeating along the row), with the same arithmetic as paired elements.
 */
function unpairedAdder(recipe: TensorRecipe, meanRow: Uint8Array | undefined): ((firstIndex: number, span: Uint8Array) => void) | undefined {
  if (recipe.unpaired === "stored" || recipe.op !== "add") return undefined;
  const size = dtypeBytes(recipe.dtype);
  if (recipe.unpaired === "zero") {
    return (_first, span) => combine(recipe, new Uint8Array(span.length), span);
  }
  const cols = recipe.shape.length === 2 ? recipe.shape[1]! : recipe.shape.length === 1 ? recipe.shape[0]! : 0;
  if (meanRow === undefined || meanRow.length !== cols * size) throw new DeltaError(`tensor "${recipe.name}" needs the base's mean row of ${cols} elements`);
  return (first, span) => {
    const addend = new Uint8Array(span.length);
    const count = span.length / size;
    for (let i = 0; i < count; ) {
      const col = (first + i) % cols;
      const run = Math.min(cols - col, count - i);
      addend.set(meanRow.subarray(col * size, (col + run) * size), i * size);
      i += run;
    }
    combine(recipe, addend, span);
  };
}

export interface SubtractInput {
  target: AsyncIterable<Uint8Array>;
  /** The base tensor's bytes in its own dtype (unless the recipe copies). */
  base?: AsyncIterable<Uint8Array>;
}

export interface SubtractHooks {
  /** The target's bytes (to hash). They are overwritten with the delta once the returned promise settles: copy what must outlive it. */
  onTarget?(bytes: Uint8Array): void | Promise<void>;
  /** Base bytes as used, after conversion to the target's dtype (to hash). */
  onBase?(bytes: Uint8Array): void | Promise<void>;
  /** Elements where round(base + delta) differs from the target (flat indices), for the fix-ups. */
  onMismatches?(firstIndex: number, indices: Uint32Array, xors: Uint8Array): void | Promise<void>;
}

/** make-delta: yields the delta tensor's bytes (target (op)^-1 base on the paired block, target elsewhere), window by window. */
export async function* subtractTensor(recipe: TensorRecipe, input: SubtractInput, hooks: SubtractHooks = {}, chunkBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  const size = dtypeBytes(recipe.dtype);
  const maxElements = Math.max(1, Math.floor(chunkBytes / size));
  const target = new ExactReader(prefetch(input.target), `tensor "${recipe.name}"`);
  const base = recipe.op === "copy" ? undefined : openBase(recipe, input.base);
  try {
    for (const win of windows(segments(recipe.shape, base === undefined ? undefined : recipe.base?.shape), maxElements)) {
      const t = await target.read(win.length * size);
      await hooks.onTarget?.(t);
      // In place, like recoverTensor: the target chunk is ours, its bytes are
      // hashed (onTarget has taken them), and the kernels copy each tile of
      // their inputs before writing its result, so the fix-up check still
      // compares against the target. Unpaired spans are the target's bytes.
      const out = t;
      for (const part of win.parts) {
        if (!part.paired || base === undefined) continue;
        const b = await base.read(part.length);
        await hooks.onBase?.(b);
        const from = (part.start - win.start) * size;
        const to = from + part.length * size;
        const src = t.subarray(from, to);
        const dst = out.subarray(from, to);
        if (recipe.op === "xor") {
          xorInto(src, b, dst);
        } else if (hooks.onMismatches === undefined) {
          subInto(recipe.dtype as FloatDType, src, b, dst);
        } else {
          const found = subIntoWithFixups(recipe.dtype as FloatDType, src, b, dst);
          if (found.indices.length > 0) await hooks.onMismatches(part.start, found.indices, found.xors);
        }
        chunkPool.giveBack(b); // hashed (the copy awaited) and subtracted: this was its last use
      }
      yield out; // the consumer's now: its last user gives it back to the pool
    }
    await target.expectEnd();
    await base?.finish();
  } finally {
    await target.close();
    await base?.close();
  }
}

/** Reads base elements in order, converted to the recipe's dtype. */
function openBase(recipe: TensorRecipe, chunks: AsyncIterable<Uint8Array> | undefined) {
  if (recipe.base === undefined || chunks === undefined) throw new DeltaError(`tensor "${recipe.name}" needs a base tensor`);
  const from: DType = recipe.base.dtype;
  const problem = conversionProblem(recipe.dtype, from);
  if (problem !== undefined) throw new DeltaError(`base tensor "${recipe.name}": ${problem}`);
  const reader = new ExactReader(prefetch(chunks), `base tensor "${recipe.base.name}"`);
  const fromSize = dtypeBytes(from);
  const toSize = dtypeBytes(recipe.dtype);
  return {
    async read(elements: number): Promise<Uint8Array> {
      const raw = await reader.read(elements * fromSize);
      if (from === recipe.dtype) return raw;
      if (!isArithmeticDType(from) || !isArithmeticDType(recipe.dtype)) throw new DeltaError(`base tensor "${recipe.name}": dtype ${from} cannot be converted to ${recipe.dtype}`);
      const out = chunkPool.take(elements * toSize);
      convertInto(from, recipe.dtype, raw, out);
      chunkPool.giveBack(raw);
      return out;
    },
    /** Every base element is used exactly once: the base must have ended too. */
    finish: () => reader.expectEnd(),
    close: () => reader.close(),
  };
}
