import { dtypeBytes, type DType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { convertedLayout, type OutputLayout } from "../../formats/output-layout.js";
import { planShards } from "../../formats/shard-plan.js";
import { numel } from "./pairing.js";

/**
 * Which files a convention's output tensors go to, declared by the
 * convention (`Convention.layout`) and carried out here, so no convention
 * lays its files out by hand:
 *   "delta"  one output file per weight file of the delta, each tensor in its
 *            delta tensor's file (the additive family: the publisher's shards);
 *   "base"   one per weight file of the base, each tensor in its base
 *            tensor's file (an adapter merged into its base);
 *   "fresh"  shards cut afresh in the output's tensor order, as
 *            save_pretrained cuts them at `maxShardBytes` (Koala: its diff is
 *            one file, its base perhaps Meta's consolidated checkpoints).
 * Every file is safetensors, laid out by our serializer with `{"format":"pt"}`
 * metadata, named as transformers names them, with the index when there are
 * several (formats/output-layout.ts).
 */
export type OutputLayoutRule = { follows: "delta" } | { follows: "base" } | { follows: "fresh"; maxShardBytes: number };

/** Where tensors sit in a model's weight files. */
export interface WeightFilesOf {
  readonly weightFiles: readonly string[];
  readonly tensors: ReadonlyMap<string, { file: string }>;
}

/** An output tensor: its name, the output's dtype and shape. */
export interface OutputTensor {
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * The output files for `tensors` (in the order given, which is the order a
 * file's tensors are laid out in when the serializer keeps it) under `rule`;
 * `sources` must hold the model the rule follows, and that model every tensor.
 */
export function layOutOutputs(rule: OutputLayoutRule, sources: { delta?: WeightFilesOf; base?: WeightFilesOf }, tensors: readonly OutputTensor[]): OutputLayout {
  if (rule.follows === "fresh") {
    const shards = planShards(tensors.map((t) => ({ name: t.name, byteLength: numel(t.shape) * dtypeBytes(t.dtype) })), rule.maxShardBytes);
    return convertedLayout(shards.files, tensors.map((t) => ({ ...t, file: shards.assignment.get(t.name)! })));
  }
  const model = rule.follows === "delta" ? sources.delta : sources.base;
  if (model === undefined) throw new DeltaError(`internal: the output follows the ${rule.follows}, which the plan did not give`);
  return convertedLayout(model.weightFiles, tensors.map((t) => {
    const file = model.tensors.get(t.name)?.file;
    if (file === undefined) throw new DeltaError(`internal: the output follows the ${rule.follows}, which has no tensor "${t.name}"`);
    return { ...t, file };
  }));
}
