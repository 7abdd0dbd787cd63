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
