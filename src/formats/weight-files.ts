/**
 * Weight-file names, owned here once: what the Hugging Face layouts and
 * Meta's original release call their files, and the names of our own
 * files that sit beside a delta's weights. The format registry, the hub's
 * file selection, model identification and make-delta all ask this module.
 */

/** Our delta's manifest. */
export const MANIFEST_FILE = "delta.json";
/** Our delta's fix-ups: a safetensors file, but no weights of the model. */
export const FIXUPS_FILE = "delta-fixups.safetensors";
/** Our record of a release's own PyTorch checkpoints. */
export const PYTORCH_CHECKPOINTS_FILE = "pytorch-checkpoints.json";

/** transformers' safetensors names: one file, or shards with an index. */
export const SAFETENSORS_FILES = {
  single: "model.safetensors",
  index: "model.safetensors.index.json",
  /** `model-00001-of-00002.safetensors`; group 1 is `00001-of-00002`. */
  shard: /^model-(\d+-of-\d+)\.safetensors$/,
} as const;

/** transformers' PyTorch names: one checkpoint, or shards with an index. */
export const PYTORCH_FILES = {
  single: "pytorch_model.bin",
  index: "pytorch_model.bin.index.json",
  /** `pytorch_model-00001-of-00002.bin`; group 1 is `00001-of-00002`. */
  shard: /^pytorch_model-(\d+-of-\d+)\.bin$/,
} as const;

/**
 * Meta's original release: `params.json` beside `consolidated.00.pth`,
 * `consolidated.01.pth`, ... Always two digits: Meta's download.sh fetches
 * `seq -f "0%g" 0 $SHARD` (00 to 07 for LLaMA-65B), llama-models and
 * transformers' convert_llama_weights_to_hf.py name them `{i:02d}`.
 */
export const META_FILES = {
  params: "params.json",
  first: "consolidated.00.pth",
  /** Group 1 is the two-digit part number. */
  part: /^consolidated\.(\d{2})\.pth$/,
} as const;

/** The name of model-parallel part `rank` of Meta's release (0 is META_FILES.first). */
export function metaPartName(rank: number): string {
  return `consolidated.${String(rank).padStart(2, "0")}.pth`;
}

/**
 * point-alpaca's encrypted files (also BELLE-LLaMA-*-enc, lawyer-llama):
 * `<name>.<64 hex>.enc`; group 1 is the plain file's name (any characters:
 * the planner refuses unsafe ones by name), group 2 its sha256.
 */
export const ENC_FILE = /^([\s\S]*)\.([0-9a-fA-F]{64})\.enc$/;

/** An encrypted weight file of a point-alpaca-style release, by its name (a repo path's last part). */
export function isEncName(name: string): boolean {
  return ENC_FILE.test(name.slice(name.lastIndexOf("/") + 1));
}

/**
 * Files a release ships beside its model that are not part of it: the model
 * card, the publisher's scripts (xor_codec.py, decrypt.py), licences and
 * checksum lists. They are left out of the output (and said so), never XORed.
 */
export function isReleaseDocument(fileName: string): boolean {
  const lower = fileName.toLowerCase();
  return /\.(md|py|sh|ipynb|chk|md5|sha256)$/.test(lower)
    || /^(licen[cs]e|copying|notice)(\.|$)/.test(lower)
    || /(md5|sha1|sha256)sums?|checksums?/.test(lower);
}

/** A safetensors file, by its extension. */
export function isSafetensorsName(name: string): boolean {
  return name.toLowerCase().endsWith(".safetensors");
}

/** A safetensors file that holds model weights: every one but our fix-ups. */
export function isSafetensorsWeightName(name: string): boolean {
  return isSafetensorsName(name) && name !== FIXUPS_FILE;
}

/** A PyTorch checkpoint, by its extension (.bin, .pt, .pth). */
export function isCheckpointName(name: string): boolean {
  return /\.(bin|pt|pth)$/i.test(name);
}

/** .bin files in model directories that are pickles but not weights. */
const NON_WEIGHT_BINS = new Set(["training_args.bin", "optimizer.bin", "scheduler.bin"]);

/** A .bin file of a model directory that holds weights (not the trainer's state). */
export function isPytorchWeightName(name: string): boolean {
  const lower = name.toLowerCase();
  return lower.endsWith(".bin") && !NON_WEIGHT_BINS.has(lower);
}

/** transformers' PyTorch weight names exactly: `pytorch_model.bin` or its shards. */
export function isTransformersPytorchName(name: string): boolean {
  return name === PYTORCH_FILES.single || PYTORCH_FILES.shard.test(name);
}

/** transformers' safetensors weight names exactly: `model.safetensors` or its shards. */
export function isTransformersSafetensorsName(name: string): boolean {
  return name === SAFETENSORS_FILES.single || SAFETENSORS_FILES.shard.test(name);
}

/** A safetensors model's index (`model.safetensors.index.json`, or another name ending so). */
export function isSafetensorsIndexName(name: string): boolean {
  return name.toLowerCase().endsWith(".safetensors.index.json");
}

/** Weight formats' extensions, ours and others' (TensorFlow, Flax, ONNX, pickles, GGUF, Lightning). */
const WEIGHT_EXTENSIONS = [".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".pkl"];

/** Whether a file (by its name) holds weights of some format, ours or another's. */
export function isWeightFileName(path: string): boolean {
  const lower = path.toLowerCase();
  return WEIGHT_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

/** An index of a sharded model (`*.index.json`). */
export function isIndexName(name: string): boolean {
  return name.toLowerCase().endsWith(".index.json");
}
