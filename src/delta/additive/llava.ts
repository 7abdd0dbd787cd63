import { additiveConvention } from "./family.js";

/** Config fields and tensors only a LLaVA model has. */
const LLAVA_CONFIG = ["mm_vision_tower", "use_mm_proj", "mm_hidden_size"];
const PROJECTOR = "model.mm_projector.";

/**
 * LLaVA's `apply_delta` (LLaVA-7B/13B-delta-v0, -v1-1): for every tensor of
 * the DELTA (both models loaded with `torch_dtype=torch.float16`), same
 * shape as the base's -> delta + base in fp16;
 * embed_tokens and lm_head, grown by LLaVA's image tokens -> the base added
 * into its own rows only, the new rows stored; tensors only in the delta
 * (the multimodal projector) stored. config and tokenizer from the delta.
 */
export const llava = additiveConvention({
  name: "llava",
  async recognize(evidence, view) {
    const fields = LLAVA_CONFIG.filter((f) => evidence.config !== undefined && Object.hasOwn(evidence.config, f));
    const projector = [...(await view.model()).tensors.keys()].some((n) => n.startsWith(PROJECTOR));
    if (fields.length === 0 && !projector) return { fits: false, reason: `its config has none of ${LLAVA_CONFIG.join(", ")} and it has no ${PROJECTOR}* tensors` };
    return { fits: true, reason: `no delta.json; a LLaVA model (${[...fields, ...(projector ? [`${PROJECTOR}*`] : [])].join(", ")})` };
  },
  rules: {
    walk: "delta",
    dtype: "F16",
    configFrom: "delta",
    rule: (_delta, base) => ({ op: base === undefined ? "copy" : "add" }),
    // LLaVA's apply_delta asserts that a tensor the base lacks is the projector's.
    deltaOnly: (name) => name.startsWith(PROJECTOR),
  },
});
