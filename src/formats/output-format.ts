/**
 * The output side of the format seam, its generic part: what every format
 * that writes a model's tensors to files offers (create a file of these
 * tensors; the file is then written tensor by tensor, in the order it
 * lists). The formats themselves are modules under `outputs/` (files of
 * tensors: safetensors, PyTorch) and `model/gguf-format.ts` (one file for
 * the whole model: GGUF), listed once in `model/output-formats.ts`.
 */
import type { DType } from "../dtypes.js";
import type { Outtype } from "../gguf/llama.js";
import type { MetadataInput } from "../safetensors/header.js";
import type { ByteSink } from "../tensors.js";

/** A tensor as a file being created declares it. */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** A tensor placed in a file: its bytes' range [begin, end) counted from the start of the file's tensor data. */
export interface PlacedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

export type { ByteSink } from "../tensors.js";

/** A file being written tensor by tensor, in the order `tensors` lists. */
export interface TensorFileWriter {
  /** Tensors in the order their bytes must be written. */
  readonly tensors: readonly PlacedTensor[];
  /** Total file size once complete. */
  readonly fileSize: number;
  /**
   * Writes the tensor's bytes. A writer is done with a chunk once it asks for
   * the next (its write and hashes awaited): callers give chunks back to the
   * chunk pool then (io/chunk-pool.ts), so a writer must copy what it keeps.
   */
  writeTensor(name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void>;
  /** Checks that every tensor was written (and writes the header of an empty file). */
  finish(): Promise<void>;
}

/**
 * What an output may be asked for beyond its tensors. Each format lists the
 * ones it takes (`accepts`); one given to a format that does not take it is
 * refused, never ignored.
 */
export interface OutputOptions {
  /** Largest shard in bytes (formats that write shards, into a directory). */
  maxShardBytes?: number;
  /** PyTorch: the `byteorder` record torch >= 2.1 writes. */
  byteorderRecord?: boolean;
  /** GGUF: the tensor type, as llama.cpp's converter names it. */
  outtype?: Outtype;
  /** The model's name, for formats that record one (GGUF's general.name). */
  modelName?: string;
  /** Meta's layout: how many model-parallel ranks (consolidated.NN.pth files). */
  numShards?: number;
}

export type OutputOption = keyof OutputOptions;

/** The command-line flag of each option, for refusals. */
export const OUTPUT_OPTION_FLAGS: Readonly<Record<OutputOption, string>> = {
  maxShardBytes: "--max-shard-size",
  byteorderRecord: "--byteorder-record",
  outtype: "--outtype",
  modelName: "a model name",
  numShards: "--num-shards",
};

/** What a file of a tensor-file format is created with besides its tensors. */
export interface TensorFileOptions {
  /** safetensors `__metadata__` (formats that carry metadata only; see `carriesMetadata`). */
  metadata?: MetadataInput;
  byteorderRecord?: boolean;
}

/**
 * A format whose files hold tensors one after another, a model being one
 * file or shards with transformers' index beside them. Shards are planned
 * under safetensors' names (`model-00001-of-00002.safetensors`) and each
 * format names its own files from those.
 */
export interface TensorFileFormat<Name extends string = string> {
  readonly kind: "tensor files";
  readonly name: Name;
  /** For messages: "PyTorch". */
  readonly title: string;
  /** The index transformers writes beside a sharded model's files. */
  readonly indexFile: string;
  /** Whether OUT, a file name, asks for this format (by its extension). */
  claimsFile(name: string): boolean;
  /** The name save_pretrained gives, in this format, the shard it names `canonical` in safetensors. */
  shardName(canonical: string): string;
  /** The options it takes. */
  readonly accepts: readonly OutputOption[];
  /** Whether its files carry `__metadata__` (the source's, or transformers' `{"format":"pt"}`). */
  readonly carriesMetadata: boolean;
  /** A file of these tensors, laid out as the format's reference serializer lays it out. */
  create(sink: ByteSink, label: string, tensors: readonly TensorSpec[], options?: TensorFileOptions): TensorFileWriter;
}
