/** Seeded LoRA-shaped factors for the low-rank kernel tests (the fused blocks against the scalar composition, the SIMD step against torch's reference). */

/** A seeded xorshift generator of 32-bit values. */
export function xorshift(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13; state >>>= 0; state ^= state >>> 17; state ^= state << 5; state >>>= 0;
    return state;
  };
}

/**
 * The fifth kind of special value: a NaN, one time in four, with random sign
 * and payload, quiet or not ("nan"); or a small normal whose products fall
 * below float32's normals ("tiny").
 */
export type FifthSpecial = "nan" | "tiny";

/**
 * LoRA-sized float32 values; with `specials`, one in 64 each of subnormals
 * (or zero), infinities, huge values, zeros and the `fifth` kind.
 */
export function loraFactors(next: () => number, count: number, specials: boolean, fifth: FifthSpecial): Float32Array {
  const out = new Float32Array(count);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < count; i++) {
    const r = next();
    out[i] = ((r >>> 8) / 16777216 - 0.5) * 0.05;
    if (!specials) continue;
    const pick = next() % 64;
    if (pick === 0) bits[i] = next() & 0x807fffff; // subnormal (or zero)
    else if (pick === 1) bits[i] = (next() & 0x80000000) | 0x7f800000; // infinity
    else if (pick === 2) out[i] = (next() & 1 ? 1 : -1) * 3e38;
    else if (pick === 3) out[i] = 0;
    else if (pick === 4) {
      if (fifth === "tiny") out[i] = ((r >>> 8) / 16777216) * 1e-20; // products below float32's normals
      else if (next() % 4 === 0) bits[i] = (next() & 0x80000000) | 0x7f800001 | (next() & 0x3fffff); // a NaN, quiet or not
    }
  }
  return out;
}
