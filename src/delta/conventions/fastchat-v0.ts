import { additiveConvention } from "./additive.js";
import { newRowToken } from "./evidence.js";

/**
 * FastChat before v0.2 (Vicuna v0, StableVicuna): the base's tokenizer gets
 * `[PAD]`, its embed_tokens and lm_head grow by one row set to ZERO, then
 * base += delta for every base tensor in half precision. So the new row is
 * the delta's own (0 + delta: a -0.0 there comes out +0.0). Half-precision
 * deltas whose vocabulary is the base's plus one added token.
 */
export const fastchatV0 = additiveConvention({
  name: "fastchat-v0",
  summary: "FastChat v0 / StableVicuna: like fastchat, the base grown by a zero [PAD] row",
  recognize(evidence) {
    const token = newRowToken(evidence);
    if (evidence.dtype !== "F16" && evidence.dtype !== "BF16") return { fits: false, reason: `its tensors are ${evidence.dtype ?? "not floats"}, FastChat v0's deltas are half precision` };
    if (token === undefined || evidence.vocab!.deltaRows !== evidence.vocab!.baseRows + 1) {
      return { fits: false, reason: "its vocabulary is not the base's plus one added token" };
    }
    return { fits: true, reason: `no delta.json; ${evidence.dtype} tensors, the vocabulary grown by ${JSON.stringify(token)} at row ${evidence.vocab!.baseRows} (FastChat v0: the base grown by a zero row)` };
  },
  rules: {
    walk: "base",
    configFrom: "delta",
    rule: (_delta, base) => ({ op: base === undefined ? "copy" : "add", unpaired: "zero" }),
  },
});
