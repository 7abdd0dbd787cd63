/**
 * safetensors output: the format Hugging Face loads first and the only one
 * we reproduce byte for byte. Besides what every tensor-file format offers,
 * it has two capabilities of its own, asked for by name: files with exactly
 * a given header text (`verbatim`, how a recovered model is the
 * publisher's own files), and the layout of a file before it is written
 * (`layout`, how make-delta records the files it will write).
 */
import { encodeHeader, parseHeaderJson, type MetadataInput } from "../../safetensors/header.js";
import { SafetensorsWriter } from "../../safetensors/writer.js";
import type { ByteSink, PlacedTensor, TensorFileFormat, TensorFileWriter, TensorSpec } from "../output-format.js";
import { PYTORCH_FILES, SAFETENSORS_FILES, isSafetensorsName } from "../weight-files.js";

/** A file's layout: its exact header text, its tensors in data order, and its size. */
export interface SafetensorsLayout {
  headerText: string;
  tensors: PlacedTensor[];
  size: number;
}

export interface SafetensorsOutput extends TensorFileFormat<"safetensors"> {
  readonly singleFile: string;
  /** The name an output file gets for a source weight file (`pytorch_model-00001-of-00002.bin` -> `model-00001-of-00002.safetensors`). */
  fileNameFor(sourceWeightFile: string): string;
  /** A file with exactly this header text (a publisher's), validated first; its header bytes are known before they are written. */
  verbatim(sink: ByteSink, label: string, headerText: string): TensorFileWriter & { readonly headerBytes: Uint8Array };
  /** The file `create` writes for these tensors and metadata, without writing it. */
  layout(label: string, tensors: readonly TensorSpec[], metadata?: MetadataInput): SafetensorsLayout;
}

export const SAFETENSORS_OUTPUT: SafetensorsOutput = {
  kind: "tensor files",
  name: "safetensors",
  title: "safetensors",
  indexFile: SAFETENSORS_FILES.index,
  singleFile: SAFETENSORS_FILES.single,
  claimsFile: isSafetensorsName,
  shardName: (canonical) => canonical,
  accepts: ["maxShardBytes"],
  carriesMetadata: true,
  fileNameFor(weightFile) {
    const base = weightFile.split("/").pop() ?? weightFile;
    if (base === PYTORCH_FILES.single) return SAFETENSORS_FILES.single;
    const shard = PYTORCH_FILES.shard.exec(base);
    if (shard !== null) return `model-${shard[1]}.safetensors`;
    return base.replace(/\.(bin|pt|pth|safetensors)$/i, "") + ".safetensors";
  },
  create: (sink, label, tensors, options) => SafetensorsWriter.create(sink, label, tensors, options?.metadata),
  verbatim: (sink, label, headerText) => SafetensorsWriter.verbatim(sink, label, headerText),
  layout(label, tensors, metadata) {
    const { bytes, tensors: placed } = encodeHeader(tensors, metadata);
    const header = parseHeaderJson(label, bytes.subarray(8));
    const dataBytes = placed.length === 0 ? 0 : placed[placed.length - 1]!.end;
    return { headerText: new TextDecoder().decode(bytes.subarray(8)), tensors: header.tensors, size: bytes.length + dataBytes };
  },
};
