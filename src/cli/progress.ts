/**
 * The only place that draws progress: turns the library's ProgressEvents
 * into cli-progress bars (bytes, rate, ETA, one bar per phase) on stderr
 * when the context wants bars, and does nothing otherwise.
 */
import cliProgress from "cli-progress";
import type { OnProgress, ProgressEvent } from "../progress.js";
import type { CliContext } from "./context.js";
import { formatBytes, printable } from "../text.js";

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
  if (!ctx.progress) return { onProgress: () => undefined, stop: () => undefined };
  const multi = new cliProgress.MultiBar(
    {
      format: " {phase} |{bar}| {percentage}% | {doneText}/{totalText} | {rate} | ETA {eta_formatted} | {label}",
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, PhaseBar>();

  const payload = (p: PhaseBar, phase: string, label: string | undefined) => {
    const seconds = (Date.now() - p.started) / 1000;
    return {
      phase: phase.padEnd(10),
      doneText: formatBytes(p.done),
      totalText: formatBytes(p.total),
      rate: seconds > 0.2 ? `${formatBytes(p.done / seconds)}/s` : "-",
      label: printable(label ?? ""),
    };
  };

  const onProgress = (event: ProgressEvent): void => {
    if (event.kind === "start") {
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
    } else {
      const p = bars.get(event.phase);
      if (p === undefined || --p.open > 0) return;
      p.bar.update(Math.max(p.total, 1), payload(p, event.phase, "done"));
      p.bar.stop();
    }
  };
  return { onProgress, stop: () => multi.stop() };
}

