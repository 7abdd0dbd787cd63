/**
 * The fast kernels (WebAssembly SIMD, tiled) against the scalar reference,
 * which test/kernels/torch-oracle.test.ts ties to PyTorch: every F16 and
 * BF16 bit pattern for the unary conversions, every pattern paired with
 * special and random partners for add/sub, and the awkward shapes of
 * buffers (odd byte offsets, aliasing, tile boundaries, tails).
 */
import { describe, expect, it } from "vitest";
import { dtypeBytes, type FloatDType } from "../../src/dtypes.js";
import * as fast from "../../src/kernels/fast.js";
import * as reference from "../../src/kernels/reference.js";

/** Deterministic xorshift32 bytes. */
function randomBytes(length: number, seed: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, length);
}

/** Byte equality without vitest's (slow, for megabytes) deep diff. */
function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** The same bytes at an odd byte offset inside a larger buffer. */
function atOddOffset(bytes: Uint8Array): Uint8Array {
  const holder = new Uint8Array(bytes.length + 3);
  const view = holder.subarray(1, 1 + bytes.length);
  view.set(bytes);
  return view;
}

function firstDifference(dtypeSize: number, actual: Uint8Array, expected: Uint8Array, inputs: Uint8Array[]): string | undefined {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      const e = Math.floor(i / dtypeSize);
      const hex = (b: Uint8Array) => Array.from(b.subarray(e * dtypeSize, (e + 1) * dtypeSize)).reverse().map((x) => x.toString(16).padStart(2, "0")).join("");
      return `element ${e} (${inputs.map(hex).join(", ")}): fast ${hex(actual)}, reference ${hex(expected)}`;
    }
  }
  return undefined;
}

const every16 = new Uint8Array(Uint16Array.from({ length: 65536 }, (_, i) => i).buffer);

const SPECIAL: Record<"F16" | "BF16", number[]> = {
  F16: [0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x8400, 0x3c00, 0xbc00, 0x3c01, 0x7bff, 0xfbff,
    0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7c01, 0xfc01, 0x7fff, 0xffff, 0x1400, 0x0200, 0x3800, 0x7800],
  BF16: [0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x8080, 0x3f80, 0xbf80, 0x3f81, 0x7f7f, 0xff7f,
    0x7f80, 0xff80, 0x7fc0, 0xffc0, 0x7f81, 0xff81, 0x7fff, 0xffff, 0x3b80, 0x4b00, 0x0100],
};

/** Every 16-bit pattern as `a`, each paired with every special value and with random partners. */
function allPatternPairs(dtype: "F16" | "BF16"): [Uint8Array, Uint8Array] {
  const partners = SPECIAL[dtype].length + 24;
  const a = new Uint16Array(65536 * partners), b = new Uint16Array(65536 * partners);
  const random = new Uint16Array(randomBytes(65536 * 48, dtype === "F16" ? 7 : 11).buffer);
  for (let p = 0; p < partners; p++) {
    for (let x = 0; x < 65536; x++) {
      const k = p * 65536 + x;
      a[k] = x;
      if (p < SPECIAL[dtype].length) b[k] = SPECIAL[dtype][p]!;
      else if (p % 2 === 0) b[k] = random[(p - SPECIAL[dtype].length) * 2048 + (x & 2047)]! ^ (x << 3);
      // Near neighbours with either sign: cancellation, carries and ties.
      else b[k] = (x + ((random[x]! % 129) - 64)) ^ (random[x]! & 0x8000);
    }
  }
  return [new Uint8Array(a.buffer), new Uint8Array(b.buffer)];
}

describe.each(["F16", "BF16"] as const)("%s add and subtract", (dtype) => {
  const [a, b] = allPatternPairs(dtype);

  it.each(["addInto", "subInto"] as const)("%s matches the reference on every bit pattern against specials and random partners", (op) => {
    const actual = new Uint8Array(a.length), expected = new Uint8Array(a.length);
    fast[op](dtype, a, b, actual);
    reference[op](dtype, a, b, expected);
    expect(firstDifference(2, actual, expected, [a, b])).toBeUndefined();
  });
});

describe.each(["F32", "F64"] as const)("%s add and subtract", (dtype) => {
  it.each(["addInto", "subInto"] as const)("%s matches the reference on random bit patterns", (op) => {
    const n = 300_000 * dtypeBytes(dtype);
    const a = randomBytes(n, 3), b = randomBytes(n, 5);
    const actual = new Uint8Array(n), expected = new Uint8Array(n);
    fast[op](dtype, a, b, actual);
    reference[op](dtype, a, b, expected);
    expect(firstDifference(dtypeBytes(dtype), actual, expected, [a, b])).toBeUndefined();
  });
});

describe("conversions", () => {
  const all16: [FloatDType, FloatDType][] = [
    ["F16", "F32"], ["F16", "BF16"], ["F16", "F64"], ["BF16", "F32"], ["BF16", "F16"], ["BF16", "F64"],
  ];
  it.each(all16)("%s -> %s matches the reference on every bit pattern", (from, to) => {
    const actual = new Uint8Array(65536 * dtypeBytes(to)), expected = new Uint8Array(65536 * dtypeBytes(to));
    fast.convertInto(from, to, every16, actual);
    reference.convertInto(from, to, every16, expected);
    expect(firstDifference(dtypeBytes(to), actual, expected, [every16])).toBeUndefined();
  });

  // Every sign/exponent/top-mantissa combination with the low bits that decide
  // rounding: below, at and above the half (13 bits) and bfloat16 (16 bits) ties.
  function f32RoundingCases(): Uint8Array {
    const lows = [0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x7fff, 0x8000, 0x8001, 0xffff];
    const words = new Uint32Array(65536 * lows.length);
    for (let high = 0; high < 65536; high++) {
      for (let j = 0; j < lows.length; j++) words[high * lows.length + j] = ((high << 16) | lows[j]!) >>> 0;
    }
    return new Uint8Array(words.buffer);
  }

  it.each([["F16"], ["BF16"], ["F64"]] as const)("F32 -> %s matches the reference on every rounding case", (to) => {
    const src = f32RoundingCases();
    const n = src.length / 4;
    const actual = new Uint8Array(n * dtypeBytes(to)), expected = new Uint8Array(n * dtypeBytes(to));
    fast.convertInto("F32", to, src, actual);
    reference.convertInto("F32", to, src, expected);
    expect(firstDifference(dtypeBytes(to), actual, expected, [src])).toBeUndefined();
  });

  it("same-dtype conversion copies the bytes", () => {
    const src = randomBytes(1000, 9), out = new Uint8Array(1000);
    fast.convertInto("F16", "F16", src, out);
    expect(out).toEqual(src);
  });

  it("widens in place when out shares the input's buffer across tile boundaries", () => {
    const n = 150_000; // several tiles
    const buffer = new Uint8Array(n * 4);
    const src = buffer.subarray(0, n * 2);
    src.set(randomBytes(n * 2, 13));
    const expected = new Uint8Array(n * 4);
    reference.convertInto("F16", "F32", src.slice(), expected);
    fast.convertInto("F16", "F32", src, buffer);
    expect(firstDifference(4, buffer, expected, [])).toBeUndefined();
  });

  it("narrows in place (F32 -> F16 over the start of its own input) across tile boundaries", () => {
    const n = 150_000;
    const buffer = randomBytes(n * 4, 14);
    const expected = new Uint8Array(n * 2);
    reference.convertInto("F32", "F16", buffer.slice(), expected);
    fast.convertInto("F32", "F16", buffer, buffer.subarray(0, n * 2));
    expect(firstDifference(2, buffer.subarray(0, n * 2), expected, [])).toBeUndefined();
  });

  it("converts into a non-overlapping part of the input's buffer", () => {
    const n = 150_000;
    const buffer = new Uint8Array(n * 6);
    const src = buffer.subarray(0, n * 2), out = buffer.subarray(n * 2);
    src.set(randomBytes(n * 2, 15));
    const expected = new Uint8Array(n * 4);
    reference.convertInto("BF16", "F32", src, expected);
    fast.convertInto("BF16", "F32", src, out);
    expect(firstDifference(4, out, expected, [])).toBeUndefined();
  });

  it("rejects an output of the wrong size", () => {
    expect(() => fast.convertInto("F16", "F32", new Uint8Array(8), new Uint8Array(8))).toThrow(RangeError);
  });
});

describe("buffer shapes", () => {
  // 200_003 elements: several 128 KB tiles and a tail that is not a whole vector.
  const n = 200_003;

  it.each(["F16", "BF16", "F32", "F64"] as const)("%s add works at odd byte offsets, with out aliasing an input", (dtype) => {
    const size = dtypeBytes(dtype);
    const a = randomBytes(n * size, 21), b = randomBytes(n * size, 22);
    const expected = new Uint8Array(n * size);
    reference.addInto(dtype, a, b, expected);

    const oddA = atOddOffset(a), oddB = atOddOffset(b), oddOut = atOddOffset(new Uint8Array(n * size));
    fast.addInto(dtype, oddA, oddB, oddOut);
    expect(firstDifference(size, oddOut, expected, [a, b])).toBeUndefined();

    const intoA = a.slice();
    fast.addInto(dtype, intoA, b, intoA);
    expect(firstDifference(size, intoA, expected, [a, b])).toBeUndefined();
    const intoB = b.slice();
    fast.addInto(dtype, a, intoB, intoB);
    expect(firstDifference(size, intoB, expected, [a, b])).toBeUndefined();
  });

  it("xorInto matches the reference at odd offsets and in place", () => {
    const a = randomBytes(n, 31), b = randomBytes(n, 32);
    const expected = new Uint8Array(n);
    reference.xorInto(a, b, expected);
    const out = atOddOffset(new Uint8Array(n));
    fast.xorInto(atOddOffset(a), atOddOffset(b), out);
    expect(sameBytes(out, expected)).toBe(true);
    const inPlace = a.slice();
    fast.xorInto(inPlace, b, inPlace);
    expect(sameBytes(inPlace, expected)).toBe(true);
  });

  it("handles empty buffers", () => {
    const empty = new Uint8Array(0);
    fast.addInto("F16", empty, empty, empty);
    fast.convertInto("F32", "F16", empty, empty);
    expect(fast.findMismatches(2, empty, empty).indices.length).toBe(0);
  });

  it("rejects buffers of different sizes or partial elements", () => {
    expect(() => fast.addInto("F16", new Uint8Array(4), new Uint8Array(6), new Uint8Array(4))).toThrow(RangeError);
    expect(() => fast.addInto("F32", new Uint8Array(6), new Uint8Array(6), new Uint8Array(6))).toThrow(RangeError);
    expect(() => fast.xorInto(new Uint8Array(4), new Uint8Array(4), new Uint8Array(5))).toThrow(RangeError);
  });
});

describe("findMismatches and applyXorFixups", () => {
  const n = 300_001;

  it.each([1, 2, 4, 8])("finds exactly the reference's mismatches for %i-byte elements, across tiles and at odd offsets", (size) => {
    const expected = randomBytes(n * size, 41);
    const actual = expected.slice();
    const noise = randomBytes(n, 42);
    for (let e = 0; e < n; e++) {
      // About 2 % of elements differ, in one random byte; runs of neighbours too.
      if (noise[e]! < 5 || (e > 150_000 && e < 150_040)) actual[e * size + (noise[e]! % size)]! ^= 1 + (noise[(e + 1) % n]! & 0x7f);
    }
    actual[actual.length - 1]! ^= 0x80; // the very last byte
    const want = reference.findMismatches(size, actual, expected);
    const got = fast.findMismatches(size, atOddOffset(actual), atOddOffset(expected));
    expect(got.indices.length).toBe(want.indices.length);
    expect(sameBytes(got.indices, want.indices)).toBe(true);
    expect(sameBytes(got.xors, want.xors)).toBe(true);
    expect(want.indices.length).toBeGreaterThan(n / 60);

    // Applying the XORs to `actual` gives back `expected`.
    const fixed = atOddOffset(actual);
    fast.applyXorFixups(size, fixed, got.indices, got.xors);
    expect(sameBytes(fixed, expected)).toBe(true);
  });

  it("finds nothing in equal buffers, returning empty arrays", () => {
    const data = randomBytes(n * 2, 51);
    const result = fast.findMismatches(2, data, data.slice());
    expect(result.indices.length).toBe(0);
    expect(result.xors.length).toBe(0);
  });

  it("treats a NaN as its bits: equal NaNs match, different NaN payloads do not", () => {
    const a = new Uint8Array(new Uint16Array([0x7e00, 0x7e00, 0x7c01]).buffer);
    const b = new Uint8Array(new Uint16Array([0x7e00, 0xfe00, 0x7c01]).buffer);
    const result = fast.findMismatches(2, a, b);
    expect(Array.from(result.indices)).toEqual([1]);
    expect(Array.from(result.xors)).toEqual([0x00, 0x80]);
  });

  it("rejects a fix-up index outside the chunk and xors of the wrong length", () => {
    const data = new Uint8Array(8);
    expect(() => fast.applyXorFixups(2, data, Uint32Array.of(4), new Uint8Array(2))).toThrow(RangeError);
    expect(() => fast.applyXorFixups(2, data, Uint32Array.of(1), new Uint8Array(3))).toThrow(RangeError);
    expect(() => fast.findMismatches(3, data, data)).toThrow(RangeError);
  });
});

describe("the kernels the tool uses", () => {
  it("are the WebAssembly SIMD ones on Node 20", async () => {
    const index = await import("../../src/kernels/index.js");
    expect(index.kernelImplementation).toBe("wasm-simd");
    expect(index.addInto).toBe(fast.addInto);
  });
});

describe("subIntoWithFixups (make-delta's one-pass codec add)", () => {
  /** Checks the fused kernel against the separate reference kernels, and that the fix-ups restore the target. */
  function check(dtype: FloatDType, target: Uint8Array, base: Uint8Array): number {
    const size = dtypeBytes(dtype);
    const expectedDelta = new Uint8Array(target.length), roundTrip = new Uint8Array(target.length);
    reference.subInto(dtype, target, base, expectedDelta);
    reference.addInto(dtype, base, expectedDelta, roundTrip);
    const expectedFixups = reference.findMismatches(size, roundTrip, target);

    const delta = atOddOffset(new Uint8Array(target.length));
    const fixups = fast.subIntoWithFixups(dtype, atOddOffset(target), atOddOffset(base), delta);
    expect(firstDifference(size, delta, expectedDelta, [target, base])).toBeUndefined();
    expect(sameBytes(fixups.indices, expectedFixups.indices)).toBe(true);
    expect(sameBytes(fixups.xors, expectedFixups.xors)).toBe(true);

    // What apply does: base + delta, then the fix-ups, gives the target bit for bit.
    const recovered = new Uint8Array(target.length);
    fast.addInto(dtype, base, delta, recovered);
    fast.applyXorFixups(size, recovered, fixups.indices, fixups.xors);
    expect(sameBytes(recovered, target)).toBe(true);
    return fixups.indices.length;
  }

  it.each(["F16", "BF16"] as const)("%s: every bit pattern against specials and random partners", (dtype) => {
    const [a, b] = allPatternPairs(dtype);
    expect(check(dtype, a, b)).toBeGreaterThan(0);
  });

  it.each(["F32", "F64"] as const)("%s: random bit patterns", (dtype) => {
    const n = 200_003 * dtypeBytes(dtype);
    check(dtype, randomBytes(n, 61), randomBytes(n, 62));
  });

  it("works in place (delta written over the target)", () => {
    const [a, b] = allPatternPairs("F16");
    const expected = new Uint8Array(a.length);
    reference.subInto("F16", a, b, expected);
    const inPlace = a.slice();
    const fixups = fast.subIntoWithFixups("F16", inPlace, b, inPlace);
    expect(sameBytes(inPlace, expected)).toBe(true);
    const recovered = new Uint8Array(a.length);
    fast.addInto("F16", b, inPlace, recovered);
    fast.applyXorFixups(2, recovered, fixups.indices, fixups.xors);
    expect(sameBytes(recovered, a)).toBe(true);
  });
});
