/**
 * Reads a safetensors file with positioned reads: the header is read and
 * validated in full on open; tensor bytes are then served as bounded chunks,
 * never a whole tensor in memory.
 */
import { open, type FileHandle } from "node:fs/promises";
import { SafetensorsError, ioError } from "../errors.js";
import { CHUNK_BYTES } from "../limits.js";
import type { TensorInfo, WeightFile } from "../model/types.js";
import { dtypeBytes } from "../dtypes.js";
import { parseHeader, readHeaderLength, type HeaderTensor, type SafetensorsHeader } from "./header.js";

export interface ReadRange {
  /** First byte of the tensor to read (default 0). */
  start?: number;
  /** One past the last byte (default: the tensor's length). */
  end?: number;
  /** Largest chunk yielded (default CHUNK_BYTES). */
  chunkBytes?: number;
}

export interface SafetensorsFile extends WeightFile {
  /** The validated header, with its exact text. */
  readonly header: SafetensorsHeader;
  /** File size in bytes. */
  readonly size: number;
  /** Where a tensor's bytes lie, relative to the data section. */
  entry(name: string): HeaderTensor | undefined;
}

export async function openSafetensorsFile(path: string): Promise<SafetensorsFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw ioError("open", path, err);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new SafetensorsError(path, "is not a regular file");
    const size = stat.size;
    const first8 = await readExactly(handle, path, 0, Math.min(8, size));
    const headerLength = readHeaderLength(path, first8, size);
    const headerJson = await readExactly(handle, path, 8, headerLength);
    const header = parseHeader(path, headerJson, size);
    return new SafetensorsFileReader(path, handle, size, header);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

async function readExactly(handle: FileHandle, path: string, position: number, length: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(buffer, done, length - done, position + done));
    } catch (err) {
      throw ioError("read", path, err);
    }
    if (bytesRead === 0) throw new SafetensorsError(path, `file ended at byte ${position + done} while reading the header (truncated?)`);
    done += bytesRead;
  }
  return buffer;
}

class SafetensorsFileReader implements SafetensorsFile {
  readonly tensors: readonly Omit<TensorInfo, "file">[];
  readonly metadata: Record<string, string> | null;
  readonly #byName: Map<string, HeaderTensor>;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
    readonly header: SafetensorsHeader,
  ) {
    this.metadata = header.metadata;
    this.#byName = new Map(header.tensors.map((t) => [t.name, t]));
    this.tensors = header.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.end - t.begin }));
  }

  entry(name: string): HeaderTensor | undefined {
    return this.#byName.get(name);
  }

  async *readTensor(name: string, options: ReadRange = {}): AsyncIterable<Uint8Array> {
    const t = this.#byName.get(name);
    if (t === undefined) throw new SafetensorsError(this.path, "is not in this file", name);
    const length = t.end - t.begin;
    const start = options.start ?? 0;
    const end = options.end ?? length;
    const chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > length) {
      throw new RangeError(`byte range [${start}, ${end}) is outside tensor "${name}" (${length} bytes)`);
    }
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
    // element-aligned chunks are friendlier to consumers doing arithmetic
    const elementBytes = dtypeBytes(t.dtype);
    const step = chunkBytes >= elementBytes ? chunkBytes - (chunkBytes % elementBytes) : chunkBytes;
    let position = this.header.dataStart + t.begin + start;
    let remaining = end - start;
    while (remaining > 0) {
      const n = Math.min(step, remaining);
      const chunk = new Uint8Array(n);
      let done = 0;
      while (done < n) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await this.handle.read(chunk, done, n - done, position + done));
        } catch (err) {
          throw ioError("read", this.path, err);
        }
        if (bytesRead === 0) {
          throw new SafetensorsError(this.path, `data ends at byte ${position + done}, before the tensor's end: the file was truncated`, name);
        }
        done += bytesRead;
      }
      position += n;
      remaining -= n;
      yield chunk;
    }
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}
