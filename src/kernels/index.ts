/**
 * Element-wise kernels on chunks of little-endian tensor bytes: the hot loop
 * of make-delta and apply-delta. Buffers hold equal element counts; `out` may
 * alias an input; any byte offset works. Arithmetic is bit-identical to
 * PyTorch on CPU: reference.ts defines it one element at a time, fast.ts
 * (WebAssembly SIMD) is what runs, and test/kernels/ checks both against
 * torch's own outputs and against each other.
 */
import type { FloatDType } from "../dtypes.js";
import * as reference from "./reference.js";
import type { Mismatches } from "./reference.js";

export type { Mismatches };

// A JS engine without WebAssembly SIMD (none of Node 20's platforms lacks it)
// gets the scalar kernels: the same results, only slower.
type Kernels = Pick<typeof reference, "addInto" | "subInto" | "subIntoWithFixups" | "xorInto" | "convertInto" | "applyXorFixups">;
const chosen: Kernels = await import("./fast.js").catch(() => reference);

/** Which kernels run here: "wasm-simd", or "scalar" when WebAssembly SIMD is unavailable. */
export const kernelImplementation: "wasm-simd" | "scalar" = chosen === reference ? "scalar" : "wasm-simd";

/** out = round_to_dtype(float32(base) + float32(delta)), RNE; F32 in float32, F64 in float64. */
export const addInto: (dtype: FloatDType, base: Uint8Array, delta: Uint8Array, out: Uint8Array) => void = chosen.addInto;

/** out = round_to_dtype(float32(target) - float32(base)), RNE; F32 in float32, F64 in float64. */
export const subInto: (dtype: FloatDType, target: Uint8Array, base: Uint8Array, out: Uint8Array) => void = chosen.subInto;

/**
 * make-delta's codec `add` in one pass (faster than subInto + addInto +
 * findMismatches, with the same results): deltaOut = round(target - base);
 * returns the elements where round(base + delta) is not the target, with
 * round(base + delta) XOR target for each. `deltaOut` may alias an input.
 */
export const subIntoWithFixups: (dtype: FloatDType, target: Uint8Array, base: Uint8Array, deltaOut: Uint8Array) => Mismatches = chosen.subIntoWithFixups;

/** out = a XOR b, bytewise. */
export const xorInto: (a: Uint8Array, b: Uint8Array, out: Uint8Array) => void = chosen.xorInto;

/**
 * Converts elements between float dtypes as torch's `tensor.to(dtype)` does on
 * CPU (RNE; overflow to Inf; F64 to F16/BF16 rounds through F32 as torch
 * does). `out.length` = n * dtypeBytes(to); `out` may share `src`'s buffer.
 */
export const convertInto: (from: FloatDType, to: FloatDType, src: Uint8Array, out: Uint8Array) => void = chosen.convertInto;

/** data[indices[k] - firstIndex] ^= xors[k] (elementBytes each): applies fix-ups to a chunk starting at element `firstIndex`. Throws on an index outside `data`. */
export const applyXorFixups: (elementBytes: number, data: Uint8Array, indices: Uint32Array, xors: Uint8Array, firstIndex?: number) => void = chosen.applyXorFixups;

/**
 * GGUF Q8_0 blocks of F16, BF16 or F32 elements in WebAssembly SIMD, or
 * undefined where that is unavailable: src/gguf/quantize.ts holds the
 * reference quantizer (gguf-py's rule), which then runs instead.
 */
export const quantizeQ8_0Into: ((from: "F16" | "BF16" | "F32", src: Uint8Array, out: Uint8Array) => void) | undefined =
  chosen === reference ? undefined : (chosen as typeof import("./fast.js")).quantizeQ8_0Into;

export { addIntegersInto, isIntegerDType } from "./integer.js";
