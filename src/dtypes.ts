/**
 * The safetensors dtype table. Order matters: it is the reference
 * implementation's `Dtype` enum order, which its serializer sorts by
 * (descending) before the tensor name.
 */

export const DTYPES = [
  "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
  "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
] as const;

export type DType = (typeof DTYPES)[number];

const BYTES: Record<DType, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  C64: 8, F64: 8, I64: 8, U64: 8,
};

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && Object.hasOwn(BYTES, value);
}

export function dtypeBytes(dtype: DType): number {
  return BYTES[dtype];
}

/** Position in the reference enum: the serializer's primary sort key. */
export function dtypeRank(dtype: DType): number {
  return DTYPES.indexOf(dtype);
}

/** Dtypes the `add` codec does arithmetic on; every other dtype uses XOR. */
export type FloatDType = "F16" | "BF16" | "F32" | "F64";

export function isArithmeticDType(dtype: DType): dtype is FloatDType {
  return dtype === "F16" || dtype === "BF16" || dtype === "F32" || dtype === "F64";
}

// ---------------------------------------------------------------------------
// Scalar float conversions, bit-exact to PyTorch on CPU. They are the oracle
// the fast kernels (src/kernels/) are tested against, and are handy for tests.
// Half and bfloat16 values travel as their 16-bit patterns (numbers 0..0xffff).

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The bit pattern of `value` rounded to float32 (RNE, as Math.fround). */
export function f32Bits(value: number): number {
  scratchF32[0] = value;
  return scratchU32[0]!;
}

/** The float32 value of a 32-bit pattern. */
export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0]!;
}

/** Exact float value of an IEEE binary16 pattern (every half is a float32). */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/**
 * binary16 bits -> float32 bits, exactly as torch's `.float()` (x86 F16C):
 * a NaN keeps its sign and payload and comes out quiet.
 */
export function f16BitsToF32Bits(bits: number): number {
  if ((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0) {
    return (((bits & 0x8000) << 16) | 0x7fc00000 | ((bits & 0x3ff) << 13)) >>> 0;
  }
  return f32Bits(f16ToF32(bits));
}

/**
 * float32 bits -> binary16 bits, round to nearest even, overflow to Inf.
 * Any NaN becomes the quiet NaN 0x7E00 with the input's sign, as torch's
 * c10::Half (fp16_ieee_from_fp32_value) does; checked against torch's own
 * outputs in test/fixtures/kernels.
 */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : sign | F16_NAN;
  const halfExponent = exponent - 112; // rebias 127 -> 15
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Result is subnormal (or zero): the value is below 2^-14.
    if (halfExponent < -10) return sign; // below 2^-25: rounds to zero
    mantissa |= 0x800000;
    const shift = 14 - halfExponent; // 14..24
    let half = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1) !== 0)) half++;
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa bumps the exponent, and past the largest
  // finite value lands exactly on Inf: the bit layout makes both correct.
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) !== 0)) half++;
  return sign | half;
}

/** The binary16 NaN torch writes (with the sign of the NaN it came from). */
export const F16_NAN = 0x7e00;

/** A number (rounded to float32 first) -> binary16 bits, RNE. */
export function f32ToF16(value: number): number {
  return f32BitsToF16(f32Bits(value));
}

/** Exact float value of a bfloat16 pattern: the high half of a float32. */
export function bf16ToF32(bits: number): number {
  return f32FromBits((bits & 0xffff) << 16);
}

/** bfloat16 bits -> float32 bits: exact, NaN payload included. */
export function bf16BitsToF32Bits(bits: number): number {
  return ((bits & 0xffff) << 16) >>> 0;
}

/**
 * float32 bits -> bfloat16 bits, round to nearest even, overflow to Inf.
 * Any NaN becomes BF16_NAN.
 */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return BF16_NAN;
  return ((bits >>> 0) + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/**
 * The bfloat16 pattern torch's vectorized CPU kernels write for any NaN
 * (cvtfp32_bf16 blends in 0xFFFF). c10::BFloat16's scalar constructor, used
 * only for the few tail elements of a vectorized loop, writes 0x7FC0 instead,
 * so torch's own NaN bits depend on an element's position; we always write
 * the vectorized value. Checked against torch in test/fixtures/kernels.
 */
export const BF16_NAN = 0xffff;

/** A number (rounded to float32 first) -> bfloat16 bits, RNE. */
export function f32ToBf16(value: number): number {
  return f32BitsToBf16(f32Bits(value));
}
