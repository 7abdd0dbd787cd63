/**
 * The fast kernels: WebAssembly SIMD (src/kernels/wasm/kernels.c) driven tile
 * by tile. Each tile of the inputs is copied into the module's memory, one
 * call processes it, and the result is copied out, so callers pass ordinary
 * Uint8Arrays at any byte offset (odd ones included) and `out` may alias an
 * input. Tiles are small enough to stay in the L2 cache, so the copies cost
 * far less than the memory traffic the work needs anyway.
 *
 * Conversions to or from F64, rare in models, stay on the scalar reference.
 */
import { dtypeBytes, type FloatDType } from "../dtypes.js";
import * as reference from "./reference.js";
import { checkElementBytes, type Mismatches } from "./reference.js";
import { KERNELS_WASM_BASE64 } from "./wasm/kernels-wasm.js";

/** Processes `count` elements of the regions; `zero` must be 0 (see kernels.c). */
type TileFunction = (count: number, zero: number) => void;
/** Like TileFunction, returning how many mismatches it recorded. */
type FixupFunction = (count: number, zero: number) => number;

// The WebAssembly global is in Node but not in the ES library typings we
// compile against; this is the part of it we use.
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const { Module, Instance } = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

interface KernelExports {
  memory: { buffer: ArrayBuffer };
  tile_bytes(): number;
  a_ptr(): number;
  b_ptr(): number;
  out_ptr(): number;
  index_ptr(): number;
  xor_ptr(): number;
  add_f16: TileFunction; sub_f16: TileFunction;
  add_bf16: TileFunction; sub_bf16: TileFunction;
  add_f32: TileFunction; sub_f32: TileFunction;
  add_f64: TileFunction; sub_f64: TileFunction;
  xor_bytes: TileFunction;
  f16_to_f32: TileFunction; bf16_to_f32: TileFunction;
  f32_to_f16: TileFunction; f32_to_bf16: TileFunction;
  f16_to_bf16: TileFunction; bf16_to_f16: TileFunction;
  find_mismatches(elementBytes: number, byteCount: number): number;
  sub_fixups_f16: FixupFunction; sub_fixups_bf16: FixupFunction;
  sub_fixups_f32: FixupFunction; sub_fixups_f64: FixupFunction;
  q8_0_from_f16: TileFunction; q8_0_from_bf16: TileFunction; q8_0_from_f32: TileFunction;
}

const wasm = new Instance(new Module(Buffer.from(KERNELS_WASM_BASE64, "base64"))).exports as KernelExports;

// The module never grows its memory, so these views stay valid.
const heap = new Uint8Array(wasm.memory.buffer);
const TILE = wasm.tile_bytes();
const A = wasm.a_ptr(), B = wasm.b_ptr(), OUT = wasm.out_ptr(), INDEX = wasm.index_ptr(), XOR = wasm.xor_ptr();
const indexHeap = new Uint32Array(wasm.memory.buffer, INDEX, TILE);

function sameElementCount(elementBytes: number, a: Uint8Array, b: Uint8Array, out: Uint8Array): void {
  if (a.byteLength !== b.byteLength || a.byteLength !== out.byteLength || a.byteLength % elementBytes !== 0) {
    throw new RangeError(`kernel buffers must hold the same whole number of ${elementBytes}-byte elements`);
  }
}

/**
 * out = fn(a, b), tile by tile, for elements of `elementBytes`; `afterTile`
 * gets each tile's return value and first element index.
 */
function binaryTiles<R>(
  fn: (count: number, zero: number) => R, elementBytes: number, a: Uint8Array, b: Uint8Array, out: Uint8Array,
  afterTile?: (result: R, start: number) => void,
): void {
  sameElementCount(elementBytes, a, b, out);
  const tileElements = TILE / elementBytes;
  const n = a.byteLength / elementBytes;
  for (let start = 0; start < n; start += tileElements) {
    const count = Math.min(tileElements, n - start);
    const from = start * elementBytes, to = from + count * elementBytes;
    heap.set(a.subarray(from, to), A);
    heap.set(b.subarray(from, to), B);
    const result = fn(count, 0);
    afterTile?.(result, start);
    out.set(heap.subarray(OUT, OUT + (to - from)), from);
  }
}

const ADD: Record<FloatDType, TileFunction> = { F16: wasm.add_f16, BF16: wasm.add_bf16, F32: wasm.add_f32, F64: wasm.add_f64 };
const SUB: Record<FloatDType, TileFunction> = { F16: wasm.sub_f16, BF16: wasm.sub_bf16, F32: wasm.sub_f32, F64: wasm.sub_f64 };

export function addInto(dtype: FloatDType, base: Uint8Array, delta: Uint8Array, out: Uint8Array): void {
  binaryTiles(ADD[dtype], dtypeBytes(dtype), base, delta, out);
}

export function subInto(dtype: FloatDType, target: Uint8Array, base: Uint8Array, out: Uint8Array): void {
  binaryTiles(SUB[dtype], dtypeBytes(dtype), target, base, out);
}

export function xorInto(a: Uint8Array, b: Uint8Array, out: Uint8Array): void {
  binaryTiles(wasm.xor_bytes, 1, a, b, out);
}

const CONVERSIONS: Partial<Record<`${FloatDType}>${FloatDType}`, TileFunction>> = {
  "F16>F32": wasm.f16_to_f32,
  "BF16>F32": wasm.bf16_to_f32,
  "F32>F16": wasm.f32_to_f16,
  "F32>BF16": wasm.f32_to_bf16,
  "F16>BF16": wasm.f16_to_bf16,
  "BF16>F16": wasm.bf16_to_f16,
};

export function convertInto(from: FloatDType, to: FloatDType, src: Uint8Array, out: Uint8Array): void {
  const fn = CONVERSIONS[`${from}>${to}`];
  if (!fn) {
    reference.convertInto(from, to, src, out);
    return;
  }
  const fromBytes = dtypeBytes(from), toBytes = dtypeBytes(to);
  if (src.byteLength % fromBytes !== 0 || out.byteLength !== (src.byteLength / fromBytes) * toBytes) {
    throw new RangeError(`convertInto: ${src.byteLength} bytes of ${from} do not fit ${out.byteLength} bytes of ${to}`);
  }
  // The output region holds 2 tiles, enough for the widest step (2 -> 4 bytes).
  const tileElements = TILE / fromBytes;
  const n = src.byteLength / fromBytes;
  // Writing a tile's result must not overwrite input not read yet. That can
  // only happen when `out` overlaps `src` and the writes can run ahead of the
  // reads (widening, or `out` starting later); then results wait until the
  // whole input has been read.
  const overlaps = out.buffer === src.buffer &&
    out.byteOffset < src.byteOffset + src.byteLength && src.byteOffset < out.byteOffset + out.byteLength;
  const holdResults = overlaps && (toBytes > fromBytes || out.byteOffset > src.byteOffset);
  const results: Uint8Array[] = [];
  for (let start = 0; start < n; start += tileElements) {
    const count = Math.min(tileElements, n - start);
    heap.set(src.subarray(start * fromBytes, (start + count) * fromBytes), A);
    fn(count, 0);
    if (holdResults) results.push(heap.slice(OUT, OUT + count * toBytes));
    else out.set(heap.subarray(OUT, OUT + count * toBytes), start * toBytes);
  }
  let offset = 0;
  for (const result of results) {
    out.set(result, offset);
    offset += result.byteLength;
  }
}

const Q8_0_FROM: Record<"F16" | "BF16" | "F32", TileFunction> = { F16: wasm.q8_0_from_f16, BF16: wasm.q8_0_from_bf16, F32: wasm.q8_0_from_f32 };

/**
 * GGUF Q8_0 blocks (34 bytes per 32 values) of `src`, elements of `from`, into
 * `out`: the same bytes as src/gguf/quantize.ts's reference (gguf-py's rule).
 */
export function quantizeQ8_0Into(from: "F16" | "BF16" | "F32", src: Uint8Array, out: Uint8Array): void {
  const blockBytes = 32 * dtypeBytes(from);
  if (src.byteLength % blockBytes !== 0 || out.byteLength !== (src.byteLength / blockBytes) * 34) {
    throw new RangeError(`quantizeQ8_0Into: ${src.byteLength} bytes of ${from} are not whole blocks for ${out.byteLength} bytes of Q8_0`);
  }
  const fn = Q8_0_FROM[from];
  const tileBlocks = TILE / blockBytes;
  const blocks = src.byteLength / blockBytes;
  for (let first = 0; first < blocks; first += tileBlocks) {
    const count = Math.min(tileBlocks, blocks - first);
    heap.set(src.subarray(first * blockBytes, (first + count) * blockBytes), A);
    fn(count, 0);
    out.set(heap.subarray(OUT, OUT + count * 34), first * 34);
  }
}

function bytesView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const NO_MISMATCHES: Mismatches = Object.freeze({ indices: new Uint32Array(0), xors: new Uint8Array(0) });

/** Gathers the per-tile mismatch lists the module leaves in its index and xor regions. */
class MismatchCollector {
  private indexParts: Uint32Array[] = [];
  private xorParts: Uint8Array[] = [];
  private total = 0;
  constructor(private readonly elementBytes: number) {}

  /** Takes `count` mismatches found in a tile starting at element `firstElement`. */
  take(count: number, firstElement: number): void {
    if (count === 0) return;
    const indices = indexHeap.slice(0, count);
    for (let j = 0; j < count; j++) indices[j]! += firstElement;
    this.indexParts.push(indices);
    this.xorParts.push(heap.slice(XOR, XOR + count * this.elementBytes));
    this.total += count;
  }

  result(): Mismatches {
    if (this.total === 0) return NO_MISMATCHES;
    if (this.indexParts.length === 1) return { indices: this.indexParts[0]!, xors: this.xorParts[0]! };
    const indices = new Uint32Array(this.total), xors = new Uint8Array(this.total * this.elementBytes);
    let at = 0;
    for (let p = 0; p < this.indexParts.length; p++) {
      indices.set(this.indexParts[p]!, at);
      xors.set(this.xorParts[p]!, at * this.elementBytes);
      at += this.indexParts[p]!.length;
    }
    return { indices, xors };
  }
}

export function findMismatches(elementBytes: number, actual: Uint8Array, expected: Uint8Array): Mismatches {
  checkElementBytes(elementBytes);
  if (actual.byteLength !== expected.byteLength || actual.byteLength % elementBytes !== 0) {
    throw new RangeError("findMismatches buffers must hold the same whole number of elements");
  }
  // The common case, no difference at all, at memcmp speed and without copies.
  if (bytesView(actual).equals(bytesView(expected))) return NO_MISMATCHES;
  const found = new MismatchCollector(elementBytes);
  for (let from = 0; from < actual.byteLength; from += TILE) {
    const to = Math.min(from + TILE, actual.byteLength);
    heap.set(actual.subarray(from, to), A);
    heap.set(expected.subarray(from, to), B);
    found.take(wasm.find_mismatches(elementBytes, to - from), from / elementBytes);
  }
  return found.result();
}

const SUB_WITH_FIXUPS: Record<FloatDType, FixupFunction> = {
  F16: wasm.sub_fixups_f16, BF16: wasm.sub_fixups_bf16, F32: wasm.sub_fixups_f32, F64: wasm.sub_fixups_f64,
};

export function subIntoWithFixups(dtype: FloatDType, target: Uint8Array, base: Uint8Array, deltaOut: Uint8Array): Mismatches {
  const elementBytes = dtypeBytes(dtype);
  const found = new MismatchCollector(elementBytes);
  binaryTiles(SUB_WITH_FIXUPS[dtype], elementBytes, target, base, deltaOut, (mismatches, start) => found.take(mismatches, start));
  return found.result();
}

export { applyXorFixups } from "./reference.js";
