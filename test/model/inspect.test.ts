import { describe, expect, it } from "vitest";
import { formatInspectReport, inspectModel } from "../../src/model/inspect.js";
import { hasRealdata, realPath } from "../helpers/realdata.js";

describe.skipIf(!hasRealdata)("inspectModel", () => {
  it("lists the SafeTensors.jl dtypes file: 36 tensors, 12 dtypes, totals", async () => {
    const r = await inspectModel(realPath("safetensors-jl-dtypes/non_sharded/model.with_metadata.safetensors"));
    expect(r.tensors).toHaveLength(36);
    expect(Object.keys(r.totals.byDtype).sort()).toEqual(["BF16", "BOOL", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2", "I16", "I32", "I64", "I8", "U8"]);
    // each dtype has shapes [3], [3,5], [3,5,7]: 3 + 15 + 105 elements
    for (const total of Object.values(r.totals.byDtype)) expect(total?.parameters).toBe(123);
    expect(r.parameters).toBe(12 * 123);
    expect(r.metadata).toEqual({ "model.with_metadata.safetensors": { test: "metadata", version: "2.2" } });
  });

  it("counts tiny-llama's parameters and bytes (index total_size 316032 = bytes)", async () => {
    const r = await inspectModel(realPath("tiny-llama-bf16/sharded"));
    expect(r.totals.bytes).toBe(316032);
    expect(r.parameters).toBe(316032 / 2);
    expect(r.files).toHaveLength(2);
    expect(r.tensors.find((t) => t.name === "model.norm.weight")).toEqual({
      name: "model.norm.weight", dtype: "BF16", shape: [64], bytes: 128, file: "model-00002-of-00002.safetensors",
    });
    const report = formatInspectReport(r);
    expect(report.some((line) => /^model\.norm\.weight\s+BF16\s+\[64\]\s+128\s+model-00002-of-00002\.safetensors$/.test(line))).toBe(true);
    expect(report.some((line) => /^total\s+21\s+158,016\s+316,032/.test(line))).toBe(true);
  });
});
