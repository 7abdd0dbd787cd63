import { additiveConvention } from "./family.js";
import { isRotaryBuffer } from "../engine/pairing.js";
import { EMBEDDING, similarity } from "./evidence.js";

/** Ziya's make_delta stores these whole (its vocabulary is its own). */
function storedWhole(name: string): boolean {
  return name.includes("embed_tokens") || name.includes("lm_head.weight") || isRotaryBuffer(name);
}

/**
 * Ziya's `apply_delta` (Ziya-LLaMA-13B v1/v1.1): embed_tokens, lm_head and
 * the rotary buffers are stored whole (a vocabulary of 39424 rows against
 * LLaMA's 32000) and copied; every other tensor of the delta is delta + base
 * in fp16 (both models are loaded with `torch_dtype=torch.float16`).
 * Recognised by a grown vocabulary whose first rows point the same way as
 * the base's: they are values, not differences.
 */
export const ziya = additiveConvention({
  name: "ziya",
  async recognize(evidence, view) {
    const vocab = evidence.vocab;
    if (vocab === undefined || vocab.deltaRows <= vocab.baseRows) return { fits: false, reason: "its vocabulary does not grow beyond the base's" };
    const s = await similarity(await view.model(), await view.base(), EMBEDDING, vocab.baseRows * 64);
    if (s === undefined || !(s.cosine > 0.9)) {
      return { fits: false, reason: `its ${EMBEDDING} rows are differences, not whole values (cosine ${s?.cosine.toFixed(3) ?? "?"} with the base's)` };
    }
    // Ziya stores only its embeddings whole: a norm weight stored whole too means a full model, not a delta.
    const [delta, base] = [await view.model(), await view.base()];
    const norm = [...delta.tensors.values()].find((t) => t.shape.length === 1 && !storedWhole(t.name) && base.tensors.has(t.name));
    const other = norm === undefined ? undefined : await similarity(delta, base, norm.name);
    if (other !== undefined && other.cosine > 0.9 && other.normRatio > 0.5 && other.normRatio < 2) {
      return { fits: false, reason: `its other tensors are whole values too ("${norm!.name}": cosine ${other.cosine.toFixed(4)} with the base's): a full model, not a Ziya delta` };
    }
    return { fits: true, reason: `no delta.json; the vocabulary grown from ${vocab.baseRows} to ${vocab.deltaRows} rows, stored whole (cosine ${s.cosine.toFixed(4)} with the base's rows): Ziya's rule` };
  },
  rules: {
    walk: "delta",
    dtype: "F16",
    configFrom: "delta",
    rule: (delta, base) => ({ op: base === undefined || storedWhole(delta.name) ? "copy" : "add" }),
    // Ziya's apply_delta asserts that the base has every tensor of the delta.
    deltaOnly: () => false,
  },
});
