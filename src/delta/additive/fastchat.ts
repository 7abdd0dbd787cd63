import { additiveConvention } from "./family.js";
import { newRowToken } from "./evidence.js";

/**
 * FastChat's `apply_delta` (v1.1: Vicuna v1.1, Gorilla, HuatuoGPT and the
 * many deltas made with its `make_delta`): both models loaded with
 * `torch_dtype=torch.float16` (a bfloat16 or float32 delta or base is
 * rounded to fp16 first), then for every tensor of the BASE's state dict,
 * out = base + delta in fp16 (integers with wrap-around). A base tensor the
 * delta lacks is an error (FastChat asserts); tensors only in the delta are
 * left out. FastChat's script stops on a grown vocabulary (the shapes do not
 * add), so such a delta is not taken for this one. config.json and
 * generation_config.json come from the base, the tokenizer from the delta,
 * as FastChat saves them.
 */
export const fastchat = additiveConvention({
  name: "fastchat",
  recognize(evidence) {
    const vocab = evidence.vocab;
    if (vocab !== undefined && vocab.deltaRows > vocab.baseRows) {
      const grown = newRowToken(evidence);
      const token = grown === undefined ? "" : ` with ${JSON.stringify(grown.token)} at row ${vocab.baseRows} (${grown.from})`;
      return { fits: false, reason: `the vocabulary grows from ${vocab.baseRows} to ${vocab.deltaRows} rows${token}, which FastChat's apply_delta refuses (its shapes do not add; FastChat v0 and Alpaca grow the base for one added token)` };
    }
    return { fits: true, reason: `no delta.json; ${evidence.dtype ?? "weight"} tensors with the base's shapes, added onto the base's in float16 (FastChat's rule)` };
  },
  rules: {
    walk: "base",
    dtype: "F16",
    configFrom: "base",
    rule: (_delta, base) => ({ op: base === undefined ? "copy" : "add" }),
  },
});
