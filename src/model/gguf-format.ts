/** GGUF output: one file llama.cpp loads, as its converter writes it; see gguf-output.ts. */
import { checkGgufCompanions, ggufModelName, planGguf, writeGguf } from "./gguf-output.js";
import type { ModelFileFormat } from "./model-file-format.js";
import { q8Worker } from "../gguf/q8-worker.js";

export const GGUF_OUTPUT: ModelFileFormat<"gguf"> = {
  kind: "model file",
  name: "gguf",
  title: "GGUF",
  claimsFile: (name) => name.toLowerCase().endsWith(".gguf"),
  fileNameFor: (modelName) => `${modelName}.gguf`,
  accepts: ["outtype", "modelName"],
  checkCompanions: checkGgufCompanions,
  warmUp(options) {
    if (options.outtype === "q8_0") q8Worker.start();
  },
  async prepare(model, options) {
    const { plan, layout } = await planGguf(model, options.modelName ?? ggufModelName(model), options.outtype);
    return {
      fileSize: layout.fileSize,
      tensors: plan.tensors.length,
      sourceBytes: plan.tensors.reduce((sum, t) => sum + (model.tensors.get(t.source)?.byteLength ?? 0), 0),
      headerBytes: layout.header.length,
      outtype: plan.outtype,
      write: (sink, label, onProgress) => writeGguf(model, plan, layout, sink, label, onProgress),
    };
  },
};
