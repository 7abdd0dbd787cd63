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

/** Weight formats we never read: downloading them would waste gigabytes. */
const OTHER_WEIGHT_SUFFIXES = [
  ".bin", ".pt", ".pth", ".ckpt", ".h5", ".keras", ".msgpack", ".onnx", ".onnx_data", ".gguf", ".ggml",
  ".ot", ".tflite", ".mlmodel", ".pb", ".npz", ".pkl", ".pickle", ".joblib", ".safetensors",
];
const MEDIA_SUFFIXES = [".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".mp4", ".pdf"];

/** Files of a delta that are needed even though they look like weights. */
const DELTA_FILES = new Set(["delta.json", "delta-fixups.safetensors"]);

const isSafetensorsWeight = (p: string) => p.endsWith(".safetensors") && !DELTA_FILES.has(p);
const isSafetensorsIndex = (p: string) => p.endsWith(".safetensors.index.json");
const isPytorchWeight = (p: string) => /^pytorch_model(-\d+-of-\d+)?\.bin$/.test(p);
const isPytorchIndex = (p: string) => p === "pytorch_model.bin.index.json";

/**
 * The repo paths to download, sorted. Safetensors is preferred; PyTorch
 * `pytorch_model*.bin` is taken only when a repo has no safetensors weights.
 * Only top-level files count (sub-folders hold other variants: `original/`,
 * `onnx/`, ...), except when `files` are named explicitly.
 */
export function selectModelFiles(listing: readonly RepoFile[]): string[] {
  const top = listing.map((f) => f.path).filter((p) => !p.includes("/"));
  const safetensors = top.filter((p) => isSafetensorsWeight(p) || isSafetensorsIndex(p));
  const pytorch = top.filter((p) => isPytorchWeight(p) || isPytorchIndex(p));
  const weights = top.some(isSafetensorsWeight) ? safetensors : pytorch;
  const others = top.filter((p) => isTravellingFile(p) || DELTA_FILES.has(p));
  return [...new Set([...weights, ...others])].sort();
}

/** A non-weight top-level file that lands in the target: config, tokenizer, code, license text. */
function isTravellingFile(path: string): boolean {
  const lower = path.toLowerCase();
  if (path === "README.md" || path.startsWith(".")) return false;
  if (lower.endsWith(".index.json")) return false;
  if (OTHER_WEIGHT_SUFFIXES.some((s) => lower.endsWith(s))) return false;
  if (MEDIA_SUFFIXES.some((s) => lower.endsWith(s))) return false;
  return true;
}

/** Why a repo path (from the server, so untrusted) must not be joined onto the cache, or undefined. */
export function repoPathProblem(path: string): string | undefined {
  if (path.length === 0 || path.length > 1024) return "has a bad length";
  if (path.startsWith("/") || path.includes("\\") || /[\x00-\x1f]/.test(path)) return "is not a relative repo path";
  if (path.split("/").some((part) => part === "" || part === "." || part === "..")) return "has an empty, '.' or '..' part";
  return undefined;
}
