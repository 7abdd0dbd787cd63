import { describe, expect, it } from "vitest";
import { SafetensorsError } from "../../src/errors.js";
import { parseHeader } from "../../src/safetensors/header.js";
import { SafetensorsWriter, type ByteSink } from "../../src/safetensors/writer.js";

class MemorySink implements ByteSink {
  parts: Uint8Array[] = [];
  async write(bytes: Uint8Array): Promise<void> {
    this.parts.push(bytes.slice());
  }
  get bytes(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

describe("SafetensorsWriter", () => {
  it("writes a file the parser accepts, tensors in header order", async () => {
    const sink = new MemorySink();
    const writer = SafetensorsWriter.create(sink, "out.safetensors", [
      { name: "small", dtype: "U8", shape: [3] },
      { name: "big", dtype: "F32", shape: [2] },
    ], { format: "pt" });
    expect(writer.tensors.map((t) => t.name)).toEqual(["big", "small"]);
    await writer.writeTensor("big", [new Uint8Array(4), new Uint8Array(4)]);
    await writer.writeTensor("small", [new Uint8Array([1, 2, 3])]);
    await writer.finish();
    const bytes = sink.bytes;
    expect(bytes.length).toBe(writer.fileSize);
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = parseHeader("out", bytes.subarray(8, 8 + n), bytes.length);
    expect(header.metadata).toEqual({ format: "pt" });
  });

  it("refuses tensors out of order, short or long", async () => {
    const make = () => SafetensorsWriter.create(new MemorySink(), "out", [{ name: "a", dtype: "U8", shape: [2] }, { name: "b", dtype: "U8", shape: [2] }]);
    await expect(make().writeTensor("b", [new Uint8Array(2)])).rejects.toMatchObject({ rule: "write-out-of-order", message: expect.stringMatching(/out of order/) });
    await expect(make().writeTensor("a", [new Uint8Array(1)])).rejects.toMatchObject({ rule: "write-length-mismatch", message: expect.stringMatching(/got 1 bytes, expected 2/) });
    await expect(make().writeTensor("a", [new Uint8Array(3)])).rejects.toMatchObject({ rule: "write-length-mismatch", message: expect.stringMatching(/more than its 2 bytes/) });
    const w = make();
    await w.writeTensor("a", [new Uint8Array(2)]);
    await expect(w.finish()).rejects.toThrow(SafetensorsError);
  });

  it("writes a publisher's header verbatim, and validates it first", async () => {
    const text = '{"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}';
    const sink = new MemorySink();
    const w = SafetensorsWriter.verbatim(sink, "out", text);
    expect(w.tensors.map((t) => t.name)).toEqual(["b", "a"]);
    await w.writeTensor("b", [new Uint8Array([9])]);
    await w.writeTensor("a", [new Uint8Array([8])]);
    await w.finish();
    expect(new TextDecoder().decode(sink.bytes.subarray(8, 8 + text.length))).toBe(text);
    expect(() => SafetensorsWriter.verbatim(sink, "out", '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,1]}}')).toThrow(expect.objectContaining({ rule: "offsets-size-mismatch", message: expect.stringMatching(/needs 2/) }));
  });
});
