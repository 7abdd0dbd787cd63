/**
 * Both kernel sets (the scalar reference and the fast kernels the tool uses)
 * against what PyTorch 1.13 computed on x86 CPU (test/fixtures/kernels,
 * written by scripts/make-kernel-fixtures.py). Bits are compared exactly,
 * NaN results included, with two documented exceptions:
 * - BF16 add/sub: torch writes 0xFFFF for a NaN from its vectorized loop but
 *   0x7FC0 from the scalar loop that finishes each run's last few elements,
 *   so its NaN bits depend on an element's position; any NaN is accepted there.
 * Everything else, F32/F64 NaN payloads included, is exact: the kernels set
 * NaN bits explicitly to what torch's x86 code gives, so they do not depend on
 * the machine the tests run on.
 */
import { describe, expect, it } from "vitest";
import { dtypeBytes, type FloatDType } from "../../src/dtypes.js";
import * as fast from "../../src/kernels/fast.js";
import * as reference from "../../src/kernels/reference.js";
import { fixtureBytes } from "./fixtures.js";

type Kernels = Pick<typeof reference, "addInto" | "subInto" | "subIntoWithFixups" | "convertInto">;

const short: Record<FloatDType, string> = { F16: "f16", BF16: "bf16", F32: "f32", F64: "f64" };

function elementHex(bytes: Uint8Array, i: number, size: number): string {
  let text = "";
  for (let k = size - 1; k >= 0; k--) text += bytes[i * size + k]!.toString(16).padStart(2, "0");
  return text;
}

function isNaNElement(dtype: FloatDType, bytes: Uint8Array, i: number): boolean {
  const v = new DataView(bytes.buffer, bytes.byteOffset);
  switch (dtype) {
    case "F16": return (v.getUint16(i * 2, true) & 0x7fff) > 0x7c00;
    case "BF16": return (v.getUint16(i * 2, true) & 0x7fff) > 0x7f80;
    case "F32": return Number.isNaN(v.getFloat32(i * 4, true));
    case "F64": return Number.isNaN(v.getFloat64(i * 8, true));
  }
}

/** Describes the first few elements whose bits differ from torch's, or [] when all match. */
function differences(dtype: FloatDType, actual: Uint8Array, expected: Uint8Array, anyNaN: boolean, inputs: Uint8Array[], inputSize: number): string[] {
  const size = dtypeBytes(dtype);
  const found: string[] = [];
  for (let i = 0; i < expected.length / size; i++) {
    if (elementHex(actual, i, size) === elementHex(expected, i, size)) continue;
    if (anyNaN && isNaNElement(dtype, expected, i) && isNaNElement(dtype, actual, i)) continue;
    found.push(`[${i}] ${inputs.map((x) => elementHex(x, i, inputSize)).join(", ")}: got ${elementHex(actual, i, size)}, torch ${elementHex(expected, i, size)}`);
    if (found.length === 5) break;
  }
  return found;
}

const every16 = new Uint8Array(Uint16Array.from({ length: 65536 }, (_, i) => i).buffer);

describe.each([
  ["reference", reference as Kernels],
  ["fast", fast as Kernels],
])("%s kernels against PyTorch", (_name, kernels) => {
  describe.each(["F16", "BF16", "F32", "F64"] as const)("%s", (dtype) => {
    const name = short[dtype];
    const a = fixtureBytes(`${name}_add_a`), b = fixtureBytes(`${name}_add_b`);
    const anyNaN = dtype === "BF16";

    it("addInto equals torch a + b", () => {
      const out = new Uint8Array(a.length);
      kernels.addInto(dtype, a, b, out);
      expect(differences(dtype, out, fixtureBytes(`${name}_add`), anyNaN, [a, b], dtypeBytes(dtype))).toEqual([]);
    });

    it("subIntoWithFixups writes torch a - b as the delta", () => {
      const out = new Uint8Array(a.length);
      kernels.subIntoWithFixups(dtype, a, b, out);
      expect(differences(dtype, out, fixtureBytes(`${name}_sub`), anyNaN, [a, b], dtypeBytes(dtype))).toEqual([]);
    });

    it("subInto equals torch a - b", () => {
      const out = new Uint8Array(a.length);
      kernels.subInto(dtype, a, b, out);
      expect(differences(dtype, out, fixtureBytes(`${name}_sub`), anyNaN, [a, b], dtypeBytes(dtype))).toEqual([]);
    });
  });

  const conversions: [FloatDType, FloatDType, string, Uint8Array][] = [
    ["F16", "F32", "f16_to_f32", every16],
    ["BF16", "F32", "bf16_to_f32", every16],
    ["F16", "BF16", "f16_to_bf16", every16],
    ["BF16", "F16", "bf16_to_f16", every16],
    ["F32", "F16", "f32_to_f16", fixtureBytes("f32_values")],
    ["F32", "BF16", "f32_to_bf16", fixtureBytes("f32_values")],
    ["F32", "F64", "f32_to_f64", fixtureBytes("f32_values")],
    ["F64", "F16", "f64_to_f16", fixtureBytes("f64_values")],
    ["F64", "BF16", "f64_to_bf16", fixtureBytes("f64_values")],
    ["F64", "F32", "f64_to_f32", fixtureBytes("f64_values")],
  ];
  it.each(conversions)("convertInto %s -> %s equals torch .to()", (from, to, fixture, src) => {
    const out = new Uint8Array((src.length / dtypeBytes(from)) * dtypeBytes(to));
    kernels.convertInto(from, to, src, out);
    expect(differences(to, out, fixtureBytes(fixture), false, [src], dtypeBytes(from))).toEqual([]);
  });

  it.each(["F16", "BF16"] as const)("convertInto %s -> F64 equals torch .double() on every bit pattern", (from) => {
    const out = new Uint8Array(65536 * 8);
    kernels.convertInto(from, "F64", every16, out);
    // The fixture keeps the high 32 bits; widening is exact, so the low 32 bits are zero.
    const high = fixtureBytes(`${short[from]}_to_f64_high`);
    const expected = new Uint8Array(65536 * 8);
    for (let i = 0; i < 65536; i++) expected.set(high.subarray(i * 4, i * 4 + 4), i * 8 + 4);
    expect(differences("F64", out, expected, false, [every16], 2)).toEqual([]);
  });
});

describe("what the fixtures show about torch", () => {
  it("rounds float64 to half through float32 (twice), not directly", () => {
    // 1 + 2^-11 + 2^-40: directly it is above the tie and rounds up to 0x3C01;
    // through float32 it becomes the tie 1 + 2^-11 and rounds to even, 0x3C00.
    const src = new Uint8Array(new Float64Array([1 + 2 ** -11 + 2 ** -40]).buffer);
    const values = new Float64Array(fixtureBytes("f64_values").buffer.slice(0));
    const index = values.indexOf(1 + 2 ** -11 + 2 ** -40);
    expect(index).toBeGreaterThanOrEqual(0);
    expect(new Uint16Array(fixtureBytes("f64_to_f16").buffer.slice(0))[index]).toBe(0x3c00);
    const out = new Uint8Array(2);
    fast.convertInto("F64", "F16", src, out);
    expect(out[0]! | (out[1]! << 8)).toBe(0x3c00);
  });
});
