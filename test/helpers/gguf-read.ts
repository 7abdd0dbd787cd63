/**
 * A small GGUF reader written from the format's specification (ggml's
 * docs/gguf.md), sharing no code with src/gguf, so tests check the writer's
 * bytes against an independent reading of them.
 */

export interface ReadGguf {
  version: number;
  metadata: Map<string, { type: number; value: unknown }>;
  tensors: { name: string; dims: number[]; type: number; offset: number }[];
  /** Absolute offset of the data section. */
  dataStart: number;
  alignment: number;
}

export function readGgufBytes(bytes: Uint8Array): ReadGguf {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const u32 = () => { const v = view.getUint32(pos, true); pos += 4; return v; };
  const u64 = () => { const v = Number(view.getBigUint64(pos, true)); pos += 8; return v; };
  const str = () => { const n = u64(); const s = new TextDecoder().decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const value = (type: number): unknown => {
    switch (type) {
      case 0: return view.getUint8(pos++);
      case 1: return view.getInt8(pos++);
      case 2: { const v = view.getUint16(pos, true); pos += 2; return v; }
      case 3: { const v = view.getInt16(pos, true); pos += 2; return v; }
      case 4: return u32();
      case 5: { const v = view.getInt32(pos, true); pos += 4; return v; }
      case 6: { const v = view.getFloat32(pos, true); pos += 4; return v; }
      case 7: { const v = view.getUint8(pos++); if (v > 1) throw new Error(`bool byte ${v}`); return v === 1; }
      case 8: return str();
      case 9: {
        const itemType = u32();
        const n = u64();
        const items: unknown[] = [];
        for (let i = 0; i < n; i++) items.push(value(itemType));
        return { itemType, items };
      }
      case 10: return u64();
      case 12: { const v = view.getFloat64(pos, true); pos += 8; return v; }
      default: throw new Error(`unknown GGUF value type ${type}`);
    }
  };
  if (new TextDecoder().decode(bytes.subarray(0, 4)) !== "GGUF") throw new Error("no GGUF magic");
  pos = 4;
  const version = u32();
  const nTensors = u64();
  const nKv = u64();
  const metadata = new Map<string, { type: number; value: unknown }>();
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const type = u32();
    metadata.set(key, { type, value: value(type) });
  }
  const tensors: ReadGguf["tensors"] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nDims = u32();
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(u64());
    const type = u32();
    tensors.push({ name, dims, type, offset: u64() });
  }
  const alignment = (metadata.get("general.alignment")?.value as number | undefined) ?? 32;
  const dataStart = Math.ceil(pos / alignment) * alignment;
  for (let i = pos; i < dataStart; i++) if (bytes[i] !== 0) throw new Error(`non-zero padding at ${i}`);
  return { version, metadata, tensors, dataStart, alignment };
}

/** Bytes of a tensor of ggml type `type` with `dims` (innermost first). */
export function ggmlBytes(type: number, dims: number[]): number {
  const n = dims.reduce((a, b) => a * b, 1);
  switch (type) {
    case 0: return n * 4;
    case 1: case 30: return n * 2;
    case 8: return (n / 32) * 34;
    default: throw new Error(`unexpected ggml type ${type}`);
  }
}
