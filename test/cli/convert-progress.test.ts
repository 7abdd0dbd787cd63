import { describe, expect, it } from "vitest";
import type { CliContext } from "../../src/cli/context.js";
import { formatBytes } from "../../src/format-bytes.js";
import { progressReporter } from "../../src/cli/progress.js";

const context = (progress: boolean): CliContext => ({
  json: false, quiet: false, progress, debug: false, log: () => undefined, printJson: () => undefined,
});

describe("progress rendering", () => {
  it("draws nothing and accepts every event when bars are off (not a TTY, --quiet, --json)", () => {
    const reporter = progressReporter(context(false));
    reporter.onProgress({ kind: "start", phase: "convert", totalBytes: 10 });
    reporter.onProgress({ kind: "advance", phase: "convert", bytes: 10, label: "t" });
    reporter.onProgress({ kind: "end", phase: "convert" });
    reporter.stop();
    expect(true).toBe(true);
  });

  it("formats byte counts in decimal units", () => {
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(1_500_000)).toBe("1.5 MB");
    expect(formatBytes(13_476_839_424)).toBe("13.5 GB");
  });
});
