import type { DType } from "../dtypes.js";

/**
 * Integer and bool addition as torch does it on CPU (`a += b`): two's
 * complement with wrap-around, so signed and unsigned types of one width
 * share the bit arithmetic; bool + bool is logical or. Legacy deltas are
 * applied with their publisher's arithmetic, which is torch's. These tensors
 * are few and small (position ids, masks), so plain JavaScript is enough.
 */

export type IntegerDType = "BOOL" | "U8" | "I8" | "I16" | "U16" | "I32" | "U32" | "I64" | "U64";

const WIDTH: Record<IntegerDType, 1 | 2 | 4 | 8> = { BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, U64: 8 };

export function isIntegerDType(dtype: DType): dtype is IntegerDType {
  return Object.hasOwn(WIDTH, dtype);
}

/** out = a + b element-wise (little-endian bytes); `out` may alias an input. */
export function addIntegersInto(dtype: IntegerDType, a: Uint8Array, b: Uint8Array, out: Uint8Array): void {
  if (a.length !== b.length || a.length !== out.length) throw new RangeError("addIntegersInto: buffers of different sizes");
  if (dtype === "BOOL") {
    for (let i = 0; i < out.length; i++) out[i] = (a[i]! | b[i]!) !== 0 ? 1 : 0;
    return;
  }
  const width = WIDTH[dtype];
  if (a.length % width !== 0) throw new RangeError("addIntegersInto: a partial element");
  const va = new DataView(a.buffer, a.byteOffset, a.byteLength);
  const vb = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const vo = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let at = 0; at < a.length; at += width) {
    switch (width) {
      case 1: vo.setUint8(at, (va.getUint8(at) + vb.getUint8(at)) & 0xff); break;
      case 2: vo.setUint16(at, (va.getUint16(at, true) + vb.getUint16(at, true)) & 0xffff, true); break;
      case 4: vo.setUint32(at, (va.getUint32(at, true) + vb.getUint32(at, true)) >>> 0, true); break;
      case 8: vo.setBigUint64(at, BigInt.asUintN(64, va.getBigUint64(at, true) + vb.getBigUint64(at, true)), true); break;
    }
  }
}
