import { additiveConvention } from "./additive.js";
import { newRowToken } from "./evidence.js";

/**
 * FastChat's `apply_delta` (v1.1: Vicuna v1.1, Gorilla, HuatuoGPT and the
 * many deltas made with its `make_delta`): for every tensor of the BASE's
 * state dict, out = base + delta, as torch adds them (floats rounded to the
 * dtype, integers with wrap-around). A base tensor the delta lacks is an
 * error (FastChat asserts); tensors only in the delta are left out.
 * FastChat's script refuses a grown vocabulary; a delta that grows one
 * without saying what the new rows are (no added token for them) has them
 * taken as stored. config.json and generation_config.json come from the
 * base, the tokenizer from the delta, as FastChat saves them.
 */
export const fastchat = additiveConvention({
  name: "fastchat",
  summary: "FastChat's apply_delta (Vicuna v1.1 and kin): base + delta per base tensor, in the delta's dtype; unverified without --checksums",
  recognize(evidence) {
    const grown = newRowToken(evidence);
    if (grown !== undefined) {
      return { fits: false, reason: `the vocabulary grows to ${evidence.vocab!.deltaRows} rows with ${JSON.stringify(grown)} at row ${evidence.vocab!.baseRows}, which FastChat's apply_delta refuses (FastChat v0 and Alpaca grow the base for it)` };
    }
    const rows = evidence.vocab === undefined || evidence.vocab.deltaRows === evidence.vocab.baseRows ? "the base's shapes" : `the vocabulary grown from ${evidence.vocab.baseRows} to ${evidence.vocab.deltaRows} rows (the new rows taken as stored)`;
    return { fits: true, reason: `no delta.json; ${evidence.dtype ?? "weight"} tensors with ${rows}, added onto the base's (FastChat's rule)` };
  },
  rules: {
    walk: "base",
    configFrom: "base",
    rule: (_delta, base) => ({ op: base === undefined ? "copy" : "add" }),
  },
});
