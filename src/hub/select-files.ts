import { isExtraFile } from "../model/extra-files.js";
import { MANIFEST_FILE, META_FILES, PYTORCH_FILES, isSafetensorsIndexName, isSafetensorsWeightName, isTransformersPytorchName } from "../formats/weight-files.js";

/**
 * Which files of a Hub repo a model needs: the weights of ONE format, the
 * small files that travel with them (config, tokenizer, generation config,
 * custom code), and a delta's manifest and fix-ups. Pure: it sees a listing,
 * never the network.
 */

export interface RepoFile {
  path: string;
  size: number;
}

const isSafetensorsWeight = isSafetensorsWeightName;
const isSafetensorsIndex = isSafetensorsIndexName;
const isPytorchWeight = isTransformersPytorchName;
const isPytorchIndex = (p: string) => p === PYTORCH_FILES.index;

/**
 * The repo paths to download, sorted.
 * - A delta repo (one with delta.json) is ours from top to bottom: every file
 *   but the model card and hidden files.
 * - A model: safetensors weights and index, or, only when a repo has no
 *   safetensors weights, `pytorch_model*.bin` and its index, or, with
 *   neither, Meta's `consolidated.0N.pth` beside `params.json`; plus the files
 *   that travel with a model (the same rule as for local directories).
 *   Only top-level files count: sub-folders hold other variants
 *   (`original/`, `onnx/`, ...).
 */
export function selectModelFiles(listing: readonly RepoFile[]): string[] {
  const all = listing.map((f) => f.path);
  const top = all.filter((p) => !p.includes("/"));
  if (top.includes(MANIFEST_FILE)) {
    return all.filter((p) => p !== "README.md" && !p.split("/").some((part) => part.startsWith("."))).sort();
  }
  const safetensors = top.filter((p) => isSafetensorsWeight(p) || isSafetensorsIndex(p));
  const pytorch = top.filter((p) => isPytorchWeight(p) || isPytorchIndex(p));
  // Meta's original release (params.json + consolidated.0N.pth) is read as its Hugging Face conversion.
  const meta = top.includes(META_FILES.params) && top.includes(META_FILES.first) ? top.filter((p) => META_FILES.part.test(p)) : [];
  const weights = top.some(isSafetensorsWeight) ? safetensors : pytorch.length > 0 ? pytorch : meta;
  return [...new Set([...weights, ...top.filter(isExtraFile), ...(weights.length === 0 ? payloadFolderFiles(all) : [])])].sort();
}

/**
 * XOR releases keep their payload in one sub-folder and only the card and
 * the publisher's script at the top (Open-Assistant's
 * `oasst-sft-6-llama-30b-xor/`, Pygmalion's `xor_encoded_files/`): with no
 * weights at the top level and checkpoint files in exactly one folder, that
 * folder's files are the model's. (Other layouts keep their top-level
 * weights, so this never adds a variant sub-folder to a normal model.)
 */
function payloadFolderFiles(all: readonly string[]): string[] {
  const folderOf = (p: string) => p.slice(0, p.lastIndexOf("/"));
  const visible = all.filter((p) => !p.split("/").some((part) => part.startsWith(".")));
  const folders = new Set(visible.filter((p) => p.includes("/") && /\.(bin|safetensors)$/.test(p)).map(folderOf));
  if (folders.size !== 1) return [];
  const folder = [...folders][0]!;
  return visible.filter((p) => folderOf(p) === folder && p.slice(folder.length + 1).toLowerCase() !== "readme.md");
}

/**
 * A delta repo's files: all of them but the model card and hidden files. A
 * delta's convention decides which of its files matter (XOR payloads of
 * every file, .enc files, a manifest's whole list), so none is left behind.
 */
export function selectDeltaFiles(listing: readonly RepoFile[]): string[] {
  return listing.map((f) => f.path).filter((p) => p !== "README.md" && !p.split("/").some((part) => part.startsWith("."))).sort();
}

/** Why a repo path (from the server, so untrusted) must not be joined onto the cache, or undefined. */
export function repoPathProblem(path: string): string | undefined {
  if (path.length === 0 || path.length > 1024) return "has a bad length";
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (path.startsWith("/") || path.includes("\\") || /[\x00-\x1f]/.test(path)) return "is not a relative repo path";
  if (path.split("/").some((part) => part === "" || part === "." || part === "..")) return "has an empty, '.' or '..' part";
  return undefined;
}
