/**
 * Our checkpoint writer against real torch.save: every file in
 * test/fixtures/pytorch-writer was saved by torch 1.13
 * (scripts/make-pytorch-writer-fixtures.py); each is rebuilt from the
 * tensors our reader gets back from it, in the same order and container,
 * and must hash to the same SHA-256 as torch's file, whole.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { openPytorchFile } from "../../src/formats/registry.js";
import { PytorchWriter, archiveNameFor } from "../../src/pytorch/writer.js";
import { readZipDirectory } from "../../src/pytorch/zip.js";
import { dataDescriptor, planZip, zipTrailer, type ZipRecordPlan } from "../../src/pytorch/zip-writer.js";
import type { WeightFile } from "../../src/tensors.js";

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/pytorch-writer");
const expected = JSON.parse(readFileSync(path.join(dir, "expected.json"), "utf8")) as {
  torch: string;
  files: Record<string, { container: "dict" | "OrderedDict"; tensors: number; sha256: string; size: number }>;
};

/** A sink that keeps everything (the fixtures are small) and counts its writes. */
class MemorySink {
  readonly parts: Uint8Array[] = [];
  async write(bytes: Uint8Array): Promise<void> {
    this.parts.push(bytes.slice());
  }
  bytes(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

async function rebuild(file: WeightFile, name: string, container: "dict" | "OrderedDict", chunkBytes: number): Promise<{ bytes: Uint8Array; writer: PytorchWriter }> {
  const sink = new MemorySink();
  const writer = new PytorchWriter(sink, name, file.tensors, { container });
  for (const t of writer.tensors) await writer.writeTensor(t.name, file.readTensor(t.name, { chunkBytes }));
  await writer.finish();
  return { bytes: sink.bytes(), writer };
}

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

describe("PytorchWriter: byte-identical to torch.save", () => {
  it("the fixtures were written by Debian's torch 1.13", () => {
    expect(expected.torch).toMatch(/^1\.13\./);
  });

  for (const [name, want] of Object.entries(expected.files)) {
    it(`${name} (${want.container}, ${want.tensors} tensors)`, async () => {
      const file = await openPytorchFile(path.join(dir, name));
      try {
        expect(file.tensors.length).toBe(want.tensors);
        // Small chunks: every tensor crosses chunk boundaries, so the CRC-32 runs over several writes.
        const { bytes, writer } = await rebuild(file, name, want.container, 7);
        expect(writer.fileSize).toBe(want.size);
        expect(bytes.length).toBe(want.size);
        expect(sha256(bytes)).toBe(want.sha256);
        expect(sha256(writer.headerBytes)).toBe(sha256(bytes.subarray(0, writer.headerBytes.length)));
        for (const t of writer.tensors) expect(t.end - t.begin).toBe(file.tensors.find((s) => s.name === t.name)!.byteLength);
      } finally {
        await file.close();
      }
    });
  }

  it("the other container gives another file: the choice is not ignored", async () => {
    const file = await openPytorchFile(path.join(dir, "ordered.bin"));
    try {
      const { bytes } = await rebuild(file, "ordered.bin", "dict", 1 << 20);
      expect(sha256(bytes)).not.toBe(expected.files["ordered.bin"]!.sha256);
    } finally {
      await file.close();
    }
  });
});

describe("archive names", () => {
  it("are the file name up to its last dot, as PyTorchStreamWriter derives them", () => {
    expect(archiveNameFor("out/pytorch_model-00001-of-00002.bin")).toBe("pytorch_model-00001-of-00002");
    expect(archiveNameFor("consolidated.00.pth")).toBe("consolidated.00");
    expect(archiveNameFor("C:\\models\\model.bin")).toBe("model");
    expect(archiveNameFor("weights")).toBe("weights");
  });

  it("an empty one is refused before anything is written", () => {
    expect(() => new PytorchWriter(new MemorySink(), "dir/.bin", [])).toThrow(/archive name/);
  });
});

describe("PytorchWriter refuses what torch.save would not have written", () => {
  it("a dtype torch 1.13 cannot store", () => {
    expect(() => new PytorchWriter(new MemorySink(), "x.bin", [{ name: "w", dtype: "U16", shape: [2] }])).toThrow(/tensor "w" is U16/);
  });

  it("a tensor listed twice", () => {
    expect(() => new PytorchWriter(new MemorySink(), "x.bin", [{ name: "w", dtype: "F16", shape: [2] }, { name: "w", dtype: "F16", shape: [2] }])).toThrow(/listed twice/);
  });

  it("a short or long stream, out of order, or missing tensor", async () => {
    const specs = [{ name: "a", dtype: "F16" as const, shape: [2] }, { name: "b", dtype: "F32" as const, shape: [1] }];
    const short = new PytorchWriter(new MemorySink(), "x.bin", specs);
    await expect(short.writeTensor("a", [new Uint8Array(3)])).rejects.toThrow(/got 3 bytes, expected 4/);
    const long = new PytorchWriter(new MemorySink(), "x.bin", specs);
    await expect(long.writeTensor("a", [new Uint8Array(5)])).rejects.toThrow(/more than its 4 bytes/);
    const order = new PytorchWriter(new MemorySink(), "x.bin", specs);
    await expect(order.writeTensor("b", [new Uint8Array(4)])).rejects.toThrow(/"a" comes next/);
    const missing = new PytorchWriter(new MemorySink(), "x.bin", specs);
    await missing.writeTensor("a", [new Uint8Array(4)]);
    await expect(missing.finish()).rejects.toThrow(/"b" was never written/);
  });
});

describe("the byteorder record (torch >= 2.1)", () => {
  it("comes right after data.pkl, holds \"little\", and the archive still reads back", async () => {
    const sink = new MemorySink();
    const writer = new PytorchWriter(sink, "m.bin", [{ name: "w", dtype: "F16", shape: [3] }], { byteorderRecord: true });
    await writer.writeTensor("w", [new Uint8Array([1, 2, 3, 4, 5, 6])]);
    await writer.finish();
    const bytes = sink.bytes();
    const entries = await readZipDirectory(async (at, n) => bytes.subarray(at, at + n), bytes.length, "m.bin");
    expect(entries.map((e) => e.name)).toEqual(["m/data.pkl", "m/byteorder", "m/data/0", "m/version"]);
    expect(Buffer.from(bytes.subarray(entries[1]!.localHeaderOffset)).includes(Buffer.from("little"))).toBe(true);
  });
});

describe("zip64, past 4 GiB (laid out, not written: the rules miniz follows)", () => {
  const GiB = 2 ** 30;
  const plan = planZip([
    { name: "a/data.pkl", size: 100 },
    { name: "a/data/0", size: 5 * GiB },
    { name: "a/data/1", size: 10 },
    { name: "a/data/2", size: 0 },
    { name: "a/version", size: 2 },
  ]);
  const [pkl, big, after, empty] = plan.records as [ZipRecordPlan, ZipRecordPlan, ZipRecordPlan, ZipRecordPlan];
  const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const extraOf = (record: ZipRecordPlan) => record.localHeader.subarray(30 + new TextEncoder().encode(record.name).length);

  it("every record's data starts on a 64-byte boundary", () => {
    for (const r of plan.records) expect(r.dataOffset % 64).toBe(0);
  });

  it("a record of 4 GiB or more: a local zip64 field with its size and a compressed size of 0, then FB padding; a 24-byte descriptor", () => {
    const extra = view(extraOf(big));
    expect(extra.getUint16(0, true)).toBe(1);
    expect(extra.getUint16(2, true)).toBe(16);
    expect(Number(extra.getBigUint64(4, true))).toBe(5 * GiB);
    expect(Number(extra.getBigUint64(12, true))).toBe(0);
    expect(String.fromCharCode(extra.getUint8(20), extra.getUint8(21))).toBe("FB");
    expect(big.descriptorSize).toBe(24);
    expect(pkl.descriptorSize).toBe(16);
    expect(extraOf(pkl)[0]).toBe(0x46); // "FB" only
  });

  it("a header past 4 GiB: a local zip64 field with only the offset, and a 24-byte descriptor even for a small record", () => {
    expect(after.headerOffset).toBeGreaterThan(0xffffffff);
    const extra = view(extraOf(after));
    expect(extra.getUint16(2, true)).toBe(8);
    expect(Number(extra.getBigUint64(4, true))).toBe(after.headerOffset);
    expect(after.descriptorSize).toBe(24);
    expect(empty.descriptorSize).toBe(0);
    const d = view(dataDescriptor(after, 0x12345678));
    expect(d.getUint32(4, true)).toBe(0x12345678);
    expect(Number(d.getBigUint64(8, true))).toBe(10);
    expect(Number(d.getBigUint64(16, true))).toBe(10);
  });

  it("the central directory saturates the 32-bit fields and carries the zip64 values; the end records point at it", () => {
    const trailer = zipTrailer(plan, plan.records.map(() => 0));
    expect(trailer.length).toBe(plan.fileSize - plan.centralOffset);
    const t = view(trailer);
    // Entry 1 (5 GiB at a small offset): both sizes 0xFFFFFFFF, zip64 field with size, size.
    let at = 46 + "a/data.pkl".length;
    expect(t.getUint32(at, true)).toBe(0x02014b50);
    expect(t.getUint32(at + 20, true)).toBe(0xffffffff);
    expect(t.getUint32(at + 24, true)).toBe(0xffffffff);
    expect(t.getUint32(at + 42, true)).toBe(big.headerOffset);
    expect(t.getUint16(at + 30, true)).toBe(20);
    expect(Number(t.getBigUint64(at + 46 + "a/data/0".length + 4, true))).toBe(5 * GiB);
    expect(Number(t.getBigUint64(at + 46 + "a/data/0".length + 12, true))).toBe(5 * GiB);
    // Entry 2 (small, past 4 GiB): sizes as they are, offset saturated and in the zip64 field.
    at += 46 + "a/data/0".length + 20;
    expect(t.getUint32(at + 20, true)).toBe(10);
    expect(t.getUint32(at + 42, true)).toBe(0xffffffff);
    expect(Number(t.getBigUint64(at + 46 + "a/data/1".length + 4, true))).toBe(after.headerOffset);
    const end = trailer.length - 22;
    expect(t.getUint32(end, true)).toBe(0x06054b50);
    expect(t.getUint32(end + 16, true)).toBe(0xffffffff);
    const zip64End = end - 20 - 56;
    expect(t.getUint32(zip64End, true)).toBe(0x06064b50);
    expect(Number(t.getBigUint64(zip64End + 48, true))).toBe(plan.centralOffset);
    expect(Number(t.getBigUint64(end - 20 + 8, true))).toBe(plan.centralOffset + zip64End);
  });
});
