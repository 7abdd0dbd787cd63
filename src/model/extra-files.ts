/**
 * Which files of a model directory travel with the model (into a delta, a
 * converted copy, a recovered target): config, tokenizer, generation config,
 * vocabularies, chat templates... everything at the top level except
 * weights, their indexes, our own delta files, the model card and hidden
 * files.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { ModelError, ioError } from "../errors.js";
import { MANIFEST_FILE, isIndexName, isWeightFileName } from "../formats/weight-files.js";

// Weights (of any format) do not travel: ours are rebuilt, the others are not this model's bytes to carry.
export { isWeightFileName };

/** Files that describe a repository or a delta rather than the model. */
const NOT_TRAVELLING = new Set([
  // a model card describes the repo it sits in (the delta gets its own)
  "readme.md",
  // our manifest: made fresh by every make
  MANIFEST_FILE,
]);

/** Whether a top-level file named `name` travels with the model. */
export function isExtraFile(name: string): boolean {
  const lower = name.toLowerCase();
  if (name.startsWith(".")) return false; // .gitattributes, .cache, our .partial temp files
  if (NOT_TRAVELLING.has(lower)) return false;
  if (isIndexName(lower)) return false; // model.safetensors.index.json, pytorch_model.bin.index.json
  if (lower.endsWith(".partial")) return false;
  return !isWeightFileName(lower);
}

/**
 * The regular files (symlinks followed, as in the Hugging Face cache) of
 * `dir` that travel, sorted by name. A companion that is a pipe or a device
 * is refused by name.
 */
export async function listExtraFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw ioError("list", dir, err);
  }
  const extras: string[] = [];
  for (const name of names.sort()) {
    if (!isExtraFile(name)) continue;
    const info = await stat(join(dir, name)).catch(() => undefined);
    if (info?.isFile() === true) extras.push(name);
    // A pipe or device named like a companion would block its copy, or be left out without a word.
    else if (info !== undefined && !info.isDirectory()) throw new ModelError(`${join(dir, name)} is not a regular file (a pipe, socket or device?): refused`);
  }
  return extras;
}
