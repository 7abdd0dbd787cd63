import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { OUTPUT_OPTION_FLAGS, type OutputOption } from "../../src/formats/output-format.js";
import { SAFETENSORS_OUTPUT } from "../../src/formats/outputs/safetensors.js";
import { PYTORCH_OUTPUT } from "../../src/formats/outputs/pytorch.js";
import { parseHeaderJson } from "../../src/safetensors/header.js";
import { chooseOutputFormat, OUTPUT_FORMATS, OUTPUT_FORMAT_NAMES, outputFormatNamed, refuseUnacceptedOutputOptions } from "../../src/model/output-formats.js";

/** Collects a file's bytes. */
function collect(): { write(bytes: Uint8Array): Promise<void>; bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    write: async (bytes) => void parts.push(bytes.slice()),
    bytes: () => {
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    },
  };
}

describe("output format registry", () => {
  it("names each format once, the default first, and --format's choices are the registry's names", () => {
    expect(OUTPUT_FORMAT_NAMES).toEqual(["safetensors", "pytorch", "gguf", "meta"]);
    expect(new Set(OUTPUT_FORMAT_NAMES).size).toBe(OUTPUT_FORMATS.length);
    expect(outputFormatNamed(undefined)).toBe(SAFETENSORS_OUTPUT);
    for (const f of OUTPUT_FORMATS) expect(outputFormatNamed(f.name)).toBe(f);
    expect(() => outputFormatNamed("onnx")).toThrow(UsageError);
  });

  it("no file name is claimed by two formats", () => {
    for (const name of ["m.safetensors", "M.SAFETENSORS", "pytorch_model.bin", "consolidated.00.pth", "x.pt", "m.gguf", "m.GGUF", "out"]) {
      expect(OUTPUT_FORMATS.filter((f) => f.claimsFile(name)).length, name).toBeLessThanOrEqual(1);
    }
  });

  it("chooses by OUT's extension, else --format, else safetensors; refuses a contradiction", () => {
    expect(chooseOutputFormat("out/model.bin", undefined).name).toBe("pytorch");
    expect(chooseOutputFormat("out/model.pth", undefined).name).toBe("pytorch");
    expect(chooseOutputFormat("out/m.gguf", undefined).name).toBe("gguf");
    expect(chooseOutputFormat("out/m.safetensors", undefined).name).toBe("safetensors");
    expect(chooseOutputFormat("out-dir", undefined).name).toBe("safetensors");
    expect(chooseOutputFormat("out-dir", "gguf").name).toBe("gguf");
    expect(() => chooseOutputFormat("x.bin", "safetensors")).toThrow(/--format safetensors cannot write x\.bin: its extension names the pytorch format/);
  });

  it("every option is refused by a format that does not take it, and taken by at least one", () => {
    const given: Record<OutputOption, unknown> = { maxShardBytes: 1, byteorderRecord: true, outtype: "f16", modelName: "m", numShards: 2 };
    for (const option of Object.keys(OUTPUT_OPTION_FLAGS) as OutputOption[]) {
      expect(OUTPUT_FORMATS.some((f) => f.accepts.includes(option)), option).toBe(true);
      for (const f of OUTPUT_FORMATS) {
        const check = () => refuseUnacceptedOutputOptions(f, { [option]: given[option] });
        if (f.accepts.includes(option)) expect(check).not.toThrow();
        else expect(check, `${f.name} ${option}`).toThrow(UsageError);
      }
    }
    expect(() => refuseUnacceptedOutputOptions(SAFETENSORS_OUTPUT, { byteorderRecord: true })).toThrow("--byteorder-record is for PyTorch output (--format pytorch), not safetensors");
    // A flag set to false asks for nothing (a library caller passing its default).
    expect(() => refuseUnacceptedOutputOptions(SAFETENSORS_OUTPUT, { byteorderRecord: false })).not.toThrow();
    expect(() => refuseUnacceptedOutputOptions(outputFormatNamed("gguf"), { maxShardBytes: 5 })).toThrow("--max-shard-size does not apply to GGUF output: it is one file");
  });

  it("tensor-file formats name their files as save_pretrained does, from safetensors' shard names", () => {
    expect(SAFETENSORS_OUTPUT.shardName("model-00001-of-00002.safetensors")).toBe("model-00001-of-00002.safetensors");
    expect(PYTORCH_OUTPUT.shardName("model-00001-of-00002.safetensors")).toBe("pytorch_model-00001-of-00002.bin");
    expect(PYTORCH_OUTPUT.shardName(SAFETENSORS_OUTPUT.singleFile)).toBe(PYTORCH_OUTPUT.singleFile);
    expect(SAFETENSORS_OUTPUT.fileNameFor("pytorch_model-00002-of-00003.bin")).toBe("model-00002-of-00003.safetensors");
    expect(SAFETENSORS_OUTPUT.fileNameFor("pytorch_model.bin")).toBe("model.safetensors");
    expect(SAFETENSORS_OUTPUT.fileNameFor("sub/consolidated.00.pth")).toBe("consolidated.00.safetensors");
  });

  it("safetensors' layout is the file create writes, byte for byte, and verbatim writes exactly that header", async () => {
    const tensors = [{ name: "b", dtype: "F16" as const, shape: [2] }, { name: "a", dtype: "F32" as const, shape: [1, 2] }];
    const layout = SAFETENSORS_OUTPUT.layout("t.safetensors", tensors, [["format", "pt"]]);
    const created = collect();
    const writer = SAFETENSORS_OUTPUT.create(created, "t.safetensors", tensors, { metadata: [["format", "pt"]] });
    for (const t of writer.tensors) await writer.writeTensor(t.name, [new Uint8Array(t.end - t.begin).fill(t.name.charCodeAt(0))]);
    await writer.finish();
    const bytes = created.bytes();
    expect(bytes.length).toBe(layout.size);
    expect(writer.fileSize).toBe(layout.size);
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const headerBytes = bytes.subarray(8, 8 + headerLength);
    expect(new TextDecoder().decode(headerBytes)).toBe(layout.headerText);
    expect(parseHeaderJson("t.safetensors", headerBytes).tensors).toEqual(layout.tensors);

    const again = collect();
    const exact = SAFETENSORS_OUTPUT.verbatim(again, "u.safetensors", layout.headerText);
    expect(new TextDecoder().decode(exact.headerBytes.subarray(8))).toBe(layout.headerText);
    for (const t of exact.tensors) await exact.writeTensor(t.name, [new Uint8Array(t.end - t.begin).fill(t.name.charCodeAt(0))]);
    await exact.finish();
    expect(again.bytes()).toEqual(bytes);
  });
});
