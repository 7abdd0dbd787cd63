import { join } from "node:path";
import { readFile } from "node:fs/promises";
import { ioError } from "../errors.js";
import { formatIndex } from "../model/shard-plan.js";
import type { ModelSource } from "../model/types.js";
import { encodeHeader, parseHeaderJson, type HeaderTensor } from "../safetensors/header.js";
import { openSafetensorsFile } from "../safetensors/reader.js";

/**
 * The safetensors files a model is (or, for a PyTorch model, becomes): each
 * file's exact header text and its tensors in data order. A recovered target
 * is written from exactly these, so it is the publisher's byte for byte.
 */
export interface OutputFile {
  file: string;
  headerText: string;
  /** In data-offset order. */
  tensors: HeaderTensor[];
  /** Header prefix + text + data. */
  size: number;
}

export interface OutputLayout {
  files: OutputFile[];
  index?: { file: string; text: string };
}

export const OUTPUT_INDEX = "model.safetensors.index.json";

export async function layoutOf(model: ModelSource): Promise<OutputLayout> {
  if (model.format === "safetensors") {
    const files: OutputFile[] = [];
    for (const rel of model.weightFiles) {
      const f = await openSafetensorsFile(join(model.root, rel));
      try {
        files.push({ file: rel, headerText: f.header.text, tensors: f.header.tensors, size: f.size });
      } finally {
        await f.close();
      }
    }
    let index: OutputLayout["index"];
    if (model.indexFile !== undefined) {
      const path = join(model.root, model.indexFile);
      try {
        index = { file: model.indexFile, text: await readFile(path, "utf8") };
      } catch (err) {
        throw ioError("read", path, err);
      }
    }
    return { files, index };
  }
  return convertedLayout(model);
}

/**
 * A PyTorch model becomes safetensors shards named as transformers names
 * them (pytorch_model-00001-of-00002.bin -> model-00001-of-00002.safetensors),
 * one per .bin file, with `{"format":"pt"}` metadata as save_pretrained writes.
 */
export function convertedLayout(model: ModelSource): OutputLayout {
  const byFile = new Map<string, { name: string; dtype: HeaderTensor["dtype"]; shape: number[] }[]>();
  for (const t of model.tensors.values()) {
    const list = byFile.get(t.file) ?? [];
    list.push({ name: t.name, dtype: t.dtype, shape: t.shape });
    byFile.set(t.file, list);
  }
  const files: OutputFile[] = [];
  const weightMap = new Map<string, string>();
  let totalSize = 0;
  for (const rel of model.weightFiles) {
    const name = safetensorsNameFor(rel);
    const { bytes, tensors } = encodeHeader(byFile.get(rel) ?? [], { format: "pt" });
    const text = new TextDecoder().decode(bytes.subarray(8));
    const header = parseHeaderJson(name, bytes.subarray(8));
    const dataBytes = tensors.length === 0 ? 0 : tensors[tensors.length - 1]!.end;
    files.push({ file: name, headerText: text, tensors: header.tensors, size: bytes.length + dataBytes });
    for (const t of tensors) weightMap.set(t.name, name);
    totalSize += dataBytes;
  }
  const index = files.length > 1 ? { file: OUTPUT_INDEX, text: formatIndex(totalSize, weightMap) } : undefined;
  return { files, index };
}

export function safetensorsNameFor(weightFile: string): string {
  const base = weightFile.split("/").pop() ?? weightFile;
  if (base === "pytorch_model.bin") return "model.safetensors";
  const shard = /^pytorch_model-(\d+-of-\d+)\.bin$/.exec(base);
  if (shard !== null) return `model-${shard[1]}.safetensors`;
  return base.replace(/\.(bin|pt|pth|safetensors)$/i, "") + ".safetensors";
}
