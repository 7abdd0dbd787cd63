/**
 * Progress is data: library operations report typed events through an
 * optional callback; only src/cli/progress.ts turns them into bars. Notices
 * (a retried request, a wait for a lock, a corrupt cached file moved aside)
 * travel on the same stream, so a caller subscribes once.
 */
export type ProgressEvent =
  /** A phase begins (e.g. "apply", "hash base", "download"), with its total in bytes. */
  | { kind: "start"; phase: string; totalBytes: number; label?: string }
  /** `bytes` more bytes of the phase are done; `label` may name the current file or tensor. */
  | { kind: "advance"; phase: string; bytes: number; label?: string }
  | { kind: "end"; phase: string }
  /**
   * Something worth one line to the user while the work goes on; `message`
   * is that line. `source` says which part raised it ("download": see
   * DownloadEvent, whose kind is `detail`; "upload": a retried upload request).
   */
  | { kind: "notice"; source: NoticeSource; message: string; detail?: string };

export type NoticeSource = "download" | "upload";

export type OnProgress = (event: ProgressEvent) => void;

/** The one line a notice prints, for the callers that also take a plain-text notice callback. */
export function noticeEvent(source: NoticeSource, message: string, detail?: string): ProgressEvent {
  return detail === undefined ? { kind: "notice", source, message } : { kind: "notice", source, message, detail };
}
