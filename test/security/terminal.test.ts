/**
 * Names in a model file are the publisher's text: a tensor named
 * "\u001b[2J..." must not clear the user's screen, a CR must not overwrite
 * the line shown, U+2028 must not break it. Every place the CLI prints such
 * text (inspect's table, summaries, errors, --json) is tested here.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { formatReadError } from "../../src/errors.js";
import { formatInspectReport, type InspectResult } from "../../src/model/inspect.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";
import { writeModel } from "../helpers/finetune.js";
import { buildSafetensors, entry, rawSafetensors } from "../helpers/safetensors-bytes.js";
import { smallTensors } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** What a terminal acts on: C0 controls but none (newline ends our own lines), DEL, C1, line and paragraph separators, bidi overrides. */
// eslint-disable-next-line no-control-regex
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

const EVIL = [
  "clear\u001b[2J\u001b[Hscreen",
  "title\u001b]0;pwned\u0007",
  "over\rwrite",
  "line\u2028separator",
  "c1\u009b31mred",
  "bidi\u202egnp.exe",
  "new\nline",
  "del\u007f",
];

let dir: string;
let evilFile: string;

beforeAll(async () => {
  dir = await makeTempDir();
  evilFile = join(dir, "evil.safetensors");
  writeFileSync(evilFile, buildSafetensors(EVIL.map((name) => ({ name, dtype: "F16", shape: [2] })), { "note\u001b[5m": "blink\u001b[0m\r" }));
});

describe("inspect prints the publisher's names escaped", () => {
  it("escapes ESC, CR, U+2028, C1, bidi and newlines in the table and the metadata", () => {
    const run = runCli(["inspect", evilFile]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).not.toMatch(RAW_CONTROL);
    expect(run.stdout).toContain("clear\\u001b[2J\\u001b[Hscreen");
    expect(run.stdout).toContain("over\\u000dwrite");
    expect(run.stdout).toContain("line\\u2028separator");
    expect(run.stdout).toContain("bidi\\u202egnp.exe");
    // one table row per tensor: no name split a line
    expect(run.stdout.split("\n").filter((l) => /\s+F16\s+\[2\]\s+4$/.test(l))).toHaveLength(EVIL.length);
  });

  it("--json stays valid JSON that decodes to the exact names, with no raw ESC, C1 or U+2028 in its text", () => {
    const run = runCli(["inspect", evilFile, "--json"]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).not.toMatch(RAW_CONTROL);
    const doc = JSON.parse(run.stdout) as { tensors: { name: string }[]; metadata: Record<string, Record<string, string>> };
    expect(doc.tensors.map((t) => t.name).sort()).toEqual([...EVIL].sort());
    expect(doc.metadata["evil.safetensors"]).toEqual({ "note\u001b[5m": "blink\u001b[0m\r" });
  });

  it("formats a table of 150,000 rows (Math.max over spread rows overflowed the stack past about 120,000)", () => {
    const tensors = Array.from({ length: 150_000 }, (_, i) => ({ name: `t${i}`, dtype: "F16" as const, shape: [i % 7], bytes: (i % 7) * 2, file: "model.safetensors" }));
    const result: InspectResult = {
      source: "big", format: "safetensors", files: ["model.safetensors"], indexFile: null, extraFiles: [], tensors,
      totals: { tensors: tensors.length, parameters: 0, bytes: 0, byDtype: {} }, parameters: 0, metadata: {},
    };
    const lines = formatInspectReport(result);
    expect(lines.length).toBeGreaterThan(150_000);
    expect(lines.some((l) => /^t149999\s+F16\s+\[3\]\s+6$/.test(l))).toBe(true);
  });
});

describe("errors print the publisher's names escaped, on one line", () => {
  it("escapes a tensor name in a format error (ESC, CR, newline)", () => {
    const path = join(dir, "bad-dtype.safetensors");
    writeFileSync(path, rawSafetensors(`{${entry("x\u001b[2J\r\nforged: ok", "f16", [1], [0, 2])}}`, 2));
    const run = runCli(["inspect", path]);
    expect(run.status).toBe(1);
    const line = oneErrorLine(run);
    expect(line).toContain('tensor "x\\u001b[2J\\u000d\\u000aforged: ok" has unknown dtype');
    expect(run.stderr).not.toMatch(RAW_CONTROL);
  });

  it("--json puts a valid error document on stdout with the name escaped, and one line on stderr", () => {
    const path = join(dir, "bad-dtype-json.safetensors");
    writeFileSync(path, rawSafetensors(`{${entry("y\u2028\u009b\u001b]0;t\u0007", "f16", [1], [0, 2])}}`, 2));
    const run = runCli(["inspect", path, "--json"]);
    expect(run.status).toBe(1);
    oneErrorLine(run);
    expect(run.stdout).not.toMatch(RAW_CONTROL);
    expect(run.stderr).not.toMatch(RAW_CONTROL);
    const doc = JSON.parse(run.stdout) as { error: { code: string; message: string } };
    expect(doc.error.code).toBe("E_SAFETENSORS");
    expect(doc.error.message).toContain('tensor "y\\u2028\\u009b\\u001b]0;t\\u0007"');
  });

  it("formatReadError escapes control characters in the path and the tensor name for any caller", () => {
    const message = formatReadError("/models/a\u001b[2Jb.safetensors", "is broken", "t\r\n\u2028");
    expect(message).toBe('Failed to read /models/a\\u001b[2Jb.safetensors: tensor "t\\u000d\\u000a\\u2028" is broken');
  });

  it("escapes names in a summary: make-delta's list of dropped base tensors", async () => {
    const work = await makeTempDir();
    const tensors = smallTensors(8);
    await writeModel(join(work, "base"), [...tensors, { name: "drop\u001b[2J\u2028me", dtype: "F16", shape: [2], data: new Uint8Array(4) }]);
    await writeModel(join(work, "target"), tensors);
    const run = runCli(["--base", join(work, "base"), "--target", join(work, "target"), "--delta", join(work, "delta")], "make-delta");
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain("drop\\u001b[2J\\u2028me");
    expect(run.stdout).not.toMatch(RAW_CONTROL);
  });
});
