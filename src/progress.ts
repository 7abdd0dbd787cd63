/**
 * Progress is data: library operations report typed events through an
 * optional callback; only src/cli/progress.ts turns them into bars.
 */
export type ProgressEvent =
  /** A phase begins (e.g. "apply", "hash base", "download"), with its total in bytes. */
  | { kind: "start"; phase: string; totalBytes: number; label?: string }
  /** `bytes` more bytes of the phase are done; `label` may name the current file or tensor. */
  | { kind: "advance"; phase: string; bytes: number; label?: string }
  | { kind: "end"; phase: string };

export type OnProgress = (event: ProgressEvent) => void;
