import { describe, expect, it, vi } from "vitest";
import { makeContext } from "../../src/cli/context.js";
import { hubSettings } from "../../src/cli/hub-options.js";
import { progressReporter } from "../../src/cli/progress.js";
import { formatBytes } from "../../src/text.js";

describe("progress rendering", () => {
  it("draws nothing when bars are off (not a TTY, --quiet, --json), whatever events come", () => {
    const written = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      for (const flags of [{ quiet: true }, { json: true }, { progress: false }]) {
        const reporter = progressReporter(makeContext(flags, hubSettings({}, {})));
        reporter.onProgress({ kind: "start", phase: "convert", totalBytes: 10 });
        reporter.onProgress({ kind: "advance", phase: "convert", bytes: 10, label: "t" });
        reporter.onProgress({ kind: "end", phase: "convert" });
        reporter.stop();
      }
      expect(written).not.toHaveBeenCalled();
    } finally {
      written.mockRestore();
    }
  });

  it("formats byte counts in decimal units", () => {
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(1_500_000)).toBe("1.5 MB");
    expect(formatBytes(13_476_839_424)).toBe("13.5 GB");
  });
});
