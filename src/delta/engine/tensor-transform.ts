import { dtypeBytes, isArithmeticDType, type DType, type FloatDType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { addInto, addIntegersInto, convertInto, isIntegerDType, subInto, subIntoWithFixups, xorInto } from "../../kernels/index.js";
import { CHUNK_BYTES } from "../../limits.js";
import { chunkPool } from "../../io/chunk-pool.js";
import { prefetch } from "../../io/chunk-streams.js";
import { ExactReader } from "./exact-reader.js";
import { numel, segments, storedRow, windows, type RowOrder } from "./pairing.js";
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
  /**
   * Bytes [start, start + length) of the delta tensor as stored: a recipe
   * whose delta is read transposed (rowOrder) reads it column span by column
   * span through this instead of `delta`.
   */
  deltaRange?(start: number, length: number): Promise<Uint8Array>;
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
  if (recipe.rowOrder !== undefined) {
    yield* recoverRows(recipe, recipe.rowOrder, input, hooks, chunkBytes);
    return;
  }
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
          chunkPool.giveBack(b); // added: its last use (the pool keeps it until its hash has read it)
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

/** Span reads of a transposed block in flight at once. */
const READS_IN_FLIGHT = 64;
/** Elements put through a promoted sum's float32 arithmetic at once. */
const ARITHMETIC_ELEMENTS = 256 * 1024;

/**
 * A recipe whose delta pairs row by row from another layout (pairing.ts
 * RowOrder): blocks of whole rows (whole heads when permuted) of about
 * `chunkBytes` of stored delta each, every block gathered from the delta,
 * then added to the same rows of the base (read in order). Memory: the
 * block's stored rows twice (the spans as read, then in output order), the
 * output block, and the float32 buffers of a promoted sum.
 */
async function* recoverRows(recipe: TensorRecipe, order: RowOrder, input: RecoverInput, hooks: RecoverHooks, chunkBytes: number): AsyncGenerator<Uint8Array> {
  const stored: DType = recipe.deltaDtype ?? recipe.dtype;
  const item = dtypeBytes(stored);
  const { rows, cols, blockRows } = rowBlocks(recipe, chunkBytes);
  if (order.transposed && input.deltaRange === undefined) throw new DeltaError(`tensor "${recipe.name}": its delta is read transposed, and its reader cannot read a range`);
  if (!order.transposed && input.delta === undefined) throw new DeltaError(`tensor "${recipe.name}" has no delta to recover it from`);
  const sequential = order.transposed ? undefined : new ExactReader(prefetch(input.delta!), `delta tensor "${recipe.name}"`);
  const base = openBase(recipe, input.base);
  const blockBytes = Math.min(blockRows, rows) * cols * item;
  // The block's buffers, reused block after block.
  const scratch = { spans: new Uint8Array(order.transposed ? blockBytes : 0), rows: new Uint8Array(order.transposed || order.headRows !== undefined ? blockBytes : 0) };
  const add = rowAdder(recipe, stored, Math.min(rows * cols, ARITHMETIC_ELEMENTS));
  try {
    for (let row = 0; row < rows; row += blockRows) {
      const k = Math.min(blockRows, rows - row);
      const count = k * cols;
      const d = order.transposed
        ? await transposedRows(recipe, order, input.deltaRange!, row, k, cols, item, scratch)
        : permutedRows(order, await sequential!.read(count * item), row, k, cols, item, scratch.rows);
      const b = await base.read(count);
      await hooks.onBase?.(b);
      const out = add(b, d, count);
      if (hooks.fixWindow !== undefined) await hooks.fixWindow(row * cols, out);
      // Both inputs were copied into `out`: their last use (the pool keeps the base until its hash has read it).
      if (!order.transposed && order.headRows === undefined) chunkPool.giveBack(d);
      chunkPool.giveBack(b);
      yield out;
    }
    await sequential?.expectEnd();
    await base.finish();
  } finally {
    await sequential?.close();
    await base.close();
  }
}

/**
 * How a row-by-row recipe is cut into blocks: whole rows (whole heads when
 * permuted) of about `chunkBytes` of stored delta. Its inputs read in
 * chunks of a block's elements are used as they come, never copied.
 */
export function rowBlocks(recipe: TensorRecipe, chunkBytes = CHUNK_BYTES): { rows: number; cols: number; blockRows: number; blockElements: number } {
  const item = dtypeBytes(recipe.deltaDtype ?? recipe.dtype);
  const [rows, cols] = recipe.shape.length === 2 ? [recipe.shape[0]!, recipe.shape[1]!] : [1, numel(recipe.shape)];
  const unit = recipe.rowOrder?.headRows ?? 1;
  const blockRows = unit * Math.max(1, Math.floor(chunkBytes / (unit * cols * item)));
  return { rows, cols, blockRows, blockElements: blockRows * cols };
}

/**
 * Rows [row, row + k) of a transposed delta in the output's layout, in its
 * stored dtype. Stored [in, out], output row r is column r: the block's
 * columns are one contiguous span of every stored row, read span by span
 * (many reads in flight) and transposed in memory, each output row taken
 * from the column `storedRow` names (its rotary source when permuted).
 */
async function transposedRows(
  recipe: TensorRecipe,
  order: RowOrder,
  read: (start: number, length: number) => Promise<Uint8Array>,
  row: number,
  k: number,
  cols: number,
  item: number,
  scratch: { spans: Uint8Array; rows: Uint8Array },
): Promise<Uint8Array> {
  const inDim = cols;
  const outDim = recipe.shape[0]!;
  const spanBytes = k * item;
  const spans = scratch.spans.subarray(0, inDim * spanBytes);
  for (let i0 = 0; i0 < inDim; i0 += READS_IN_FLIGHT) {
    const batch: Promise<void>[] = [];
    for (let i = i0; i < Math.min(inDim, i0 + READS_IN_FLIGHT); i++) {
      batch.push(read((i * outDim + row) * item, spanBytes).then((bytes) => {
        if (bytes.length !== spanBytes) throw new DeltaError(`delta tensor "${recipe.name}": read ${bytes.length} bytes where ${spanBytes} were expected`);
        spans.set(bytes, i * spanBytes);
        chunkPool.giveBack(bytes); // copied: its last use
      }));
    }
    await Promise.all(batch);
  }
  // spans is [inDim, k]: transpose to [k, inDim].
  const out = scratch.rows.subarray(0, k * cols * item);
  const from = elementView(spans, item);
  const to = elementView(out, item);
  for (let r = 0; r < k; r++) {
    const column = storedRow(order, row, row + r);
    const first = r * inDim;
    for (let i = 0, src = column; i < inDim; i++, src += k) to[first + i] = from[src]!;
  }
  return out;
}

/** A block of stored rows in output order: itself, or each row moved from its rotary source (blocks hold whole heads). */
function permutedRows(order: RowOrder, block: Uint8Array, row: number, k: number, cols: number, item: number, scratch: Uint8Array): Uint8Array {
  if (order.headRows === undefined) return block;
  const rowBytes = cols * item;
  const out = scratch.subarray(0, k * rowBytes);
  for (let r = 0; r < k; r++) {
    const source = storedRow(order, row, row + r);
    out.set(block.subarray(source * rowBytes, (source + 1) * rowBytes), r * rowBytes);
  }
  return out;
}

function elementView(bytes: Uint8Array, item: number): Uint8Array | Uint16Array | Uint32Array | Float64Array {
  if (item === 1) return bytes;
  if (item === 2) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
  if (item === 4) return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  return new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8);
}

/**
 * out = base (+) delta for a block of `count` elements: the base in the
 * output dtype, the delta in its stored one. A promoted sum (recipe.sum) adds
 * both exactly in float32 and rounds through its dtype, as numpy does; else
 * the delta is converted to the output dtype and added as `combine` adds.
 */
function rowAdder(recipe: TensorRecipe, stored: DType, maxElements: number): (base: Uint8Array, delta: Uint8Array, count: number) => Uint8Array {
  const size = dtypeBytes(recipe.dtype);
  const item = dtypeBytes(stored);
  if (recipe.sum === undefined) {
    return (base, delta, count) => {
      const out = new Uint8Array(count * size);
      if (stored === recipe.dtype) out.set(delta.subarray(0, count * size));
      else convertInto(stored as FloatDType, recipe.dtype as FloatDType, delta.subarray(0, count * item), out);
      combine(recipe, base, out);
      return out;
    };
  }
  const dtype = recipe.dtype as FloatDType;
  const through = recipe.sum.through;
  const bf = new Uint8Array(maxElements * 4);
  const df = new Uint8Array(maxElements * 4);
  const sum = new Uint8Array(maxElements * 4);
  const rounded = new Uint8Array(maxElements * dtypeBytes(through));
  return (base, delta, count) => {
    const out = new Uint8Array(count * size);
    for (let e = 0; e < count; e += maxElements) {
      const n = Math.min(maxElements, count - e);
      const [b32, d32, s32] = [bf.subarray(0, n * 4), df.subarray(0, n * 4), sum.subarray(0, n * 4)];
      if (dtype === "F32") b32.set(base.subarray(e * 4, (e + n) * 4));
      else convertInto(dtype, "F32", base.subarray(e * size, (e + n) * size), b32);
      if (stored === "F32") d32.set(delta.subarray(e * 4, (e + n) * 4));
      else convertInto(stored as FloatDType, "F32", delta.subarray(e * item, (e + n) * item), d32);
      addInto("F32", b32, d32, s32);
      const target = out.subarray(e * size, (e + n) * size);
      if (through === dtype) {
        convertInto("F32", dtype, s32, target);
      } else {
        const r = rounded.subarray(0, n * dtypeBytes(through));
        convertInto("F32", through, s32, r);
        convertInto(through, dtype, r, target);
      }
    }
    return out;
  };
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
  /** The target's bytes (to hash). They are never written (the delta goes into a chunk of its own): a hash may read them after the returned promise settles. */
  onTarget?(bytes: Uint8Array): void | Promise<void>;
  /** Base bytes as used, after conversion to the target's dtype (to hash). */
  onBase?(bytes: Uint8Array): void | Promise<void>;
  /** Elements where round(base + delta) differs from the target (flat indices), for the fix-ups. */
  onMismatches?(firstIndex: number, indices: Uint32Array, xors: Uint8Array): void | Promise<void>;
}

/** make-delta: yields the delta tensor's bytes (target (op)^-1 base on the paired block, target elsewhere), window by window. */
export async function* subtractTensor(recipe: TensorRecipe, input: SubtractInput, hooks: SubtractHooks = {}, chunkBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  if (recipe.rowOrder !== undefined || recipe.sum !== undefined) throw new DeltaError(`tensor "${recipe.name}": a delta in another layout or with a promoted sum is applied, never made, here`);
  const size = dtypeBytes(recipe.dtype);
  const maxElements = Math.max(1, Math.floor(chunkBytes / size));
  const target = new ExactReader(prefetch(input.target), `tensor "${recipe.name}"`);
  const base = recipe.op === "copy" ? undefined : openBase(recipe, input.base);
  try {
    for (const win of windows(segments(recipe.shape, base === undefined ? undefined : recipe.base?.shape), maxElements)) {
      const t = await target.read(win.length * size);
      await hooks.onTarget?.(t);
      // The delta goes into a chunk of its own: the target's bytes are hashed
      // where they are (hash/hash-pool.ts), so they stay as read until the
      // hash is done; the pool keeps the target chunk, given back below, until
      // then. Unpaired spans are the target's bytes, copied.
      const paired = base !== undefined && win.parts.some((part) => part.paired);
      const out = paired ? chunkPool.take(t.length) : t;
      for (const part of win.parts) {
        const from = (part.start - win.start) * size;
        const to = from + part.length * size;
        if (!part.paired || base === undefined) {
          if (out !== t) out.set(t.subarray(from, to), from);
          continue;
        }
        const b = await base.read(part.length);
        await hooks.onBase?.(b);
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
        chunkPool.giveBack(b); // subtracted: its last use (the pool keeps it until its hash has read it)
      }
      if (out !== t) chunkPool.giveBack(t);
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
