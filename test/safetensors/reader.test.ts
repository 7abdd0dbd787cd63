import { createHash } from "node:crypto";
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SafetensorsError } from "../../src/errors.js";
import { openSafetensorsFile } from "../../src/formats/registry.js";
import { readSafetensors } from "../../src/safetensors/reader.js";
import type { RandomAccess } from "../../src/tensors.js";
import { decodeElements } from "../helpers/decode.js";
import { REAL_FILES, REFERENCE_VALUES, hasRealdata, realPath } from "../helpers/realdata.js";
import { buildSafetensors, patternBytes } from "../helpers/safetensors-bytes.js";
import { makeTempDir } from "../helpers/temp-dir.js";

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<{ bytes: Uint8Array; sizes: number[] }> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return { bytes: Buffer.concat(parts), sizes: parts.map((p) => p.length) };
}

describe.skipIf(!hasRealdata)("reading the real files", () => {
  for (const real of REAL_FILES) {
    it(`lists ${real.path} as PROVENANCE.md records it`, async () => {
      const file = await openSafetensorsFile(realPath(real.path));
      try {
        expect(file.size).toBe(real.size);
        expect(file.header.headerLength).toBe(real.headerLength);
        expect(file.tensors).toHaveLength(real.tensors);
        const counts: Record<string, number> = {};
        for (const t of file.tensors) counts[t.dtype] = (counts[t.dtype] ?? 0) + 1;
        expect(counts).toEqual(real.dtypes);
        expect(file.metadata === null ? null : { ...file.metadata }).toEqual(real.metadata);
        const first = file.tensors[0];
        expect({ name: first?.name, dtype: first?.dtype, shape: first?.shape }).toEqual(real.first);
      } finally {
        await file.close();
      }
    });

    it(`serves every tensor of ${real.path} so that header + tensors rebuild the file's sha256`, async () => {
      const file = await openSafetensorsFile(realPath(real.path));
      try {
        const hash = createHash("sha256").update(readFileSync(realPath(real.path)).subarray(0, file.header.dataStart));
        for (const t of file.tensors) {
          for await (const chunk of file.readTensor(t.name, { chunkBytes: 4096 })) hash.update(chunk);
        }
        expect(hash.digest("hex")).toBe(real.sha256);
      } finally {
        await file.close();
      }
    });
  }

  for (const ref of REFERENCE_VALUES) {
    it(`decodes ${ref.path} :: ${ref.tensor} to the reference values`, async () => {
      const file = await openSafetensorsFile(realPath(ref.path));
      try {
        const info = file.tensors.find((t) => t.name === ref.tensor);
        expect(info?.dtype).toBe(ref.dtype);
        expect(info?.shape).toEqual(ref.shape);
        const elementBytes = (info?.byteLength ?? 0) / ref.shape.reduce((a, b) => a * b, 1);
        const { bytes } = await collect(file.readTensor(ref.tensor, { end: elementBytes * ref.first.length }));
        expect(decodeElements(ref.dtype, bytes, ref.first.length)).toEqual(ref.first);
      } finally {
        await file.close();
      }
    });
  }
});

describe("chunked reads", () => {
  it("yields chunks of at most chunkBytes covering exactly [start, end)", async () => {
    const dir = await makeTempDir();
    const data = patternBytes(4000, 3);
    const path = join(dir, "t.safetensors");
    writeFileSync(path, buildSafetensors([{ name: "w", dtype: "F32", shape: [1000], data }]));
    const file = await openSafetensorsFile(path);
    try {
      const all = await collect(file.readTensor("w", { chunkBytes: 1000 }));
      expect(Buffer.from(all.bytes).equals(Buffer.from(data))).toBe(true);
      expect(all.sizes).toEqual([1000, 1000, 1000, 1000]);

      const part = await collect(file.readTensor("w", { start: 10, end: 2510, chunkBytes: 1024 }));
      expect(Buffer.from(part.bytes).equals(Buffer.from(data.subarray(10, 2510)))).toBe(true);
      expect(Math.max(...part.sizes)).toBeLessThanOrEqual(1024);

      expect((await collect(file.readTensor("w", { start: 7, end: 7 }))).sizes).toEqual([]);
    } finally {
      await file.close();
    }
  });

  it("refuses a range outside the tensor and an unknown tensor", async () => {
    const dir = await makeTempDir();
    const path = join(dir, "t.safetensors");
    writeFileSync(path, buildSafetensors([{ name: "w", dtype: "U8", shape: [10] }]));
    const file = await openSafetensorsFile(path);
    try {
      await expect(collect(file.readTensor("w", { start: 0, end: 11 }))).rejects.toThrow(RangeError);
      await expect(collect(file.readTensor("nope"))).rejects.toThrow(SafetensorsError);
    } finally {
      await file.close();
    }
  });

  it("names the file and tensor when the file is truncated after it was opened", async () => {
    const dir = await makeTempDir();
    const path = join(dir, "t.safetensors");
    writeFileSync(path, buildSafetensors([{ name: "a", dtype: "U8", shape: [100] }, { name: "b", dtype: "U8", shape: [100] }]));
    const file = await openSafetensorsFile(path);
    try {
      truncateSync(path, file.header.dataStart + 150);
      await expect(collect(file.readTensor("b"))).rejects.toMatchObject({ rule: "truncated", message: expect.stringMatching(/t\.safetensors: tensor "b" data ends at byte .* the file was truncated/) });
    } finally {
      await file.close();
    }
  });

  it("reports a missing file as an I/O error naming it", async () => {
    await expect(openSafetensorsFile("/nonexistent/x.safetensors")).rejects.toThrow(/Failed to open \/nonexistent\/x\.safetensors: no such file/);
  });
});

describe("a refused file", () => {
  it("is closed by readSafetensors, which owns its source from the call on (the fix-ups sidecar's descriptor was left to the garbage collector)", async () => {
    const good = buildSafetensors([{ name: "a", dtype: "F32", shape: [2], data: patternBytes(8, 0) }]);
    const bad = good.slice();
    new DataView(bad.buffer).setBigUint64(0, BigInt(bad.length), true); // a header length past the end
    let closed = 0;
    const source: RandomAccess = {
      label: "fixups.safetensors",
      size: bad.length,
      read: async (position, length) => bad.slice(position, position + length),
      close: async () => { closed++; },
    };
    await expect(readSafetensors(source)).rejects.toThrow(SafetensorsError);
    expect(closed).toBe(1);
  });
});
