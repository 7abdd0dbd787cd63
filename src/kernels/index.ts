/**
 * Element-wise kernels on chunks of little-endian tensor bytes: the hot loop
 * of make-delta and apply-delta. Buffers hold equal element counts; `out` may
 * alias an input. Arithmetic is bit-identical to PyTorch on CPU (see
 * reference.ts, the oracle, and test/kernels/).
 */
export {
  addInto,
  subInto,
  xorInto,
  convertInto,
  findMismatches,
  applyXorFixups,
  type Mismatches,
} from "./reference.js";
