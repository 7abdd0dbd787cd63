/**
 * Reads a safetensors file from a RandomAccess: the header is read and
 * validated in full on open; tensor bytes are then served as bounded chunks,
 * never a whole tensor in memory. No file system here: the caller opens the
 * bytes (io/random-access-file.ts) and hands them over.
 */
import { SafetensorsError, TruncatedError } from "../errors.js";
import { CHUNK_BYTES } from "../limits.js";
import { dtypeBytes } from "../dtypes.js";
import { resolveRange, type RandomAccess, type ReadRange, type TensorInfo, type WeightFile } from "../tensors.js";
import { parseHeader, readHeaderLength, type HeaderTensor, type SafetensorsHeader } from "./header.js";

export interface SafetensorsFile extends WeightFile {
  /** The validated header, with its exact text. */
  readonly header: SafetensorsHeader;
  /** File size in bytes. */
  readonly size: number;
}

/** Validates the header of `source`; the reader owns `source` from here on (close() closes it). */
export async function readSafetensors(source: RandomAccess): Promise<SafetensorsFile> {
  const path = source.label;
  try {
    const first8 = await source.read(0, Math.min(8, source.size));
    const headerLength = readHeaderLength(path, first8, source.size);
    const header = parseHeader(path, await source.read(8, headerLength), source.size);
    return new SafetensorsFileReader(source, header);
  } catch (err) {
    // Owned from the call on: a refused file is closed here, not left for the garbage collector.
    await source.close();
    throw err;
  }
}

class SafetensorsFileReader implements SafetensorsFile {
  readonly path: string;
  readonly size: number;
  readonly tensors: readonly Omit<TensorInfo, "file">[];
  readonly metadata: Record<string, string> | null;
  readonly #byName: Map<string, HeaderTensor>;

  constructor(
    private readonly source: RandomAccess,
    readonly header: SafetensorsHeader,
  ) {
    this.path = source.label;
    this.size = source.size;
    this.metadata = header.metadata;
    this.#byName = new Map(header.tensors.map((t) => [t.name, t]));
    this.tensors = header.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.end - t.begin }));
  }

  async *readTensor(name: string, range: ReadRange = {}): AsyncIterable<Uint8Array> {
    const t = this.#byName.get(name);
    if (t === undefined) throw new SafetensorsError("tensor-not-in-file", this.path, "is not in this file", name);
    const length = t.end - t.begin;
    const { start, end, chunkBytes } = resolveRange(name, length, range, CHUNK_BYTES);
    // element-aligned chunks are friendlier to consumers doing arithmetic
    const elementBytes = dtypeBytes(t.dtype);
    const step = chunkBytes >= elementBytes ? chunkBytes - (chunkBytes % elementBytes) : chunkBytes;
    let position = this.header.dataStart + t.begin + start;
    let remaining = end - start;
    while (remaining > 0) {
      const n = Math.min(step, remaining);
      let chunk: Uint8Array;
      try {
        chunk = await this.source.read(position, n);
      } catch (err) {
        if (err instanceof TruncatedError) throw new SafetensorsError("truncated", this.path, `data ends at byte ${err.position}, before the tensor's end: the file was truncated`, name, { cause: err });
        throw err;
      }
      yield chunk;
      position += n;
      remaining -= n;
    }
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}
