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
export { inspectModel, formatInspectReport, type InspectResult, type InspectedTensor } from "./model/inspect.js";
export { convertModel, type ConvertOptions, type ConvertResult } from "./model/convert.js";
export { planShards, formatIndex, shardFileName, type ShardPlan } from "./model/shard-plan.js";
export { isExtraFile, listExtraFiles } from "./model/extra-files.js";

// formats
export {
  parseHeader, parseHeaderJson, readHeaderLength, encodeHeader, encodeHeaderVerbatim,
  type SafetensorsHeader, type HeaderTensor, type MetadataInput,
} from "./safetensors/header.js";
export { openSafetensorsFile, type SafetensorsFile, type ReadRange } from "./safetensors/reader.js";
export { SafetensorsWriter, type ByteSink } from "./safetensors/writer.js";
export { openPytorchFile } from "./pytorch/index.js";

// deltas
export { makeDelta, type MakeDeltaOptions, type MakeDeltaResult } from "./delta/make-delta.js";
export { applyDelta, type ApplyDeltaOptions, type ApplyDeltaResult } from "./delta/apply-delta.js";
export { verify, type VerifyOptions, type VerifyResult } from "./delta/verify.js";
export { parseManifest, serializeManifest, MANIFEST_FILE, FIXUPS_FILE, type Manifest, type Codec } from "./delta/manifest.js";

// hub
export { pushToHub, type PushOptions, type PushResult } from "./hub/push.js";
export { makeModelCard, type ModelCardInput, type CardManifest } from "./hub/model-card.js";
export { downloadSnapshot, cachedSnapshot, DEFAULT_HUB_URL, type DownloadOptions, type Snapshot } from "./hub/download.js";
export { parseHubRef, type HubRef } from "./hub/repo-id.js";
export { defaultHubCacheDir } from "./model/resolve-source.js";
