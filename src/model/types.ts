import type { DType } from "../dtypes.js";

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

/**
 * A model, read-only, whatever its format: a safetensors file, a directory
 * (single or sharded, safetensors or PyTorch .bin), or a Hub snapshot.
 * Memory is bounded: tensor bytes are only ever served as chunks.
 */
export interface ModelSource {
  /** What the user named (path or repo id), for messages and delta.json. */
  readonly source: string;
  /** Local root directory (the file's directory for a single file). */
  readonly root: string;
  /** "safetensors" or "pytorch". */
  readonly format: "safetensors" | "pytorch";
  /** Every tensor, in a stable order (file order for safetensors). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Weight files, relative to root, in shard order. */
  readonly weightFiles: readonly string[];
  /** The index file (model.safetensors.index.json / pytorch_model.bin.index.json), relative to root, if any. */
  readonly indexFile?: string;
  /** Non-weight files that travel with the model (config, tokenizer, ...), relative to root. */
  readonly extraFiles: readonly string[];
  /** safetensors `__metadata__` per weight file (empty for PyTorch). */
  readonly metadata: ReadonlyMap<string, Record<string, string>>;
  /**
   * The tensor's contiguous little-endian bytes [start, end) (default: all),
   * as chunks of at most `chunkBytes` (default CHUNK_BYTES), in order.
   * The consumer owns each yielded buffer.
   */
  readTensor(name: string, options?: { start?: number; end?: number; chunkBytes?: number }): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

/**
 * One weight file, opened and validated, format-specific reader behind a
 * common face. `openModel` composes these into a ModelSource and checks
 * the index against them.
 */
export interface WeightFile {
  /** Path as shown in messages. */
  readonly path: string;
  /** Tensors in the file's own order (data-offset order for safetensors). */
  readonly tensors: readonly Omit<TensorInfo, "file">[];
  /** safetensors `__metadata__` (null when absent or not safetensors). */
  readonly metadata: Record<string, string> | null;
  readTensor(name: string, options?: { start?: number; end?: number; chunkBytes?: number }): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}
