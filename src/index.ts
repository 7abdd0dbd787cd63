/** Public API: everything the CLI does is available without it. */
export * from "./errors.js";
export * from "./dtypes.js";
export type { TensorInfo, ModelSource } from "./model/types.js";
