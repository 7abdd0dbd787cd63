/**
 * How a model is split into shard files, and the index that maps tensors to
 * them, as Hugging Face tools do it.
 */
import { MAX_TENSORS_PER_FILE } from "../limits.js";
import { compareCodePoints } from "../text.js";
import { SAFETENSORS_FILES } from "./weight-files.js";

export interface ShardPlan {
  /** Shard file names in order. */
  files: string[];
  /** Tensor name -> shard file. */
  assignment: Map<string, string>;
}

export const SINGLE_FILE_NAME = SAFETENSORS_FILES.single;

/**
 * Splits tensors, in the given order, into shards of at most `maxShardBytes`
 * with the semantics of huggingface_hub `split_state_dict_into_shards_factory`
 * (used by `split_torch_state_dict_into_shards` and transformers'
 * `save_pretrained`): tensors are taken in order and a shard is closed when
 * the next tensor would tip it over the limit; a tensor larger than the limit
 * gets a shard of its own, inserted before the shard being filled (which
 * stays open). No optimisation: [6, 6, 2, 6, 2, 2] with a limit of 10 gives
 * [6], [6+2], [6+2+2]. One shard is named `model.safetensors`; several are
 * `model-00001-of-0000N.safetensors`. Without a limit, everything goes in one
 * file. Either way a shard is also closed at MAX_TENSORS_PER_FILE tensors,
 * the most a file we write may hold.
 */
export function planShards(tensors: readonly { name: string; byteLength: number }[], maxShardBytes: number | undefined): ShardPlan {
  const shards: string[][] = [];
  let current: string[] = [];
  let currentSize = 0;
  for (const t of tensors) {
    if (maxShardBytes !== undefined && t.byteLength > maxShardBytes) {
      shards.push([t.name]);
      continue;
    }
    // The writer refuses a file of more than MAX_TENSORS_PER_FILE tensors (and so does every reader of ours).
    if ((maxShardBytes !== undefined && currentSize + t.byteLength > maxShardBytes) || current.length >= MAX_TENSORS_PER_FILE) {
      shards.push(current);
      current = [];
      currentSize = 0;
    }
    current.push(t.name);
    currentSize += t.byteLength;
  }
  if (current.length > 0) shards.push(current);

  if (shards.length <= 1) {
    return { files: [SINGLE_FILE_NAME], assignment: new Map(tensors.map((t) => [t.name, SINGLE_FILE_NAME])) };
  }
  const count = shards.length;
  const files = shards.map((_, i) => shardFileName(i + 1, count));
  const assignment = new Map<string, string>();
  shards.forEach((names, i) => {
    for (const name of names) assignment.set(name, files[i] as string);
  });
  return { files, assignment };
}

/** `model-00001-of-00003.safetensors` */
export function shardFileName(index: number, count: number): string {
  return `model-${String(index).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.safetensors`;
}

/**
 * model.safetensors.index.json exactly as transformers' `save_pretrained`
 * writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"` with
 * index = {"metadata": {"total_size": N}, "weight_map": {...}}. (The bare
 * huggingface_hub helpers write `json.dump(index, indent=2)` without sorting
 * or newline; transformers' format is the one most Hub models carry, and the
 * one the real tiny-llama index in our test data matches byte for byte.)
 */
export function formatIndex(totalSize: number, weightMap: ReadonlyMap<string, string>): string {
  const keys = [...weightMap.keys()].sort(compareCodePoints);
  const lines = keys.map((k) => `    ${pythonJsonString(k)}: ${pythonJsonString(weightMap.get(k) as string)}`);
  const weightMapText = lines.length === 0 ? "{}" : `{\n${lines.join(",\n")}\n  }`;
  return `{\n  "metadata": {\n    "total_size": ${totalSize}\n  },\n  "weight_map": ${weightMapText}\n}\n`;
}

/** Python's `json.dumps` string with the default ensure_ascii=True: everything outside printable ASCII as \uXXXX. */
export function pythonJsonString(value: string): string {
  let out = '"';
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += "\\\\";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c === 0x08) out += "\\b";
    else if (c === 0x0c) out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += value[i];
  }
  return out + '"';
}
