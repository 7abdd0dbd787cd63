/** Little-endian element decoding for checking reference values (independent of src/). */
export function decodeElements(dtype: string, bytes: Uint8Array, count: number): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    switch (dtype) {
      case "F32": out.push(view.getFloat32(i * 4, true)); break;
      case "F64": out.push(view.getFloat64(i * 8, true)); break;
      case "I32": out.push(view.getInt32(i * 4, true)); break;
      case "I64": out.push(Number(view.getBigInt64(i * 8, true))); break;
      case "U8": case "BOOL": out.push(view.getUint8(i)); break;
      case "BF16": {
        const f = new DataView(new ArrayBuffer(4));
        f.setUint32(0, view.getUint16(i * 2, true) << 16);
        out.push(f.getFloat32(0));
        break;
      }
      case "F16": out.push(halfToNumber(view.getUint16(i * 2, true))); break;
      default: throw new Error(`no decoder for ${dtype}`);
    }
  }
  return out;
}

function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
