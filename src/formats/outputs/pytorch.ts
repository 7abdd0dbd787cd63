/** PyTorch output: checkpoints byte-identical to torch.save (1.13) of the same flat state dict; see pytorch/writer.ts. */
import { PytorchWriter } from "../../pytorch/writer.js";
import type { TensorFileFormat } from "../output-format.js";
import { PYTORCH_FILES, SAFETENSORS_FILES, isCheckpointName } from "../weight-files.js";

export interface PytorchOutput extends TensorFileFormat<"pytorch"> {
  readonly singleFile: string;
}

export const PYTORCH_OUTPUT: PytorchOutput = {
  kind: "tensor files",
  name: "pytorch",
  title: "PyTorch",
  indexFile: PYTORCH_FILES.index,
  singleFile: PYTORCH_FILES.single,
  claimsFile: isCheckpointName,
  /** save_pretrained's PyTorch name (`model-00001-of-00002.safetensors` -> `pytorch_model-00001-of-00002.bin`). */
  shardName(canonical) {
    if (canonical === SAFETENSORS_FILES.single) return PYTORCH_FILES.single;
    const shard = SAFETENSORS_FILES.shard.exec(canonical);
    return shard === null ? canonical.replace(/\.safetensors$/i, ".bin") : `pytorch_model-${shard[1]}.bin`;
  },
  accepts: ["maxShardBytes", "byteorderRecord"],
  // A checkpoint is a pickled dict of tensors: no place for metadata (transformers' own PyTorch shards carry none).
  carriesMetadata: false,
  /** A checkpoint of a plain dict of these tensors in this (state-dict) order; its archive is named after `label`'s file name, as torch.save names it. */
  create: (sink, label, tensors, options) => new PytorchWriter(sink, label, tensors, { container: "dict", byteorderRecord: options?.byteorderRecord === true }),
};
