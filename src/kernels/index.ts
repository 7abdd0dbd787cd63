/**
 * Element-wise kernels on chunks of little-endian tensor bytes: the hot loop
 * of make-delta and apply-delta. Buffers hold equal element counts; `out` may
 * alias an input; any byte offset works. Arithmetic is bit-identical to
 * PyTorch on CPU: reference.ts defines it one element at a time, fast.ts
 * (WebAssembly SIMD) is what runs, and test/kernels/ checks both against
 * torch's own outputs and against each other.
 */
export {
  addInto,
  subInto,
  xorInto,
  convertInto,
  findMismatches,
  applyXorFixups,
} from "./fast.js";
export type { Mismatches } from "./reference.js";
