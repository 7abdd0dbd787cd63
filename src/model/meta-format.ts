/** Meta's layout output: consolidated.NN.pth per rank, params.json and the tokenizer, as Chinese-LLaMA-Alpaca's merge script writes them; see meta-output.ts. */
import { createReadStream } from "node:fs";
import { dtypeBytes } from "../dtypes.js";
import { UsageError } from "../errors.js";
import type { ByteSink } from "../formats/output-format.js";
import type { ModelFileFormat, PreparedOutputFile } from "./model-file-format.js";
import { checkMetaConfig, metaRankSize, prepareMetaOutput, writeMetaRank } from "./meta-output.js";

/** A companion file copied as it is. */
async function copyFile(path: string, sink: ByteSink): Promise<void> {
  for await (const chunk of createReadStream(path)) await sink.write(chunk as Uint8Array);
}

export const META_OUTPUT: ModelFileFormat<"meta"> = {
  kind: "model file",
  name: "meta",
  title: "Meta's LLaMA layout",
  // A directory, not a file: no extension asks for it.
  claimsFile: () => false,
  fileNameFor: (modelName) => modelName,
  accepts: ["numShards"],
  directory: true,
  checkCompanions: (dirs, label, options) => checkMetaConfig(dirs, label, options?.numShards),
  async prepare(model, options) {
    const plan = await prepareMetaOutput(model, options);
    const params = new TextEncoder().encode(plan.paramsJson);
    const files: PreparedOutputFile[] = [
      ...plan.files.map((file): PreparedOutputFile => ({ name: file.name, write: (sink, label, onProgress) => writeMetaRank(model, file, sink, label, onProgress) })),
      { name: "params.json", write: (sink) => sink.write(params) },
      ...plan.companions.map((name): PreparedOutputFile => ({ name, write: async (sink) => copyFile(await model.files.whole(name), sink) })),
    ];
    const tensorBytes = plan.files.reduce((sum, f) => sum + f.tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * dtypeBytes(t.dtype), 0), 0);
    const fileSize = plan.files.reduce((sum, f) => sum + metaRankSize(f, f.name), 0) + params.length;
    return {
      fileSize,
      tensors: plan.files.reduce((n, f) => n + f.tensors.length, 0),
      sourceBytes: tensorBytes,
      headerBytes: fileSize - tensorBytes,
      write: async () => {
        throw new UsageError("Meta's layout is a directory of files, not one file: convert writes its files one by one");
      },
      files,
    };
  },
};
