/**
 * Builds safetensors files in memory: valid ones with the library's own
 * writer, and hostile ones from a raw header text, so every malformed-input
 * test says exactly what it breaks.
 */
import type { DType } from "../../src/dtypes.js";
import { encodeHeader } from "../../src/safetensors/header.js";

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
  /** The tensor's bytes; default: a deterministic pattern of the right length. */
  data?: Uint8Array;
}

/** A valid file as Hugging Face's serializer would write it. */
export function buildSafetensors(tensors: TensorSpec[], metadata?: Record<string, string> | [string, string][] | null): Uint8Array {
  const { bytes: header, tensors: placed } = encodeHeader(tensors, metadata);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const dataLength = placed.length === 0 ? 0 : (placed[placed.length - 1]?.end ?? 0);
  const out = new Uint8Array(header.length + dataLength);
  out.set(header, 0);
  for (const p of placed) {
    const spec = byName.get(p.name) as TensorSpec;
    const data = spec.data ?? patternBytes(p.end - p.begin, p.begin);
    if (data.length !== p.end - p.begin) throw new Error(`test data for ${p.name} has ${data.length} bytes, expected ${p.end - p.begin}`);
    out.set(data, header.length + p.begin);
  }
  return out;
}

/** Raw file: u64 length (default: the text's UTF-8 length), the header bytes as given, then `data`. */
export function rawSafetensors(header: string | Uint8Array, data: number | Uint8Array = 0, headerLength?: bigint): Uint8Array {
  const headerBytes = typeof header === "string" ? new TextEncoder().encode(header) : header;
  const dataBytes = typeof data === "number" ? patternBytes(data, 0) : data;
  const out = new Uint8Array(8 + headerBytes.length + dataBytes.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(dataBytes, 8 + headerBytes.length);
  return out;
}

/** A one-entry header text: {"name":{"dtype":..,"shape":..,"data_offsets":..}}. */
export function entry(name: string, dtype: string, shape: unknown[], offsets: unknown[]): string {
  return `${JSON.stringify(name)}:{"dtype":${JSON.stringify(dtype)},"shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offsets)}}`;
}

export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + 11) & 0xff;
  return out;
}
