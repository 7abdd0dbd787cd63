import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { parseSize } from "../../src/cli/parse-size.js";

describe("parseSize (--max-shard-size)", () => {
  it.each([
    ["5GB", 5_000_000_000],
    ["5GiB", 5 * 2 ** 30],
    ["500MB", 500_000_000],
    ["500mb", 500_000_000],
    ["10KB", 10_000],
    ["2MiB", 2 * 2 ** 20],
    ["1.5GB", 1_500_000_000],
    ["1048576", 1_048_576],
    ["7B", 7],
  ])("reads %s as %d bytes (decimal units as Hugging Face counts them)", (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(["", "GB", "five GB", "5XB", "-5GB", "0", "5 G B", "1e9"])("refuses %j as a usage error", (text) => {
    expect(() => parseSize(text)).toThrow(UsageError);
  });
});
