import { DeltaError } from "../../errors.js";
import type { FileSet } from "../../io/file-set.js";
import { describeForeignWeights, metaCheckpointOpened, type ForeignWeights } from "../../model/foreign-weights.js";
import { openModel } from "../../model/open-model.js";
import type { ModelSource } from "../../model/types.js";

/** Which input of apply-delta or make-delta a model is (the target: make-delta's fine-tuned model). */
export type InputRole = "base" | "delta" | "target";

/**
 * Opens a base or a delta as a model, refusing weights of a foreign format
 * (model/foreign-weights.ts) by name: read as tensors they would make a
 * wrong model, or fail for a reason that does not say what they are.
 */
export async function openInputModel(where: string | FileSet, source: string, role: InputRole): Promise<ModelSource> {
  let model: ModelSource;
  try {
    model = await openModel(where, { source });
  } catch (err) {
    const foreign = await describeForeignWeights(where).catch(() => undefined);
    if (foreign !== undefined) throw foreignInputError(role, source, foreign, err);
    throw err;
  }
  const foreign = (role !== "base" ? metaCheckpointOpened(model) : undefined) ?? await describeForeignWeights(where, model).catch(async (err: unknown) => {
    await model.close();
    throw err;
  });
  if (foreign !== undefined) {
    await model.close();
    throw foreignInputError(role, source, foreign);
  }
  return model;
}

/** `--base X is a GPTQ-quantized model (...): a delta needs the unquantized base ...`, with rule foreign-format. */
export function foreignInputError(role: InputRole, source: string, foreign: ForeignWeights, cause?: unknown): DeltaError {
  const message = role === "base"
    ? `--base ${source} is ${foreign.what}: ${foreign.asBase}`
    : role === "target"
      ? `--target ${source} is ${foreign.what}: ${foreign.asTarget}`
      : `--delta ${source} is ${foreign.what}, not a delta: ${foreign.asDelta}`;
  return new DeltaError(message, { rule: "foreign-format", ...(cause === undefined ? {} : { cause }) });
}

/** Whether an error is a refusal of a foreign format (which no convention's recognition should swallow). */
export function isForeignInputError(err: unknown): boolean {
  return err instanceof DeltaError && err.rule === "foreign-format";
}
