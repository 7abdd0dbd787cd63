import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { convertChunk, encodeF32As, Q8_0_NAN_D, widenToF32 } from "../../src/gguf/quantize.js";
import { quantizeQ8_0Into } from "../../src/kernels/index.js";
import { REPO_ROOT } from "../helpers/realdata.js";

const FIXTURES = join(REPO_ROOT, "test", "fixtures", "gguf", "q8_0");

/**
 * The blocks scripts/make-q8-0-fixtures.py wrote and gguf-py's Q8_0 bytes for
 * them. Where gguf-py's d is a NaN (the block holds one), which NaN depends on
 * numpy's SIMD lanes and CPU, not on gguf-py's rule: `q8` has it replaced by
 * the one we write (Q8_0_NAN_D); `nanBlocks` counts them.
 */
function oracle(): { values: Float32Array; q8: Uint8Array; nanBlocks: number } {
  const raw = readFileSync(join(FIXTURES, "values.f32"));
  const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const q8 = new Uint8Array(readFileSync(join(FIXTURES, "q8_0.bin")));
  let nanBlocks = 0;
  for (let o = 0; o < q8.length; o += 34) {
    const d = q8[o]! | (q8[o + 1]! << 8);
    if ((d & 0x7c00) === 0x7c00 && (d & 0x3ff) !== 0) {
      nanBlocks++;
      q8[o] = Q8_0_NAN_D & 0xff;
      q8[o + 1] = Q8_0_NAN_D >>> 8;
    }
  }
  return { values, q8, nanBlocks };
}

/** Indexes of the blocks where two Q8_0 encodings differ, with both blocks in hex. */
function differingBlocks(got: Uint8Array, want: Uint8Array): string[] {
  const out: string[] = [];
  for (let b = 0; b * 34 < want.length; b++) {
    const g = Buffer.from(got.subarray(b * 34, b * 34 + 34)).toString("hex");
    const w = Buffer.from(want.subarray(b * 34, b * 34 + 34)).toString("hex");
    if (g !== w) out.push(`block ${b}: ${g} != ${w}`);
  }
  return out;
}

describe("Q8_0 reference quantizer against gguf-py", () => {
  it("gives gguf-py's bytes for every oracle block: ties, near-ties, zeros, subnormals, infinities, NaNs, random", () => {
    const { values, q8, nanBlocks } = oracle();
    expect(values.length).toBe((q8.length / 34) * 32);
    expect(q8.length / 34).toBeGreaterThan(300);
    expect(nanBlocks).toBeGreaterThan(20);
    const got = encodeF32As("Q8_0", values);
    expect(got.length).toBe(q8.length);
    expect(differingBlocks(got, q8)).toEqual([]);
  });
});

/** xorshift32: the same pseudo-random words on every run. */
function randomWords(count: number, seed: number): Uint32Array {
  const out = new Uint32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = s;
  }
  return out;
}

function fastQ8_0(from: "F16" | "BF16" | "F32", src: Uint8Array): Uint8Array {
  const out = new Uint8Array((src.length / (from === "F32" ? 4 : 2) / 32) * 34);
  quantizeQ8_0Into!(from, src, out);
  return out;
}

function referenceQ8_0(from: "F16" | "BF16" | "F32", src: Uint8Array): Uint8Array {
  return encodeF32As("Q8_0", widenToF32(from, src));
}

/** Halves (or bfloat16) as bytes. */
function halfBytes(halves: ArrayLike<number>): Uint8Array {
  return new Uint8Array(Uint16Array.from(halves).buffer);
}

describe("Q8_0 fast quantizer (WebAssembly SIMD)", () => {
  it("is the one that runs here", () => {
    expect(quantizeQ8_0Into).toBeTypeOf("function");
  });

  it("gives gguf-py's bytes for every oracle block from float32", () => {
    const { values, q8 } = oracle();
    expect(differingBlocks(fastQ8_0("F32", new Uint8Array(values.buffer)), q8)).toEqual([]);
  });

  it("matches the reference bit for bit on every float16 bit pattern, shuffled into blocks (NaN, Inf, subnormal, +-0 included)", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const order = randomWords(65536, 0x9e3779b9);
    for (let i = all.length - 1; i > 0; i--) {
      const j = order[i]! % (i + 1);
      [all[i], all[j]] = [all[j]!, all[i]!];
    }
    const src = halfBytes(all);
    expect(differingBlocks(fastQ8_0("F16", src), referenceQ8_0("F16", src))).toEqual([]);
  });

  it("matches the reference on float16 weights of every scale, subnormal halves, zeros and exact ties", () => {
    const halves: number[] = [];
    const words = randomWords(32 * 4096, 12345);
    for (let b = 0; b < 4096; b++) {
      // Exponent 0..29 per block: every scale from half subnormals to 2^14; sign and mantissa random.
      const exponent = b % 30;
      for (let i = 0; i < 32; i++) {
        const w = words[b * 32 + i]!;
        halves.push((w & 0x83ff) | (Math.max(0, exponent - (w >>> 28)) << 10));
      }
    }
    // max|x| = 127 (d = 1) and x = k + 0.5 in halves: exact ties of x * (1/d).
    for (let k = -127; k < 127; k += 31) {
      const block = [0x57f0]; // 127
      for (let i = 0; i < 31; i++) block.push(f16Bits(Math.max(-126.5, Math.min(126.5, k + i + 0.5))));
      halves.push(...block);
    }
    halves.push(...new Array(32).fill(0), ...new Array(32).fill(0x8000), ...new Array<number>(32).fill(0).map((_, i) => (i % 2 ? 0x8000 : 0x0001)));
    const src = halfBytes(halves);
    expect(differingBlocks(fastQ8_0("F16", src), referenceQ8_0("F16", src))).toEqual([]);
  });

  it("matches the reference on random bfloat16 and float32 bit patterns, and on float32 subnormal blocks", () => {
    const bf16 = halfBytes(randomWords(32 * 2048, 777).map((w) => w & 0xffff));
    expect(differingBlocks(fastQ8_0("BF16", bf16), referenceQ8_0("BF16", bf16))).toEqual([]);
    const f32 = randomWords(32 * 2048, 4242);
    // Every 4th block: subnormal floats only (d underflows, or 1/d overflows or is huge but finite).
    for (let b = 0; b < 2048; b += 4) for (let i = 0; i < 32; i++) f32[b * 32 + i]! &= b % 8 === 0 ? 0x807fffff : 0x800000ff;
    const f32Bytes = new Uint8Array(f32.buffer);
    expect(differingBlocks(fastQ8_0("F32", f32Bytes), referenceQ8_0("F32", f32Bytes))).toEqual([]);
  });

  it("matches the reference around the kernel's 2^-6 cutoff for widening halves by a shift (zeros and the largest subnormals beside it)", () => {
    // The kernel takes four blocks at a time and widens halves by a shift when every max is at
    // least 2^-6 (0x2400): subnormals and zeros then come out as 0 by a bound, not by arithmetic.
    // Maxima at, just below and just above the cutoff, alone and mixed within a group of four.
    const halves: number[] = [];
    const words = randomWords(32 * 256, 31337);
    const maxima = [0x2400, 0x23ff, 0x2401, 0x2800, 0x2200, 0x2001, 0x1800, 0x7bff, 0x0400, 0x03ff];
    for (let b = 0; b < 256; b++) {
      const max = maxima[(b * 5 + (b >> 3)) % maxima.length]!;
      for (let i = 0; i < 32; i++) {
        const w = words[b * 32 + i]!;
        const sign = w & 0x8000;
        // The max (either sign), the largest subnormals, zeros of either sign, the smallest normal, random below the max, random subnormals.
        const kind = i === b % 32 ? 0 : w >>> 29;
        const magnitude = Math.min(max, [max, 0x03ff, 0x0000, 0x0001, 0x0400, (w & 0x7fff) % (max + 1), (w >>> 3) & 0x3ff, 0x03fe][kind]!);
        halves.push(sign | magnitude);
      }
    }
    const src = halfBytes(halves);
    expect(differingBlocks(fastQ8_0("F16", src), referenceQ8_0("F16", src))).toEqual([]);
  });

  it("decides each block of a group of four alone: a NaN, an infinite or a tiny max beside ordinary blocks; any block count", () => {
    const ordinary = (seed: number) => Array.from(randomWords(32, seed), (w) => (w & 0x83ff) | 0x2c00);
    const special = [
      [0x7e00, ...ordinary(1).slice(1)], // NaN
      [0xfc00, ...ordinary(2).slice(1)], // -Inf
      [0x0001, ...new Array<number>(31).fill(0)], // max 2^-24 (a subnormal): widened exactly, d rounds to a float16 0
      new Array<number>(32).fill(0x8000), // -0 only: d = 0, id = 0
    ];
    for (const [at, block] of special.entries()) {
      for (let position = 0; position < 4; position++) {
        const blocks = [ordinary(10 + at), ordinary(20 + at), ordinary(30 + at)];
        blocks.splice(position, 0, block);
        const src = halfBytes(blocks.flat());
        expect(differingBlocks(fastQ8_0("F16", src), referenceQ8_0("F16", src))).toEqual([]);
      }
    }
    // One to seven blocks, each call after a full tile of NaNs: the lanes past the last block
    // hold whatever the previous call left, and must not change the blocks before them.
    const nanTile = halfBytes(new Array<number>(32 * 2048).fill(0x7e00));
    for (const from of ["F16", "BF16"] as const) {
      for (let count = 1; count <= 7; count++) {
        fastQ8_0(from, nanTile);
        const src = halfBytes(Array.from({ length: count }, (_, b) => ordinary(100 + b)).flat());
        expect(differingBlocks(fastQ8_0(from, src), referenceQ8_0(from, src))).toEqual([]);
      }
    }
  });

  it("reads a source at any byte offset and across many tiles; refuses a partial block", () => {
    const words = randomWords(32 * 5000 / 2, 99).map((w) => w & 0x3fff3fff); // halves below 2
    const backing = new Uint8Array(words.byteLength + 1);
    backing.set(new Uint8Array(words.buffer), 1);
    const odd = backing.subarray(1);
    expect(differingBlocks(fastQ8_0("F16", odd), referenceQ8_0("F16", new Uint8Array(words.buffer)))).toEqual([]);
    expect(() => quantizeQ8_0Into!("F16", odd.subarray(0, 62), new Uint8Array(34))).toThrow(RangeError);
  });

  it("is what convertChunk writes for Q8_0, the same bytes as the reference", () => {
    const src = halfBytes(randomWords(32 * 64, 5).map((w) => w & 0xbfff));
    const converted = convertChunk("F16", "Q8_0", src);
    expect(Buffer.from(converted).equals(Buffer.from(referenceQ8_0("F16", src)))).toBe(true);
  });
});

/** A float16 bit pattern for a value float16 holds exactly. */
function f16Bits(value: number): number {
  const f = new Float32Array([value]);
  const bits = new Uint32Array(f.buffer)[0]!;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  if (value === 0) return 0;
  return ((bits >>> 16) & 0x8000) | (exponent << 10) | ((bits >>> 13) & 0x3ff);
}
