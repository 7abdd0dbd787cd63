import { DeltaError } from "../../errors.js";
import { openWeightFiles } from "../../model/open-model.js";
import type { ModelSource } from "../../model/types.js";
import { MAX_SENTENCEPIECE_MODEL_BYTES } from "../../limits.js";
import { HashPool } from "../../hash/hash-pool.js";
import { CHINESE_LLAMA_ALPACA_ADAPTERS, CHINESE_LLAMA_ALPACA_TOKENIZERS } from "./chinese-llama-alpaca-adapters.js";
import { ADAPTER_CONFIG } from "./lora-adapter.js";
import { MERGE_LAYOUT, planMerge, refuseQuantizedBase, withAdapters, type StepPrecision } from "./lora.js";
import { sentencePieceCount } from "./sentencepiece.js";
import type { Convention, DeltaView, Recognition } from "../conventions/types.js";

/**
 * Chinese-LLaMA-Alpaca's merge (ymcui/Chinese-LLaMA-Alpaca at
 * 25dba18cae809ab4aec8cb483c9ec75820e4e96c,
 * scripts/merge_llama_with_chinese_lora_low_mem.py, huggingface output):
 * for each base tensor, for each LoRA in the order given, a whole tensor in
 * the adapter (its grown embed_tokens and lm_head) replaces the base's as
 * float16 (`.half()`), then `W += transpose(B.float() @ A.float(),
 * fan_in_fan_out) * (lora_alpha / r)` in place on the float16 tensor: the
 * float32 update added and rounded once. Its scaling ignores use_rslora and
 * rank patterns (the PEFT it pinned, 13e53fc, had neither). The tokenizer is
 * the last adapter's; each adapter's embedding rows must equal its
 * tokenizer's length, and the tokenizers must not shrink (the script's asserts).
 *
 * The script copies the base's config.json unchanged, whose vocab_size
 * then cannot load the grown embeddings; it is written with the merged
 * vocabulary instead, as the project's regular merge script
 * (save_pretrained of the resized model) writes it.
 */

const EMBEDDING_KEY = "base_model.model.model.embed_tokens.weight";
const TOKENIZER = "tokenizer.model";

/** The script's arithmetic: factors as stored, float32 update not cast (the in-place add rounds it). */
const SCRIPT_PRECISION: StepPrecision = () => ({ factorDType: "F32", deltaDType: "F32" });

async function embeddingRows(view: DeltaView): Promise<number | undefined> {
  const files = await view.files();
  const weights = files.includes("adapter_model.bin") ? "adapter_model.bin" : undefined;
  if (weights === undefined || !files.includes(ADAPTER_CONFIG)) return undefined;
  const model = await openWeightFiles(view.deltaFiles, [weights], "pytorch", view.source);
  try {
    return model.tensors.get(EMBEDDING_KEY)?.shape[0];
  } finally {
    await model.close();
  }
}

/**
 * Which published adapters and tokenizers the user holds, by the SHA-256 the
 * project printed: a note each (an unlisted file is no error: other
 * projects publish adapters of this shape).
 */
async function publishedNotes(views: readonly DeltaView[]): Promise<string[]> {
  const notes: string[] = [];
  const pool = new HashPool(1);
  try {
    for (const view of views) {
      for (const [file, table] of [["adapter_model.bin", CHINESE_LLAMA_ALPACA_ADAPTERS], [TOKENIZER, CHINESE_LLAMA_ALPACA_TOKENIZERS]] as const) {
        const { sha256 } = await pool.hashFile(await view.deltaFiles.whole(file));
        const known = table.get(sha256);
        notes.push(known === undefined
          ? `${view.source}/${file} is none of the files Chinese-LLaMA-Alpaca's SHA256.md lists (sha256 ${sha256.slice(0, 16)}...)`
          : `${view.source}/${file} is ${known}'s, as Chinese-LLaMA-Alpaca's SHA256.md lists it`);
      }
    }
  } finally {
    await pool.close();
  }
  return notes;
}

async function recognize(view: DeltaView): Promise<Recognition> {
  const files = await view.files();
  if (!files.includes(ADAPTER_CONFIG)) return { fits: false, reason: `it has no ${ADAPTER_CONFIG} (not a LoRA adapter)` };
  if (!files.includes("adapter_model.bin")) return { fits: false, reason: "it has no adapter_model.bin (the script loads only that)" };
  if (!files.includes(TOKENIZER)) return { fits: false, reason: `it ships no ${TOKENIZER} (the script loads each adapter's tokenizer)` };
  const rows = await embeddingRows(view);
  const base = await view.base();
  const baseRows = base.tensors.get("model.embed_tokens.weight")?.shape[0];
  if (rows === undefined || baseRows === undefined || rows <= baseRows) {
    return { fits: false, reason: `its adapter_model.bin holds no whole ${EMBEDDING_KEY} with a vocabulary grown beyond the base's` };
  }
  return { fits: true, reason: `${ADAPTER_CONFIG} with adapter_model.bin holding whole embeddings of ${rows} rows (the base has ${baseRows}) and its own ${TOKENIZER}: Chinese-LLaMA-Alpaca's merge script` };
}

/** len(LlamaTokenizer) of an adapter directory: the SentencePiece pieces plus added tokens beyond them. */
async function tokenizerLength(view: DeltaView): Promise<number> {
  const size = await view.deltaFiles.size(TOKENIZER);
  if (size > MAX_SENTENCEPIECE_MODEL_BYTES) throw new DeltaError(`${view.source}/${TOKENIZER}: ${size} bytes is more than a SentencePiece model holds (at most ${MAX_SENTENCEPIECE_MODEL_BYTES})`);
  const pieces = sentencePieceCount(await view.head(TOKENIZER, size), `${view.source}/${TOKENIZER}`);
  const added = await view.json("added_tokens.json");
  if (added === undefined) return pieces;
  if (typeof added !== "object" || added === null || Array.isArray(added)) throw new DeltaError(`${view.source}/added_tokens.json is not a JSON object`);
  const ids = Object.values(added as Record<string, unknown>);
  if (ids.some((id) => typeof id !== "number")) throw new DeltaError(`${view.source}/added_tokens.json maps a token to something other than an id`);
  return pieces + (ids as number[]).filter((id) => id >= pieces).length;
}

export const chineseLlamaAlpaca: Convention = {
  name: "chinese-llama-alpaca",
  streams: true,
  chains: true,
  accepts: ["checksums"],
  layout: MERGE_LAYOUT,
  recognize,
  async plan(view) {
    const base: ModelSource = await view.base();
    refuseQuantizedBase(base);
    const views = [view, ...(view.chained ?? [])];
    const lengths: number[] = [];
    for (const v of views) {
      if (!(await v.files()).includes(TOKENIZER)) throw new DeltaError(`${v.source} ships no ${TOKENIZER}: Chinese-LLaMA-Alpaca's script loads each adapter's tokenizer`);
      const length = await tokenizerLength(v);
      const rows = await embeddingRows(v);
      if (rows !== undefined && rows !== length) {
        throw new DeltaError(`${v.source}: its ${EMBEDDING_KEY} has ${rows} rows, its tokenizer ${length} tokens: use the LLaMA tokenizer with the LLaMA LoRA and the Alpaca tokenizer with the Alpaca LoRA (the script's check)`);
      }
      if (lengths.length > 0 && length < lengths[lengths.length - 1]!) {
        throw new DeltaError(`${v.source}: its tokenizer has ${length} tokens, fewer than the ${lengths[lengths.length - 1]} of the adapter before it: give the LLaMA LoRA first, then the Alpaca LoRA (the script's check)`);
      }
      lengths.push(length);
    }
    const published = await publishedNotes(views);
    return withAdapters(views, base, "config", async (adapters) => {
      for (const { matched } of adapters) {
        // The script's scaling is lora_alpha / r whatever else the config says.
        for (const pair of matched.pairs.values()) pair.scaling = matched.config.alpha / matched.config.r;
      }
      return planMerge(base, adapters.map(({ matched, view: from }) => ({ matched, precision: SCRIPT_PRECISION, filesFrom: from })), {
        notes: [`tokenizer: ${views[views.length - 1]!.source}'s (${lengths[lengths.length - 1]} tokens), as the script saves the last adapter's`, ...published],
        replaceAs: "F16",
        configNote: "merged as Chinese-LLaMA-Alpaca's merge_llama_with_chinese_lora_low_mem.py does (float32 update added in place into float16)",
      });
    });
  },
};
