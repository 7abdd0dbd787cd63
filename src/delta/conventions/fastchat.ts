import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError } from "../../errors.js";
import { convertedLayout } from "../../formats/output-layout.js";
import { planTensor, type TensorRecipe } from "../recipe.js";
import type { PlannedFile } from "../recover.js";
import { copiedFile, tensorFile, textFile } from "../tensor-file.js";
import type { Convention } from "./types.js";

/**
 * FastChat's `apply_delta` (Vicuna, and the many deltas made with its
 * `make_delta`): out = base + delta for every tensor, in the delta's dtype,
 * as torch computes it; a delta tensor larger than its base (a grown
 * vocabulary) is added on the base's block and stored as is beyond it.
 * No file proves the result, so it is unverified unless the publisher's
 * checksums are given.
 */
export const fastchat: Convention = {
  name: "fastchat",
  summary: "FastChat's apply_delta: base + delta per tensor, in the delta's dtype (Vicuna and its kin); unverified without --checksums",

  async recognize(view) {
    if ((await view.manifest()) !== undefined) return { fits: false, reason: "it has delta.json, which FastChat's deltas do not" };
    try {
      await view.model();
    } catch (err) {
      return { fits: false, reason: `its weights cannot be read (${err instanceof Error ? err.message : String(err)})` };
    }
    return { fits: true, reason: "no delta.json; weight tensors to add onto the base's (FastChat's rule)" };
  },

  async plan(view) {
    const [delta, base] = [await view.model(), await view.base()];
    // FastChat asserts that every base tensor has its delta; a delta without
    // one would leave that tensor out of the model. Rotary inv_freq buffers are
    // not weights (transformers >= 4.31 computes them), so they may be missing.
    const missing = [...base.tensors.keys()].find((n) => !delta.tensors.has(n) && !isRotaryBuffer(n));
    if (missing !== undefined) {
      throw new DeltaError(`the delta ${delta.source} has no tensor "${missing}", which the base ${base.source} has: the delta is incomplete or made from another base`);
    }
    const recipes = new Map<string, TensorRecipe>();
    for (const t of delta.tensors.values()) {
      const paired = base.tensors.get(t.name);
      recipes.set(t.name, planTensor(t, paired, paired === undefined ? "copy" : "add", { baseSource: base.source, role: "delta" }));
    }
    const layout = convertedLayout(delta.weightFiles, delta.tensors.values());
    const files: PlannedFile[] = layout.files.map((f) => tensorFile({
      path: f.file,
      header: f.headerText,
      recipes: new Map(f.tensors.map((t) => [t.name, recipes.get(t.name)!])),
      delta,
      base,
    }));
    if (layout.index !== undefined) files.push(textFile(layout.index.file, layout.index.text));
    for (const rel of delta.extraFiles) {
      const { size } = await stat(join(delta.root, rel));
      files.push(copiedFile(rel, join(delta.root, rel), size));
    }
    return {
      files,
      tensors: recipes.size,
      dropped: [...base.tensors.keys()].filter((n) => !delta.tensors.has(n)),
      notes: [],
      fixups: () => 0,
      close: async () => undefined,
    };
  },
};

/** `model.layers.N.self_attn.rotary_emb.inv_freq`: a buffer transformers 4.28-4.30 saved, not a weight. */
export function isRotaryBuffer(name: string): boolean {
  return name.endsWith("rotary_emb.inv_freq");
}
