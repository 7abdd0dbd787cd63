import type { DType } from "../dtypes.js";
import type { PlacedTensor } from "./output-format.js";
import { SAFETENSORS_OUTPUT } from "./outputs/safetensors.js";
import { formatIndex } from "./shard-plan.js";

/**
 * The safetensors files a model's tensors become: each file's exact header text
 * and its tensors in data order, plus the index when there are several.
 * Outputs are written from exactly these, so their bytes are known before
 * the first one is written.
 */
export interface OutputFile {
  file: string;
  headerText: string;
  /** In data-offset order. */
  tensors: PlacedTensor[];
  /** Header prefix + text + data. */
  size: number;
}

export interface OutputLayout {
  files: OutputFile[];
  index?: { file: string; text: string };
}

/**
 * One output file per source weight file, named as transformers names them
 * (pytorch_model-00001-of-00002.bin -> model-00001-of-00002.safetensors),
 * laid out by our serializer with `{"format":"pt"}` metadata as
 * save_pretrained writes; the index, when there are several files, as
 * transformers writes it.
 */
export function convertedLayout(weightFiles: readonly string[], tensors: Iterable<{ name: string; dtype: DType; shape: number[]; file: string }>): OutputLayout {
  const byFile = new Map<string, { name: string; dtype: DType; shape: number[] }[]>();
  for (const t of tensors) {
    const list = byFile.get(t.file) ?? [];
    list.push({ name: t.name, dtype: t.dtype, shape: t.shape });
    byFile.set(t.file, list);
  }
  const files: OutputFile[] = [];
  const weightMap = new Map<string, string>();
  let totalSize = 0;
  for (const rel of weightFiles) {
    const name = SAFETENSORS_OUTPUT.fileNameFor(rel);
    const layout = SAFETENSORS_OUTPUT.layout(name, byFile.get(rel) ?? [], { format: "pt" });
    files.push({ file: name, ...layout });
    for (const t of layout.tensors) weightMap.set(t.name, name);
    totalSize += layout.tensors.length === 0 ? 0 : layout.tensors[layout.tensors.length - 1]!.end;
  }
  const index = files.length > 1 ? { file: SAFETENSORS_OUTPUT.indexFile, text: formatIndex(totalSize, weightMap) } : undefined;
  return { files, index };
}
