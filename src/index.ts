/**
 * The library: everything the CLI does is one call here, usable without it.
 * Hub functions load `@huggingface/hub` only when called.
 */
export * from "./errors.js";
export * from "./dtypes.js";
export type { ProgressEvent, OnProgress } from "./progress.js";
export type { TensorInfo, ModelSource, WeightFile } from "./model/types.js";

// models: open, inspect, convert
export { openModel, type OpenModelOptions } from "./model/open-model.js";
export { resolveSource, type ResolveOptions, type ResolvedSource } from "./model/resolve-source.js";
export { inspectModel, type InspectResult } from "./model/inspect.js";
export { convertModel, type ConvertOptions, type ConvertResult } from "./model/convert.js";
export { planShards, formatIndex } from "./model/shard-plan.js";

// formats
export { parseHeader, encodeHeader, encodeHeaderVerbatim, type SafetensorsHeader, type HeaderTensor } from "./safetensors/header.js";
export { openSafetensorsFile, type SafetensorsFile } from "./safetensors/reader.js";
export { SafetensorsWriter } from "./safetensors/writer.js";
export { openPytorchFile } from "./pytorch/index.js";

// deltas
export { makeDelta, type MakeDeltaOptions, type MakeDeltaResult } from "./delta/make-delta.js";
export { applyDelta, type ApplyDeltaOptions, type ApplyDeltaResult } from "./delta/apply-delta.js";
export { verify, type VerifyOptions, type VerifyResult } from "./delta/verify.js";
export { parseManifest, serializeManifest, MANIFEST_FILE, FIXUPS_FILE, type Manifest, type Codec } from "./delta/manifest.js";

// hub
export { pushToHub, type PushOptions, type PushResult } from "./hub/push.js";
export { makeModelCard } from "./hub/model-card.js";
