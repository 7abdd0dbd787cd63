import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { REAL_FILES, hasRealdata, realPath } from "../helpers/realdata.js";

describe.skipIf(!hasRealdata)("delta-weights inspect", () => {
  for (const real of REAL_FILES) {
    it(`--json describes ${real.path} as PROVENANCE.md does`, () => {
      const run = runCli(["inspect", realPath(real.path), "--json"]);
      expect(run.status).toBe(0);
      expect(run.stderr).toBe("");
      const doc = JSON.parse(run.stdout);
      expect(doc.tensors).toHaveLength(real.tensors);
      expect(doc.tensors[0]).toMatchObject({ ...real.first, file: real.path.split("/").pop() });
      const counts: Record<string, number> = {};
      for (const [dtype, total] of Object.entries(doc.totals.byDtype)) counts[dtype] = (total as { tensors: number }).tensors;
      expect(counts).toEqual(real.dtypes);
      const dataBytes = real.size - 8 - real.headerLength;
      expect(doc.totals.bytes).toBe(dataBytes);
      const metadata = Object.values(doc.metadata)[0] ?? null;
      expect(metadata).toEqual(real.metadata);
      expect(typeof doc.parameters).toBe("number");
    });
  }

  it("prints an aligned table, totals by dtype, parameters and metadata", () => {
    const run = runCli(["inspect", realPath("campello-tiny-llama-f32/test_tensors.safetensors")]);
    expect(run.status).toBe(0);
    const lines = run.stdout.split("\n");
    expect(lines).toContain("tensor  dtype  shape   bytes");
    expect(lines).toContain("weight  F32    [2, 3]     24");
    expect(lines).toContain("flags   U8     [3]         3");
    expect(lines.some((l) => /^total\s+4\s+15\s+47/.test(l))).toBe(true);
    expect(lines).toContain("parameters: 15");
    expect(lines).toContain('metadata: {"format":"campello_llm_test"}');
  });

  it("inspects a sharded directory with a file column", () => {
    const run = runCli(["inspect", realPath("safetensors-jl-dtypes/sharded")]);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/6 weight files \(index model\.safetensors\.index\.json\)/);
    expect(run.stdout).toMatch(/bfloat16_357\s+BF16\s+\[3, 5, 7\]\s+210\s+model-00006-of-00006\.safetensors/);
  });

  it("fails with exit 1 and one line for a path that does not exist", () => {
    const run = runCli(["inspect", "/nonexistent/model"]);
    expect(run.status).toBe(1);
    expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(run.stderr).toMatch(/^error: .*\/nonexistent\/model/);
  });

  it("fails with exit 2 on a usage error", () => {
    expect(runCli(["inspect"]).status).toBe(2);
  });
});
