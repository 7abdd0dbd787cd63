import { additiveConvention } from "./family.js";
import { releaseEvidence } from "../conventions/release-evidence.js";
import { newRowToken } from "./evidence.js";
import { publishedSum } from "./published-sums.js";

/**
 * Stanford Alpaca's `weight_diff.py` and its kin (WizardLM, Tulu, UltraLM,
 * AlpacaFarm, KnowLM, gisting): a float32 diff (both models are loaded with
 * `torch_dtype=torch.float32`). The base is upcast to
 * float32 and, when the diff's vocabulary has a new `[PAD]` row, grown by
 * one row equal to the mean of its existing rows (embed_tokens and lm_head
 * each their own mean, torch's `mean(dim=0)`); then out = diff + base in
 * float32 for every tensor of the DIFF. Tensors only in the diff are kept as
 * stored (as AlpacaFarm does; Alpaca's own script would stop on them).
 * Alpaca publishes an integrity sum of the recovered model (--expect-sum).
 */
export const alpaca = additiveConvention({
  name: "alpaca",
  // weight_diff.py's check is np.allclose(sum, published, atol=1e-2, rtol=0).
  sums: { tolerance: 1e-2, published: (view) => publishedSum(releaseEvidence(view)) },
  recognize(evidence) {
    if (evidence.dtype !== "F32") return { fits: false, reason: `its tensors are ${evidence.dtype ?? "not floats"}; Alpaca's diffs are float32` };
    const vocab = evidence.vocab;
    if (vocab === undefined || vocab.deltaRows === vocab.baseRows) {
      return { fits: true, reason: "no delta.json; float32 diff tensors with the base's vocabulary (Alpaca's weight_diff.py rule)" };
    }
    const token = newRowToken(evidence);
    if (token === undefined || vocab.deltaRows !== vocab.baseRows + 1) return { fits: false, reason: `its vocabulary grows from ${vocab.baseRows} to ${vocab.deltaRows} rows without one added token for the new row` };
    return { fits: true, reason: `no delta.json; float32 diff, the vocabulary grown by ${JSON.stringify(token.token)} at row ${vocab.baseRows} (${token.from}; Alpaca's weight_diff.py: the base grown by its mean row)` };
  },
  rules: {
    walk: "delta",
    dtype: "F32",
    configFrom: "delta",
    rule: (_delta, base) => ({ op: base === undefined ? "copy" : "add", unpaired: "mean" }),
  },
});
