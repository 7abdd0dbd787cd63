/**
 * The F16 kernels take a common-case path for whole vectors of eight
 * elements (finite normal halves below 2^15; for make-delta's subtraction
 * also a delta that is itself a half and adds back to the target) and the
 * general path for any vector with one lane outside it. Both must give the
 * scalar reference's bits, so these cases put every pair of special values
 * (NaN payloads, ±Inf, ±0, subnormals, the edges of the common range,
 * max-finite neighbours) on each path: alone in a vector, and as one lane
 * among common ones, in every lane position; then many random pairs shaped
 * like fine-tune weights, where nearly every vector takes the common path.
 */
import { describe, expect, it } from "vitest";
import * as fast from "../../src/kernels/fast.js";
import * as reference from "../../src/kernels/reference.js";
import { rng } from "../helpers/finetune.js";

const SIGNLESS = [
  0x0000, // zero
  0x0001, 0x0002, 0x01ff, 0x0200, 0x03fe, 0x03ff, // subnormals
  0x0400, 0x0401, 0x07ff, 0x0800, // smallest normals: the common range starts at 0x0400
  0x1400, 0x2e66, 0x3bff, 0x3c00, 0x3c01, // ordinary weights
  0x77fe, 0x77ff, 0x7800, 0x7801, // the common range ends below 0x7800 (2^15)
  0x7bfe, 0x7bff, // largest finite halves
  0x7c00, // Inf
  0x7c01, 0x7d00, 0x7dff, 0x7e00, 0x7e01, 0x7fff, // NaNs: signalling and quiet, several payloads
];
const SPECIALS = [...SIGNLESS, ...SIGNLESS.map((bits) => bits | 0x8000)];

/** A weight-like half in the common range with a close neighbour: a common-path pair. */
function commonPair(next: () => number): [number, number] {
  const base = (0x1800 + Math.floor(next() * 0x2000)) | (next() < 0.5 ? 0x8000 : 0);
  const target = base + Math.floor(next() * 64) - 32;
  return [target, base];
}

/** Pairs (a, b) laid out as 16-bit element arrays, with their count. */
interface Pairs { a: Uint8Array; b: Uint8Array; count: number }

function layout(pairs: [number, number][]): Pairs {
  const a = new Uint16Array(pairs.length), b = new Uint16Array(pairs.length);
  pairs.forEach(([x, y], i) => { a[i] = x; b[i] = y; });
  return { a: new Uint8Array(a.buffer), b: new Uint8Array(b.buffer), count: pairs.length };
}

/** Every ordered pair of specials, each alone in a vector (eight copies of it). */
function specialsAlone(): Pairs {
  const pairs: [number, number][] = [];
  for (const x of SPECIALS) for (const y of SPECIALS) for (let lane = 0; lane < 8; lane++) pairs.push([x, y]);
  return layout(pairs);
}

/** Every ordered pair of specials as one lane (in turn each of the eight) among common-path pairs. */
function specialsAmongCommon(): Pairs {
  const next = rng(0x5eed);
  const pairs: [number, number][] = [];
  let position = 0;
  for (const x of SPECIALS) {
    for (const y of SPECIALS) {
      for (let lane = 0; lane < 8; lane++) pairs.push(lane === position % 8 ? [x, y] : commonPair(next));
      position++;
    }
  }
  return layout(pairs);
}

/**
 * Fine-tune-shaped pairs: a base weight (normal, zero or subnormal now and
 * then) and a target that moved by a little, by a lot, or to a random half;
 * runs of each so that whole vectors of every kind occur.
 */
function fineTunePairs(count: number, seed: number): Pairs {
  const next = rng(seed);
  const pairs: [number, number][] = [];
  let kind = 0;
  for (let i = 0; i < count; i++) {
    if (i % 64 === 0) kind = Math.floor(next() * 5);
    const sign = next() < 0.5 ? 0x8000 : 0;
    const base = kind === 4 && next() < 0.3 ? Math.floor(next() * 0x0500) | sign : (0x0400 + Math.floor(next() * 0x7400)) | sign;
    let target: number;
    if (kind === 0 || kind === 4) target = (base + Math.floor(next() * 33) - 16) & 0xffff; // a few ulps: exact deltas
    else if (kind === 1) target = (base + Math.floor(next() * 0x1000) - 0x800) & 0xffff; // across binades
    else if (kind === 2) target = ((base & 0x7fff) >> 1 | (next() < 0.5 ? 0x8000 : 0)) + Math.floor(next() * 8); // far apart, either sign
    else target = Math.floor(next() * 0x10000); // anything, NaNs included
    pairs.push([target, base]);
  }
  return layout(pairs);
}

function sameBytes(x: ArrayBufferView, y: ArrayBufferView): boolean {
  return Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
}

/** The first element where the fast and reference results differ, described; undefined when none does. */
function firstDifference(actual: Uint8Array, expected: Uint8Array, { a, b }: Pairs): string | undefined {
  const got = new Uint16Array(actual.buffer, actual.byteOffset, actual.length / 2);
  const want = new Uint16Array(expected.buffer, expected.byteOffset, expected.length / 2);
  const as = new Uint16Array(a.buffer), bs = new Uint16Array(b.buffer);
  const hex = (x: number) => x.toString(16).padStart(4, "0");
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) return `element ${i} (${hex(as[i]!)}, ${hex(bs[i]!)}): fast ${hex(got[i]!)}, reference ${hex(want[i]!)}`;
  }
  return undefined;
}

const CASES: [string, () => Pairs][] = [
  ["every pair of specials, alone in its vector", specialsAlone],
  ["every pair of specials among common-path lanes, in every lane", specialsAmongCommon],
  // Not a whole number of tiles, vectors or unrolled iterations: the last one is partial.
  ["fine-tune-shaped pairs", () => fineTunePairs(600_003, 0xf16)],
];

describe.each(CASES)("F16 kernels on %s", (_name, make) => {
  const pairs = make();

  it.each(["addInto", "subInto"] as const)("%s gives the reference's bits", (op) => {
    const actual = new Uint8Array(pairs.a.length), expected = new Uint8Array(pairs.a.length);
    fast[op]("F16", pairs.a, pairs.b, actual);
    reference[op]("F16", pairs.a, pairs.b, expected);
    expect(firstDifference(actual, expected, pairs)).toBeUndefined();
  });

  it("subIntoWithFixups gives the reference's delta and fix-ups, and they restore the target", () => {
    const { a: target, b: base } = pairs;
    const delta = new Uint8Array(target.length), expectedDelta = new Uint8Array(target.length);
    const fixups = fast.subIntoWithFixups("F16", target, base, delta);
    const expected = reference.subIntoWithFixups("F16", target, base, expectedDelta);
    expect(firstDifference(delta, expectedDelta, pairs)).toBeUndefined();
    expect(fixups.indices.length).toBe(expected.indices.length);
    expect(sameBytes(fixups.indices, expected.indices)).toBe(true);
    expect(sameBytes(fixups.xors, expected.xors)).toBe(true);

    const recovered = new Uint8Array(target.length);
    fast.addInto("F16", base, delta, recovered);
    fast.applyXorFixups(2, recovered, fixups.indices, fixups.xors);
    expect(sameBytes(recovered, target)).toBe(true);
  });
});

describe("F16 kernels on short buffers", () => {
  /** Fast against reference for add, sub and subIntoWithFixups on `pairs`; `what` names the case. */
  function checkAll(pairs: Pairs, what: string): void {
    for (const op of ["addInto", "subInto"] as const) {
      const actual = new Uint8Array(pairs.a.length), expected = new Uint8Array(pairs.a.length);
      fast[op]("F16", pairs.a, pairs.b, actual);
      reference[op]("F16", pairs.a, pairs.b, expected);
      expect(firstDifference(actual, expected, pairs), `${op}, ${what}`).toBeUndefined();
    }
    const delta = new Uint8Array(pairs.a.length), expectedDelta = new Uint8Array(pairs.a.length);
    const fixups = fast.subIntoWithFixups("F16", pairs.a, pairs.b, delta);
    const expected = reference.subIntoWithFixups("F16", pairs.a, pairs.b, expectedDelta);
    expect(firstDifference(delta, expectedDelta, pairs), `subIntoWithFixups, ${what}`).toBeUndefined();
    expect(Array.from(fixups.indices), what).toEqual(Array.from(expected.indices));
    expect(Array.from(fixups.xors), what).toEqual(Array.from(expected.xors));
  }

  it("give the reference's bits at every length from 1 to 80 elements (partial vectors and iterations)", () => {
    const next = rng(0xf18);
    const common = Array.from({ length: 80 }, () => commonPair(next));
    for (let length = 1; length <= 80; length++) {
      checkAll(layout(common.slice(0, length)), `${length} common-path pairs`);
      // A NaN last sends the last (partial) vector to the general path.
      checkAll(layout([...common.slice(0, length - 1), [0x7e01, 0x3c00]]), `${length} pairs ending in a NaN`);
    }
  });
});

describe("F16 fine-tune-shaped pairs", () => {
  it("mostly need no fix-up, and some do (the cases are not all one kind)", () => {
    const { a: target, b: base, count } = fineTunePairs(100_000, 0xf17);
    const fixups = reference.subIntoWithFixups("F16", target, base, new Uint8Array(target.length));
    expect(fixups.indices.length).toBeGreaterThan(count / 100);
    expect(fixups.indices.length).toBeLessThan(count / 2);
  });
});
