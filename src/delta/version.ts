/** Recorded in delta.json: which tool, which version made the delta. */
export const VERSION = "0.1.0";
export const TOOL = `delta-weights ${VERSION}`;
