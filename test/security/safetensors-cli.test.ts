/**
 * Hostile files through the built CLI, as a user meets them: `inspect`
 * exits 1 with one line `error: ...` naming the file and the rule, and no
 * stack trace. (Every rule is covered through the library in
 * safetensors-header.test.ts; this is a representative subset end to end.)
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { entry, rawSafetensors } from "../helpers/safetensors-bytes.js";
import { makeTempDir } from "../helpers/temp-dir.js";

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir();
});

function inspectRefuses(name: string, bytes: Uint8Array, rule: RegExp): void {
  const path = join(dir, `${name}.safetensors`);
  writeFileSync(path, bytes);
  const run = runCli(["inspect", path]);
  expect(run.status).toBe(1);
  expect(run.stdout).toBe("");
  const lines = run.stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: Failed to read .*\.safetensors: /);
  expect(lines[0]).toContain(path);
  expect(lines[0]).toMatch(rule);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}

describe("inspect refuses malformed files with exit 1 and one line", () => {
  it("rejects an empty file", () => inspectRefuses("empty", new Uint8Array(0), /shorter than the 8-byte header length/));
  it("rejects a header length of 2^64-1", () => inspectRefuses("huge-length", rawSafetensors("{}", 0, 2n ** 64n - 1n), /exceeds the 25000000-byte limit/));
  it("rejects a header length past EOF", () => inspectRefuses("length-past-eof", rawSafetensors("{}", 0, 4096n), /runs past the end of the file/));
  it("rejects a header that is not JSON", () => inspectRefuses("not-json", rawSafetensors("not json at all"), /not valid JSON/));
  it("rejects invalid UTF-8", () => inspectRefuses("bad-utf8", rawSafetensors(new Uint8Array([0x7b, 0xc3, 0x28, 0x7d])), /not valid UTF-8/));
  it("rejects 200,000-deep nesting", () => inspectRefuses("deep", rawSafetensors(`{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":${"[".repeat(200_000)}${"]".repeat(200_000)}}}`), /nesting deeper than/));
  it("rejects a lowercase dtype", () => inspectRefuses("lower-dtype", rawSafetensors(`{${entry("t", "f16", [1], [0, 2])}}`, 2), /tensor "t" has unknown dtype "f16"/));
  it("rejects duplicate names", () =>
    inspectRefuses("dup", rawSafetensors(`{${entry("w", "U8", [1], [0, 1])},${entry("w", "U8", [1], [1, 2])}}`, 2), /tensor "w" is listed twice/));
  it("rejects a shape whose size wraps to zero", () => inspectRefuses("wrap", rawSafetensors(`{${entry("t", "U8", [2 ** 32, 2 ** 32], [0, 0])}}`), /overflow/));
  it("rejects a size mismatch", () => inspectRefuses("mismatch", rawSafetensors(`{${entry("t", "F32", [3], [0, 8])}}`, 8), /needs 12/));
  it("rejects overlapping tensors", () =>
    inspectRefuses("overlap", rawSafetensors(`{${entry("a", "U8", [4], [0, 4])},${entry("b", "U8", [4], [2, 6])}}`, 6), /overlap/));
  it("rejects truncated data", () => inspectRefuses("truncated", rawSafetensors(`{${entry("t", "F32", [64], [0, 256])}}`, 100), /past the end of the file/));
  it("rejects trailing bytes", () => inspectRefuses("trailing", rawSafetensors(`{${entry("t", "U8", [4], [0, 4])}}`, 9), /5 trailing bytes/));
  it("rejects nested metadata", () => inspectRefuses("nested-meta", rawSafetensors('{"__metadata__":{"a":{"b":"c"}}}'), /metadata values must be strings/));
  it("rejects a tensor entry that is not an object", () => inspectRefuses("entry-string", rawSafetensors('{"t":"F32"}'), /entry is a JSON string/));
});

describe("--json names the rule a file breaks", () => {
  const cases: [string, Uint8Array, string][] = [
    ["huge-length", rawSafetensors("{}", 0, 2n ** 64n - 1n), "header-too-large"],
    ["overlap", rawSafetensors(`{${entry("a", "U8", [4], [0, 4])},${entry("b", "U8", [4], [2, 6])}}`, 6), "offsets-overlap"],
    ["mismatch", rawSafetensors(`{${entry("t", "F32", [3], [0, 8])}}`, 8), "offsets-size-mismatch"],
  ];
  for (const [name, bytes, rule] of cases) {
    it(`${name}: error.rule is ${rule}, beside the code and the one-line message`, () => {
      const path = join(dir, `json-${name}.safetensors`);
      writeFileSync(path, bytes);
      const run = runCli(["inspect", path, "--json"]);
      expect(run.status).toBe(1);
      const doc = JSON.parse(run.stdout) as { error: { code: string; message: string; rule?: string } };
      expect(doc.error.code).toBe("E_SAFETENSORS");
      expect(doc.error.rule).toBe(rule);
      expect(doc.error.message).toContain(path);
    });
  }
});

describe("inspect accepts valid oddities", () => {
  it("accepts an empty model {} and prints totals", () => {
    const path = join(dir, "empty-model.safetensors");
    writeFileSync(path, rawSafetensors("{}      "));
    const run = runCli(["inspect", path, "--json"]);
    expect(run.status).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.tensors).toEqual([]);
    expect(doc.parameters).toBe(0);
  });
});
