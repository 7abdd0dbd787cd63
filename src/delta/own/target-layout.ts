import { join } from "node:path";
import { convertedLayout, type OutputLayout } from "../../formats/output-layout.js";
import { openSafetensorsFile } from "../../formats/registry.js";
import { readSmallFile } from "../../io/files.js";
import { MAX_INDEX_BYTES } from "../../limits.js";
import type { ModelSource } from "../../model/types.js";

/**
 * The safetensors files a target model is (or, for a PyTorch model,
 * becomes): a safetensors model keeps its own files, headers and index
 * exactly, so a recovered target is the publisher's byte for byte.
 */
export async function layoutOf(model: ModelSource): Promise<OutputLayout> {
  if (model.format !== "safetensors") return convertedLayout(model.weightFiles, model.tensors.values());
  const files: OutputLayout["files"] = [];
  for (const rel of model.weightFiles) {
    const f = await openSafetensorsFile(join(model.root, rel));
    try {
      files.push({ file: rel, headerText: f.header.text, tensors: f.header.tensors, size: f.size });
    } finally {
      await f.close();
    }
  }
  const index = model.indexFile === undefined
    ? undefined
    : { file: model.indexFile, text: await readSmallFile(join(model.root, model.indexFile), MAX_INDEX_BYTES, "an index", "E_MODEL") };
  return { files, index };
}
