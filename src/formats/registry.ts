/**
 * The format seam: every weight-file format the tool reads or writes, in one
 * list. A model directory is recognised by asking each input format in turn;
 * outputs are written through an output format. A new format is one entry
 * here plus its reader or writer module (pure: bytes in, bytes out).
 */
import { ModelError } from "../errors.js";
import { openRandomAccessFile } from "../io/random-access-file.js";
import type { DType } from "../dtypes.js";
import type { RandomAccess, WeightFile } from "../tensors.js";
import { readSafetensors, type SafetensorsFile } from "../safetensors/reader.js";
import { SafetensorsWriter, type ByteSink } from "../safetensors/writer.js";
import type { HeaderTensor, MetadataInput } from "../safetensors/header.js";
import { LFS_POINTER_MAX_BYTES, isLfsPointer } from "./lfs-pointer.js";
import { PytorchWriter, type PytorchWriteOptions } from "../pytorch/writer.js";

export type FormatName = "safetensors" | "pytorch";

export interface InputFormat {
  readonly name: FormatName;
  /** The index transformers writes beside the shards of a sharded model. */
  readonly indexFile: string;
  /** The one weight file of an unsharded model. */
  readonly singleFile: string;
  /** Whether a file in a model directory is a weight file of this format. */
  isWeightFile(name: string): boolean;
  /** Whether a file named on its own (by its extension) is of this format. */
  claimsFile(name: string): boolean;
  read(source: RandomAccess): Promise<WeightFile>;
}

/** .bin files in model directories that are pickles but not weights. */
const NON_WEIGHT_BINS = new Set(["training_args.bin", "optimizer.bin", "scheduler.bin"]);

/** Files a delta carries beside its weights that are safetensors files but not weights of the model. */
const NOT_MODEL_WEIGHTS = new Set(["delta-fixups.safetensors"]);

const SAFETENSORS: InputFormat = {
  name: "safetensors",
  indexFile: "model.safetensors.index.json",
  singleFile: "model.safetensors",
  isWeightFile: (name) => name.toLowerCase().endsWith(".safetensors") && !NOT_MODEL_WEIGHTS.has(name),
  claimsFile: (name) => name.toLowerCase().endsWith(".safetensors"),
  read: readSafetensors,
};

const PYTORCH: InputFormat = {
  name: "pytorch",
  indexFile: "pytorch_model.bin.index.json",
  singleFile: "pytorch_model.bin",
  isWeightFile: (name) => name.toLowerCase().endsWith(".bin") && !NON_WEIGHT_BINS.has(name.toLowerCase()),
  claimsFile: (name) => /\.(bin|pt|pth)$/i.test(name),
  // The PyTorch reader (zip, unpickler) is loaded only for PyTorch models.
  read: async (source) => (await import("../pytorch/reader.js")).readPytorch(source),
};

/** In order of preference: safetensors wins when a directory holds both (as transformers chooses). */
export const INPUT_FORMATS: readonly InputFormat[] = [SAFETENSORS, PYTORCH];

/** Opens and validates one weight file of `format`; a Git LFS pointer is named as such. */
export async function openWeightFile(path: string, format: InputFormat): Promise<WeightFile> {
  return readWeightFile(await openRandomAccessFile(path), format);
}

/** Validates the weight file in `source` (owned from here on: closed with the file, or on failure). */
export async function readWeightFile(source: RandomAccess, format: InputFormat): Promise<WeightFile> {
  const path = source.label;
  try {
    if (source.size < LFS_POINTER_MAX_BYTES && isLfsPointer(await source.read(0, source.size))) {
      throw new ModelError(`${path} is a Git LFS pointer, not the file: run git lfs pull (or download the file again)`);
    }
    return await format.read(source);
  } catch (err) {
    await source.close();
    throw err;
  }
}

/** A safetensors file with its header, for callers that need the exact header text. */
export async function openSafetensorsFile(path: string): Promise<SafetensorsFile> {
  return (await openWeightFile(path, SAFETENSORS)) as SafetensorsFile;
}

/** A PyTorch checkpoint file. */
export async function openPytorchFile(path: string): Promise<WeightFile> {
  return openWeightFile(path, PYTORCH);
}

// ---------------------------------------------------------------------------
// Output

/** A file being written tensor by tensor, in the order `tensors` lists. */
export interface TensorFileWriter {
  /** Tensors in the order their bytes must be written, with their byte offsets. */
  readonly tensors: readonly HeaderTensor[];
  /** Total file size once complete. */
  readonly fileSize: number;
  /** The bytes that come before the first tensor's (length prefix and header). */
  readonly headerBytes: Uint8Array;
  writeTensor(name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void>;
  /** Checks that every tensor was written (and writes the header of an empty file). */
  finish(): Promise<void>;
}

export interface OutputFormat {
  readonly name: FormatName;
  readonly indexFile: string;
  /** The name an output file gets for a source weight file (`pytorch_model-00001-of-00002.bin` -> `model-00001-of-00002.safetensors`). */
  fileNameFor(sourceWeightFile: string): string;
  /** A file of these tensors, laid out as the format's reference serializer lays it out. */
  create(sink: ByteSink, label: string, tensors: readonly { name: string; dtype: DType; shape: readonly number[] }[], metadata?: MetadataInput): TensorFileWriter;
  /** A file with exactly this header text (a publisher's), validated first. */
  verbatim(sink: ByteSink, label: string, headerText: string): TensorFileWriter;
}

/** Every output is safetensors: the format Hugging Face loads first and the only one we can reproduce byte for byte. */
export const OUTPUT_FORMAT: OutputFormat = {
  name: "safetensors",
  indexFile: SAFETENSORS.indexFile,
  fileNameFor(weightFile) {
    const base = weightFile.split("/").pop() ?? weightFile;
    if (base === PYTORCH.singleFile) return SAFETENSORS.singleFile;
    const shard = /^pytorch_model-(\d+-of-\d+)\.bin$/.exec(base);
    if (shard !== null) return `model-${shard[1]}.safetensors`;
    return base.replace(/\.(bin|pt|pth|safetensors)$/i, "") + ".safetensors";
  },
  create: (sink, label, tensors, metadata) => SafetensorsWriter.create(sink, label, tensors, metadata),
  verbatim: (sink, label, headerText) => SafetensorsWriter.verbatim(sink, label, headerText),
};

/** PyTorch checkpoints, byte-identical to torch.save (1.13) of the same flat state dict; see pytorch/writer.ts. */
export const PYTORCH_OUTPUT = {
  name: "pytorch" as const,
  indexFile: PYTORCH.indexFile,
  singleFile: PYTORCH.singleFile,
  /** Whether OUT names a checkpoint file (and so asks for this format). */
  claimsFile: (name: string): boolean => /\.(bin|pt|pth)$/i.test(name),
  /** save_pretrained's PyTorch name for a shard laid out under safetensors' names (`model-00001-of-00002.safetensors` -> `pytorch_model-00001-of-00002.bin`). */
  shardNameFor(safetensorsName: string): string {
    if (safetensorsName === SAFETENSORS.singleFile) return PYTORCH.singleFile;
    const shard = /^model-(\d+-of-\d+)\.safetensors$/.exec(safetensorsName);
    return shard === null ? safetensorsName.replace(/\.safetensors$/i, ".bin") : `pytorch_model-${shard[1]}.bin`;
  },
  /** A checkpoint of these tensors in this (state-dict) order; its archive is named after `label`'s file name, as torch.save names it. */
  create: (sink: ByteSink, label: string, tensors: readonly { name: string; dtype: DType; shape: readonly number[] }[], options?: PytorchWriteOptions): PytorchWriter =>
    new PytorchWriter(sink, label, tensors, options),
};

export type { ByteSink };
