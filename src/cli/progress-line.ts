/**
 * One progress bar's line, laid out for the terminal's width. What a user
 * waits on comes first and is never cut: the phase, the percentage, bytes
 * done of the total, the speed and the time left. The tensor or file name
 * gets what remains (shortened in the middle, where a tensor name is least
 * telling: `model.layers.31…q_proj.weight`), and the bar the room a name of
 * typical length leaves. The line stays a column short of the width,
 * as cli-progress turns the terminal's line wrapping off and a full-width
 * line would be clipped or wrap on some terminals.
 */
import { formatBytes } from "../text.js";

export interface ProgressLine {
  phase: string;
  /** 0 to 1. */
  fraction: number;
  doneBytes: number;
  totalBytes: number;
  /** Bytes per second; undefined while too early to tell. */
  bytesPerSecond: number | undefined;
  /** Seconds left; undefined while unknown. */
  etaSeconds: number | undefined;
  /** The tensor or file at work, already made printable. */
  label: string;
}

/** Phase names are at most this long ("download", "identify"): bars of several phases line up. */
const PHASE_WIDTH = 8;
const MAX_BAR = 40;
/** Narrower than this, a bar says less than the percentage beside it: it is left out. */
const MIN_BAR = 8;
/** Room for a whole LLaMA tensor name (`model.layers.31.self_attn.q_proj.weight`) before the bar grows. */
const LABEL_ROOM = 40;
/** A name is not shortened below this to make room for the bar. */
const MIN_LABEL = 24;
/** Below this, a shortened name says nothing: it is left out. */
const MIN_SHORTENED_LABEL = 8;
const BAR_DONE = "\u2588";
const BAR_TODO = "\u2591";
const ELLIPSIS = "\u2026";

export function formatProgressLine(line: ProgressLine, columns: number): string {
  const width = Math.max(0, columns - 1);
  const percent = `${Math.floor(clamp(line.fraction, 0, 1) * 100)}%`.padStart(4);
  const total = formatBytes(line.totalBytes);
  // Fixed widths ("999.9 MB/999.9 MB", "999.9 MB/s"): the bars of several phases line up, and a line never shifts.
  const bytes = `${formatBytes(line.doneBytes)}/${total}`.padStart(17);
  const speed = (line.bytesPerSecond === undefined ? "-" : `${formatBytes(line.bytesPerSecond)}/s`).padStart(10);
  const eta = `ETA ${line.etaSeconds === undefined ? "-" : formatDuration(line.etaSeconds)}`.padEnd(10);
  const phase = line.phase.padEnd(PHASE_WIDTH);
  // Always shown; on a terminal too narrow for even these, the terminal clips the end.
  const head = ` ${phase}`;
  const numbers = ` ${percent} ${bytes} ${speed} ${eta}`;
  let room = width - length(head) - length(numbers);

  // The bar's width depends on the width alone, never on the name of the
  // moment: it would jump about as names come and go. It takes what a name
  // of LABEL_ROOM characters leaves, or if that is too little, what a name of
  // MIN_LABEL leaves; if even that is too little, there is no bar.
  const barWidth = Math.min(MAX_BAR, Math.max(room - 2 - LABEL_ROOM, Math.min(MIN_BAR, room - 2 - MIN_LABEL)));
  let bar = "";
  if (barWidth >= MIN_BAR) {
    const filled = Math.round(clamp(line.fraction, 0, 1) * barWidth);
    bar = ` ${BAR_DONE.repeat(filled)}${BAR_TODO.repeat(barWidth - filled)}`;
    room -= barWidth + 1;
  }
  const label = [...line.label];
  const labelRoom = room - 1;
  const name = label.length > 0 && labelRoom >= Math.min(label.length, MIN_SHORTENED_LABEL) ? ` ${shortenMiddle(label, labelRoom)}` : "";
  return `${head}${bar}${numbers}${name}`.trimEnd();
}

/** `text` in at most `width` characters: its start and end around an ellipsis (the end gets the extra one). */
export function shortenMiddle(text: string | string[], width: number): string {
  const chars = typeof text === "string" ? [...text] : text;
  if (chars.length <= width) return chars.join("");
  if (width <= 1) return width === 1 ? ELLIPSIS : "";
  const tail = Math.ceil((width - 1) / 2);
  const head = width - 1 - tail;
  return `${chars.slice(0, head).join("")}${ELLIPSIS}${chars.slice(chars.length - tail).join("")}`;
}

/** "8s", "12m05s", "3h07m", ">99h". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 100 * 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return ">99h";
}

function clamp(value: number, low: number, high: number): number {
  return Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : low;
}

function length(text: string): number {
  return [...text].length;
}
