/**
 * The input side of the format seam: every weight-file format the tool
 * reads, in one list. A model directory is recognised by asking each input
 * format in turn. A new input format is one entry here plus its reader
 * module (pure: bytes in, bytes out). Outputs: see output-format.ts.
 */
import { ModelError } from "../errors.js";
import { openRandomAccessFile } from "../io/random-access-file.js";
import type { RandomAccess, WeightFile } from "../tensors.js";
import { readSafetensors, type SafetensorsFile } from "../safetensors/reader.js";
import { LFS_POINTER_MAX_BYTES, isLfsPointer } from "./lfs-pointer.js";
import { PYTORCH_FILES, SAFETENSORS_FILES, isCheckpointName, isPytorchWeightName, isSafetensorsName, isSafetensorsWeightName } from "./weight-files.js";

export interface InputFormat<Name extends string = string> {
  readonly name: Name;
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

const SAFETENSORS: InputFormat<"safetensors"> = {
  name: "safetensors",
  indexFile: SAFETENSORS_FILES.index,
  singleFile: SAFETENSORS_FILES.single,
  isWeightFile: isSafetensorsWeightName,
  claimsFile: isSafetensorsName,
  read: readSafetensors,
};

const PYTORCH: InputFormat<"pytorch"> = {
  name: "pytorch",
  indexFile: PYTORCH_FILES.index,
  singleFile: PYTORCH_FILES.single,
  isWeightFile: isPytorchWeightName,
  claimsFile: isCheckpointName,
  // The PyTorch reader (zip, unpickler) is loaded only for PyTorch models.
  read: async (source) => (await import("../pytorch/reader.js")).readPytorch(source),
};

/** In order of preference: safetensors wins when a directory holds both (as transformers chooses). */
export const INPUT_FORMATS = [SAFETENSORS, PYTORCH] as const;

/** The input formats' names ("safetensors", "pytorch"): what ModelSource.format says. */
export type InputFormatName = (typeof INPUT_FORMATS)[number]["name"];

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
