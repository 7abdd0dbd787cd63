import type { InputFormatName } from "../formats/registry.js";
import type { FileSet } from "../io/file-set.js";
import type { ReadRange, TensorInfo } from "../tensors.js";

export type { TensorInfo };

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
  /** The files of that directory (perhaps still downloading): companions are read through it. */
  readonly files: FileSet;
  /** The input format its weight files are in ("safetensors", "pytorch"). */
  readonly format: InputFormatName;
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
  readTensor(name: string, range?: ReadRange): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
  /** The shard size the model's own conversion writes, when it has one (Meta's checkpoints: transformers' 10 GB); `convert` uses it unless told otherwise. */
  readonly convertShardBytes?: number;
  /** How the files are read when they are not a Hugging Face layout ("Meta's original checkpoint, read as ..."), for reports. */
  readonly readAs?: string;
}


/** A local model or delta, and the name it was given by (a repo id for a Hub snapshot). */
export interface LocalSource {
  path: string;
  source: string;
  /** Its files when they are still arriving (a Hub download); absent: the directory at `path`, all there. */
  files?: FileSet;
  /** The Hub repo (`org/name`) these files were fetched from; absent for a path the user gave. The resolver knows, so nobody below guesses from `source`. */
  hub?: { repo: string };
}

/** A plain string is a local path, named as itself. */
export function asLocalSource(src: string | LocalSource): LocalSource {
  return typeof src === "string" ? { path: src, source: src } : src;
}
