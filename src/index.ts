/**
 * The library: everything the CLI does is one call here, usable without it.
 * Sources may be local paths or Hub repo ids; Hub functions load
 * `@huggingface/hub` only when called.
 */
export * from "./errors.js";
export * from "./dtypes.js";
export type { ProgressEvent, OnProgress } from "./progress.js";
export type { TensorInfo, WeightFile, ReadRange, RandomAccess } from "./tensors.js";
export type { ModelSource, LocalSource } from "./model/types.js";

// commands: one call each, Hub repo ids resolved
export {
  applyDelta, makeDelta, verifyModel, inspectModel, convertModel, identifyModel,
  type ApplyDeltaOptions, type ApplyDeltaResult, type MakeDeltaOptions, type MakeDeltaResult,
  type VerifyOptions, type VerifyResult, type ConvertOptions, type ConvertResult, type InspectResult, type IdentifyResult, type SourceOptions, type PushTarget,
} from "./api.js";
export { pushToHub, type PushOptions, type PushResult } from "./api.js";

// models
export { openModel, type OpenModelOptions } from "./model/open-model.js";
export { formatInspectReport, type InspectedTensor } from "./model/inspect.js";
export { isExtraFile, listExtraFiles } from "./model/extra-files.js";

// formats
export {
  parseHeader, parseHeaderJson, readHeaderLength, encodeHeader, encodeHeaderVerbatim,
  type SafetensorsHeader, type HeaderTensor, type MetadataInput,
} from "./safetensors/header.js";
export { readSafetensors, type SafetensorsFile } from "./safetensors/reader.js";
export { SafetensorsWriter, type ByteSink } from "./safetensors/writer.js";
export { readPytorch } from "./pytorch/reader.js";
export { INPUT_FORMATS, openWeightFile, openSafetensorsFile, type InputFormat, type InputFormatName } from "./formats/registry.js";
export { OUTPUT_FORMATS, type OutputFormat, type OutputFormatName } from "./model/output-formats.js";
export { planShards, formatIndex, shardFileName, type ShardPlan } from "./formats/shard-plan.js";

// deltas
export { parseManifest, serializeManifest, MANIFEST_FILE, FIXUPS_FILE, type Manifest, type Codec } from "./delta/own/manifest.js";
export { CONVENTION_NAMES, type ConventionName } from "./delta/conventions/registry.js";

// hub
export { resolveSource, defaultHubCacheDir, type ResolveOptions, type ResolvedSource } from "./hub/resolve-source.js";
export { makeModelCard, type ModelCardInput, type CardManifest } from "./hub/huggingface/model-card.js";
export {
  downloadSnapshot, startSnapshotDownload, cachedSnapshot, DEFAULT_HUB_URL, DOWNLOAD_DEFAULTS,
  type DownloadOptions, type DownloadEvent, type Snapshot, type SnapshotDownload, type FileDownload,
} from "./hub/huggingface/download.js";
export { parseHubRef, type HubRef } from "./hub/huggingface/repo-id.js";
