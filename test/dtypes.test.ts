import { describe, expect, it } from "vitest";
import {
  bf16BitsToF32Bits,
  bf16ToF32,
  f16BitsToF32Bits,
  f16ToF32,
  f32Bits,
  f32BitsToBf16,
  f32BitsToF16,
  f32FromBits,
  f32ToBf16,
  f32ToF16,
} from "../src/dtypes.js";
import { fixtureU16, fixtureU32 } from "./kernels/fixtures.js";

// Expected values below come from PyTorch (test/fixtures/kernels, written by
// scripts/make-kernel-fixtures.py) or from the IEEE 754 binary16 / bfloat16
// definitions, never from our own code.

function firstDifference(actual: ArrayLike<number>, expected: ArrayLike<number>, inputs?: ArrayLike<number>): string | undefined {
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      const input = inputs ? ` for input 0x${inputs[i]!.toString(16)}` : "";
      return `element ${i}${input}: got 0x${actual[i]!.toString(16)}, torch 0x${expected[i]!.toString(16)}`;
    }
  }
  return undefined;
}

const every16 = Uint16Array.from({ length: 65536 }, (_, i) => i);

describe("widening half and bfloat16 to float32", () => {
  it("f16BitsToF32Bits matches torch .float() on every half bit pattern, NaN payloads included", () => {
    const actual = Array.from(every16, f16BitsToF32Bits);
    expect(firstDifference(actual, fixtureU32("f16_to_f32"), every16)).toBeUndefined();
  });

  it("bf16BitsToF32Bits matches torch .float() on every bfloat16 bit pattern", () => {
    expect(firstDifference(Array.from(every16, bf16BitsToF32Bits), fixtureU32("bf16_to_f32"), every16)).toBeUndefined();
  });

  it("f16ToF32 and bf16ToF32 give torch's values (NaN for NaN)", () => {
    const half = fixtureU32("f16_to_f32"), bfloat = fixtureU32("bf16_to_f32");
    const wrong: number[] = [];
    for (let h = 0; h < 65536; h++) {
      // Object.is treats NaN as equal to NaN and tells -0 from +0.
      if (!Object.is(f16ToF32(h), f32FromBits(half[h]!))) wrong.push(h);
      if (!Object.is(bf16ToF32(h), f32FromBits(bfloat[h]!))) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });

  it("decodes the IEEE binary16 landmarks", () => {
    expect(f16ToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(f16ToF32(0x0400)).toBe(2 ** -14); // smallest normal
    expect(f16ToF32(0x7bff)).toBe(65504); // largest finite
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x3555)).toBe((1 + 0x155 / 1024) * 0.25); // exponent 13, mantissa 0x155
  });
});

describe("narrowing float32 to half and bfloat16 (round to nearest even)", () => {
  const inputs = fixtureU32("f32_values");

  it("f32BitsToF16 matches torch .half() on edges, NaN payloads, halfway cases and random floats", () => {
    expect(firstDifference(Array.from(inputs, f32BitsToF16), fixtureU16("f32_to_f16"), inputs)).toBeUndefined();
  });

  it("f32BitsToBf16 matches torch .bfloat16() on the same inputs", () => {
    expect(firstDifference(Array.from(inputs, f32BitsToBf16), fixtureU16("f32_to_bf16"), inputs)).toBeUndefined();
  });

  it("f32ToF16 and f32ToBf16 on numbers agree with torch for every non-NaN input", () => {
    const half = fixtureU16("f32_to_f16"), bfloat = fixtureU16("f32_to_bf16");
    const wrong: number[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const value = f32FromBits(inputs[i]!);
      if (Number.isNaN(value)) continue;
      if (f32ToF16(value) !== half[i] || f32ToBf16(value) !== bfloat[i]) wrong.push(inputs[i]!);
    }
    expect(wrong).toEqual([]);
  });

  it("round trips every half and bfloat16 pattern through float32 as torch does", () => {
    expect(firstDifference(Array.from(every16, (h) => f32BitsToF16(f16BitsToF32Bits(h))), fixtureU16("f16_roundtrip"), every16)).toBeUndefined();
    expect(firstDifference(Array.from(every16, (h) => f32BitsToBf16(bf16BitsToF32Bits(h))), fixtureU16("bf16_roundtrip"), every16)).toBeUndefined();
  });

  it("rounds ties to even and overflows to Inf at the binary16 limits", () => {
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519.99609375)).toBe(0x7bff); // just under the tie with 65536
    expect(f32ToF16(65520)).toBe(0x7c00); // the tie rounds to even: Inf
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie between 0 and 2^-24: even is 0
    expect(f32ToF16(1.5 * 2 ** -24)).toBe(0x0002); // tie between 1 and 2 subnormal ulps: 2
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie, even mantissa below
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, odd mantissa below
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16(f32FromBits(0x7f7fffff))).toBe(0x7f80); // f32 max rounds up to Inf
  });

  it("f32Bits and f32FromBits are inverse on finite values", () => {
    expect(f32Bits(1)).toBe(0x3f800000);
    expect(f32Bits(-2)).toBe(0xc0000000);
    expect(f32FromBits(0x3f800000)).toBe(1);
  });
});
