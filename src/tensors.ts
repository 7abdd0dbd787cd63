import type { DType } from "./dtypes.js";

/**
 * The shared vocabulary of every layer that reads tensors: format readers
 * produce these, models compose them, deltas consume them. Types only.
 */

/** One tensor of a model, wherever and however it is stored. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** numel x dtype size: the tensor's bytes when laid out contiguously, row-major, little-endian. */
  byteLength: number;
  /** Path of the weight file holding it, relative to the model's root directory. */
  file: string;
}

/** A byte range of a tensor and the largest chunk to serve it in. */
export interface ReadRange {
  /** First byte of the tensor to read (default 0). */
  start?: number;
  /** One past the last byte (default: the tensor's length). */
  end?: number;
  /** Largest chunk yielded (default CHUNK_BYTES). */
  chunkBytes?: number;
}

/**
 * One weight file, opened and validated, format-specific reader behind a
 * common face. `openModel` composes these into a model and checks the index
 * against them.
 */
export interface WeightFile {
  /** Path as shown in messages. */
  readonly path: string;
  /** Tensors in the file's own order (data-offset order for safetensors, state-dict order for PyTorch). */
  readonly tensors: readonly Omit<TensorInfo, "file">[];
  /** safetensors `__metadata__` (null when absent or not safetensors). */
  readonly metadata: Record<string, string> | null;
  /**
   * The tensor's contiguous little-endian bytes [start, end) (default: all),
   * as chunks of at most `chunkBytes`, in order. The consumer owns each buffer.
   */
  readTensor(name: string, range?: ReadRange): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

/**
 * Bytes that can be read at any position: a file, or one still arriving.
 * Format readers take one of these and never touch the file system.
 */
export interface RandomAccess {
  /** Path or name, for messages. */
  readonly label: string;
  readonly size: number;
  /** Exactly `length` bytes at `position`; a range past the end is an error, never a short read. */
  read(position: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** A tensor read's [start, end) and chunk size, checked against the tensor's `length` in bytes. */
export function resolveRange(name: string, length: number, range: ReadRange, defaultChunkBytes: number): { start: number; end: number; chunkBytes: number } {
  const start = range.start ?? 0;
  const end = range.end ?? length;
  const chunkBytes = range.chunkBytes ?? defaultChunkBytes;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > length) {
    throw new RangeError(`byte range [${start}, ${end}) is outside tensor "${name}" (${length} bytes)`);
  }
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  return { start, end, chunkBytes };
}

/** Where a written file's bytes go, in order (an AtomicFile, usually): every format writer streams into one. */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<void>;
  /** Room for the next `length` bytes, for a producer to fill in place; see AtomicFile.reserve. */
  reserve?(length: number): Uint8Array[] | undefined;
  /** Hands over filled reserved bytes, in the order reserved; see AtomicFile.writeReserved. */
  writeReserved?(views: readonly Uint8Array[]): Promise<void>;
}
