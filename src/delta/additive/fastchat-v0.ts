import { additiveConvention } from "./family.js";
import { configVocabSize, newRowToken } from "./evidence.js";

/**
 * FastChat before v0.2 (Vicuna v0, StableVicuna; apply_delta.py at v0.1.10):
 * both models loaded with `torch_dtype=torch.float16`; the base's tokenizer
 * gets `[PAD]`, its embed_tokens and lm_head grow by one row set to ZERO,
 * then base += delta for every base tensor in fp16, and the base model is
 * saved (its config, vocab_size grown by resize_token_embeddings). So the new
 * row is the delta's own (0 + delta: a -0.0 there comes out +0.0).
 *
 * Recognised by half precision and exactly one row more than the base, with
 * either a tokenizer file placing a token at that row (added_tokens.json,
 * tokenizer.json, tokenizer_config.json's added_tokens_decoder, or a pad
 * token in special_tokens_map.json) or config.json's vocab_size giving the
 * grown vocabulary. No other publisher's script takes such a delta (FastChat
 * v1.1 stops on the shape, Alpaca's diffs are float32, LLaVA's configs say
 * so, Ziya's rows are whole values); with neither record, it is taken only
 * when the user names it.
 */
export const fastchatV0 = additiveConvention({
  name: "fastchat-v0",
  recognize(evidence) {
    if (evidence.dtype !== "F16" && evidence.dtype !== "BF16") return { fits: false, reason: `its tensors are ${evidence.dtype ?? "not floats"}, FastChat v0's deltas are half precision` };
    const vocab = evidence.vocab;
    if (vocab === undefined || vocab.deltaRows !== vocab.baseRows + 1) return { fits: false, reason: "its vocabulary is not the base's plus one added token" };
    const declared = configVocabSize(evidence);
    if (declared !== undefined && declared !== vocab.deltaRows) {
      return { fits: false, reason: `its config.json says vocab_size ${declared}, but its ${vocab.name} has ${vocab.deltaRows} rows (transformers could not load it)` };
    }
    const token = newRowToken(evidence);
    if (token !== undefined) {
      return { fits: true, reason: `no delta.json; ${evidence.dtype} tensors, the vocabulary grown by ${JSON.stringify(token.token)} at row ${vocab.baseRows} (${token.from}; FastChat v0: the base grown by a zero row)` };
    }
    if (declared !== undefined) {
      return { fits: true, reason: `no delta.json; ${evidence.dtype} tensors, one row more than the base, config.json vocab_size ${declared} (FastChat v0: the base grown by a zero row)` };
    }
    return {
      fits: true,
      reason: `no delta.json; ${evidence.dtype} tensors, one row more than the base`,
      undecided: `its ${evidence.dtype} tensors have one vocabulary row more than the base (${vocab.deltaRows} against ${vocab.baseRows}), but no tokenizer file says which token row ${vocab.baseRows} is and config.json gives no vocab_size, so which publisher's rule made it cannot be told`,
    };
  },
  rules: {
    walk: "base",
    dtype: "F16",
    configFrom: "base",
    rule: (_delta, base) => ({ op: base === undefined ? "copy" : "add", unpaired: "zero" }),
  },
});
