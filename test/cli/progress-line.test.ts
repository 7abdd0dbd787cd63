/**
 * A progress line at the widths people use: at 80 columns the speed and
 * the time left always show and a long tensor name is shortened in the
 * middle; at 120 the whole name and a bar fit. No line reaches the last
 * column (cli-progress turns line wrapping off, so the terminal would clip it).
 */
import { describe, expect, it, vi } from "vitest";
import { makeContext } from "../../src/cli/context.js";
import { hubSettings } from "../../src/cli/hub-options.js";
import { interruptedMessage } from "../../src/cli/main.js";
import { formatDuration, formatProgressLine, shortenMiddle, type ProgressLine } from "../../src/cli/progress-line.js";
import { progressReporter } from "../../src/cli/progress.js";

const LONG_NAME = "model.layers.31.self_attn.q_proj.weight";
const LONGER_NAME = "base_model.model.model.layers.79.post_attention_layernorm.weight";
const BAR = /[\u2588\u2591]+/;

const apply: ProgressLine = {
  phase: "apply",
  fraction: 0.237,
  doneBytes: 3_200_000_000,
  totalBytes: 13_500_000_000,
  bytesPerSecond: 412_300_000,
  etaSeconds: 725,
  label: LONG_NAME,
};
const download: ProgressLine = { ...apply, phase: "download", fraction: 0.03, doneBytes: 812_000_000, totalBytes: 26_900_000_000, bytesPerSecond: 98_700_000, etaSeconds: 3 * 3600 + 400, label: "pytorch_model-00001-of-00003.bin" };

const columnsOf = (line: string) => [...line].length;

describe("formatProgressLine", () => {
  it("at 80 columns: percentage, bytes, speed and ETA whole, the tensor name shortened in the middle, within 79 columns", () => {
    const line = formatProgressLine(apply, 80);
    expect(line).toBe(" apply     23%    3.2 GB/13.5 GB 412.3 MB/s ETA 12m05s model.layer\u2026_proj.weight");
    expect(columnsOf(line)).toBe(79);
    for (const name of [LONG_NAME, LONGER_NAME, "x".repeat(500)]) {
      const other = formatProgressLine({ ...apply, label: name }, 80);
      expect(columnsOf(other), other).toBeLessThanOrEqual(79);
      expect(other).toContain("412.3 MB/s ETA 12m05s ");
      expect(other).toMatch(/\u2026/);
      expect(other.endsWith(name.slice(-6)), other).toBe(true);
    }
  });

  it("at 120 columns: a bar, and the whole tensor name", () => {
    const line = formatProgressLine(apply, 120);
    expect(line).toMatch(BAR);
    expect(line.endsWith(` ETA 12m05s ${LONG_NAME}`)).toBe(true);
    expect(columnsOf(line)).toBeLessThanOrEqual(119);
    // A quarter of the bar is done.
    const bar = BAR.exec(line)![0];
    expect([...bar].filter((c) => c === "\u2588")).toHaveLength(Math.round(0.237 * bar.length));
    // The longest names are still shortened, never pushed past the width.
    const longer = formatProgressLine({ ...apply, label: LONGER_NAME }, 120);
    expect(columnsOf(longer)).toBe(119);
    expect(longer).toMatch(/ base_model\S*\u2026\S*layernorm\.weight$/);
  });

  it("keeps every bar of a multi-bar display the same width and the columns aligned, whatever the numbers and names", () => {
    for (const columns of [80, 120, 200]) {
      const lines = [apply, download, { ...apply, phase: "verify", doneBytes: 5, totalBytes: 10, bytesPerSecond: undefined, etaSeconds: undefined, label: "" }].map((l) => formatProgressLine(l, columns));
      const etaColumns = lines.map((l) => l.indexOf(" ETA "));
      expect(new Set(etaColumns).size, lines.join("\n")).toBe(1);
      const bars = lines.map((l) => BAR.exec(l)?.[0].length ?? 0);
      expect(new Set(bars).size).toBe(1);
      expect(bars[0]! > 0).toBe(columns > 80);
    }
  });

  it("says what is not known yet instead of inventing it", () => {
    const line = formatProgressLine({ ...apply, bytesPerSecond: undefined, etaSeconds: undefined }, 120);
    expect(line).toMatch(/ {2,}- ETA - /);
  });

  it("shortens in the middle, keeps short names whole, and formats durations", () => {
    expect(shortenMiddle(LONG_NAME, 100)).toBe(LONG_NAME);
    expect(shortenMiddle(LONG_NAME, 20)).toBe("model.lay\u2026roj.weight");
    expect([...shortenMiddle(LONG_NAME, 20)]).toHaveLength(20);
    expect(shortenMiddle("abc", 1)).toBe("\u2026");
    expect(formatDuration(8)).toBe("8s");
    expect(formatDuration(725)).toBe("12m05s");
    expect(formatDuration(3 * 3600 + 400)).toBe("3h06m");
    expect(formatDuration(1e7)).toBe(">99h");
  });
});

describe("the bars on a terminal", () => {
  it("draws lines that fit 80 columns, with speed and ETA, through cli-progress", () => {
    const stderr = process.stderr as NodeJS.WriteStream & { isTTY: boolean; columns: number };
    const saved = { isTTY: stderr.isTTY, columns: stderr.columns };
    let written = "";
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => { written += chunk.toString(); return true; });
    try {
      Object.assign(stderr, { isTTY: true, columns: 80 });
      const reporter = progressReporter(makeContext({}, hubSettings({}, {})));
      reporter.onProgress({ kind: "start", phase: "apply", totalBytes: 13_500_000_000, label: LONGER_NAME });
      reporter.onProgress({ kind: "advance", phase: "apply", bytes: 3_200_000_000, label: LONGER_NAME });
      reporter.stop();
    } finally {
      spy.mockRestore();
      Object.assign(stderr, saved);
    }
    // eslint-disable-next-line no-control-regex
    const lines = written.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "\n").split("\n").filter((l) => l.includes("apply"));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) {
      expect(columnsOf(line), line).toBeLessThanOrEqual(79);
      expect(line).toMatch(/ 23% +3\.2 GB\/13\.5 GB +(-|[0-9.]+ [KMGT]?B\/s) ETA \S+ +base_model\S*\u2026\S*norm\.weight$/);
    }
  });
});

describe("Ctrl-C's message", () => {
  it("shows the cursor again on a terminal, and writes no escape code elsewhere", () => {
    expect(interruptedMessage(true)).toBe("\u001b[?25h\ninterrupted: run the same command again to resume\n");
    expect(interruptedMessage(false)).toBe("interrupted: run the same command again to resume\n");
  });
});
