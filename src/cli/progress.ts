/**
 * The only place that draws progress: turns the library's ProgressEvents
 * into cli-progress bars (bytes, rate, ETA, one bar per phase, each line laid
 * out for the terminal's width by progress-line.ts) on stderr when the
 * context wants bars; notices on the stream go to the context's one-line
 * notice (printed on stderr, kept for --json) whether or not bars are drawn.
 */
import cliProgress from "cli-progress";
import type { OnProgress, ProgressEvent } from "../progress.js";
import type { CliContext } from "./context.js";
import { printable } from "../text.js";
import { formatProgressLine, type ProgressLine } from "./progress-line.js";

/** What a bar carries between redraws; cli-progress adds the fraction and the ETA. */
type LinePayload = Omit<ProgressLine, "fraction" | "etaSeconds">;

export interface ProgressReporter {
  onProgress: OnProgress;
  /** Removes the bars (call before printing the summary, and on failure). */
  stop(): void;
}

interface PhaseBar {
  bar: cliProgress.SingleBar;
  total: number;
  done: number;
  started: number;
  /** Starts not yet ended: several downloads (the delta's, the base's) share one bar. */
  open: number;
}

export function progressReporter(ctx: CliContext): ProgressReporter {
  if (!ctx.progress) return { onProgress: (event) => { if (event.kind === "notice") ctx.notice(event.message); }, stop: () => undefined };
  const multi = new cliProgress.MultiBar(
    {
      // Laid out for the terminal's width at each redraw (progress-line.ts).
      format: (_options, params, payload: LinePayload) => formatProgressLine({
        ...payload,
        fraction: params.progress,
        etaSeconds: typeof params.eta === "number" && Number.isFinite(params.eta) && payload.bytesPerSecond !== undefined ? params.eta : undefined,
      }, params.maxWidth),
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, PhaseBar>();

  const payload = (p: PhaseBar, phase: string, label: string | undefined): LinePayload => {
    const seconds = (Date.now() - p.started) / 1000;
    return {
      phase,
      doneBytes: p.done,
      totalBytes: p.total,
      bytesPerSecond: seconds > 0.2 ? p.done / seconds : undefined,
      label: printable(label ?? ""),
    };
  };

  const onProgress = (event: ProgressEvent): void => {
    if (event.kind === "notice") {
      ctx.notice(event.message);
    } else if (event.kind === "start") {
      const running = bars.get(event.phase);
      if (running !== undefined && running.open > 0) {
        // One bar per phase: another source of the same phase adds its bytes to it.
        running.open++;
        running.total += event.totalBytes;
        running.bar.setTotal(Math.max(running.total, 1));
        return;
      }
      const total = Math.max(event.totalBytes, 1);
      const p: PhaseBar = { bar: undefined as unknown as cliProgress.SingleBar, total: event.totalBytes, done: 0, started: Date.now(), open: 1 };
      p.bar = multi.create(total, 0, payload(p, event.phase, event.label));
      bars.set(event.phase, p);
    } else if (event.kind === "advance") {
      const p = bars.get(event.phase);
      if (p === undefined) return;
      p.done += event.bytes;
      p.bar.update(p.done, payload(p, event.phase, event.label));
    } else if (event.kind === "end") {
      const p = bars.get(event.phase);
      if (p === undefined || --p.open > 0) return;
      p.bar.update(Math.max(p.total, 1), payload(p, event.phase, "done"));
      p.bar.stop();
    }
  };
  return { onProgress, stop: () => multi.stop() };
}

