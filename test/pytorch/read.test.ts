/**
 * Every tensor of every well-formed fixture, read by openPytorchFile, against
 * what torch.load returned for it (name order, dtype, shape, sha256 of the
 * contiguous little-endian bytes), at several chunk sizes and byte ranges.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { openPytorchFile } from "../../src/formats/registry.js";
import { PytorchError } from "../../src/errors.js";
import type { WeightFile } from "../../src/tensors.js";
import { dtypeBytes, type DType } from "../../src/dtypes.js";
import { expected, fixture } from "./fixtures.js";

async function readAll(file: WeightFile, name: string, options: { start?: number; end?: number; chunkBytes?: number } = {}): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of file.readTensor(name, options)) chunks.push(chunk);
  return chunks;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

describe("openPytorchFile against torch.load", () => {
  for (const [name, tensors] of Object.entries(expected.files)) {
    it(`reads ${name} exactly as torch.load does`, async () => {
      const file = await openPytorchFile(fixture(name));
      try {
        expect(file.metadata).toBeNull();
        expect(file.tensors.map((t) => t.name)).toEqual(tensors.map((t) => t.name));
        for (const want of tensors) {
          const info = file.tensors.find((t) => t.name === want.name)!;
          expect(info.dtype).toBe(want.dtype);
          expect(info.shape).toEqual(want.shape);
          const numel = want.shape.reduce((a, b) => a * b, 1);
          expect(info.byteLength).toBe(numel * dtypeBytes(want.dtype as DType));
          // tiny chunks (one read per byte or element) only where they stay quick
          const sizes = info.byteLength <= 512 ? [undefined, 1, 3, 8, 100] : [undefined, 6, 100, 1000];
          for (const chunkBytes of sizes) {
            const chunks = await readAll(file, want.name, chunkBytes === undefined ? {} : { chunkBytes });
            for (const c of chunks) expect(c.length).toBeLessThanOrEqual(chunkBytes ?? Infinity);
            const bytes = concat(chunks);
            expect(bytes.length, `${want.name} length`).toBe(info.byteLength);
            expect(sha256(bytes), `${want.name} with chunkBytes ${chunkBytes}`).toBe(want.sha256);
          }
        }
      } finally {
        await file.close();
      }
    });
  }
});

describe("byte ranges", () => {
  it("serves any [start, end) of contiguous and strided tensors as a slice of the whole", async () => {
    const file = await openPytorchFile(fixture("views.bin"));
    try {
      for (const { name, byteLength } of file.tensors) {
        const whole = concat(await readAll(file, name));
        const cuts = [0, 1, 2, 5, 7, Math.floor(byteLength / 2), byteLength - 3, byteLength - 1, byteLength].filter((c) => c >= 0 && c <= byteLength);
        for (const start of cuts) {
          for (const end of cuts) {
            if (end < start) continue;
            for (const chunkBytes of byteLength <= 512 ? [3, 64] : [64, 1000]) {
              const part = concat(await readAll(file, name, { start, end, chunkBytes }));
              expect(part, `${name} [${start}, ${end}) by ${chunkBytes}`).toEqual(whole.subarray(start, end));
            }
          }
        }
      }
    } finally {
      await file.close();
    }
  });

  it("yields element-aligned chunks of at most chunkBytes, each a fresh buffer", async () => {
    const file = await openPytorchFile(fixture("views.bin"));
    try {
      const chunks = await readAll(file, "big_transposed", { chunkBytes: 1001 });
      expect(chunks.length).toBeGreaterThan(1);
      for (const c of chunks) {
        expect(c.length).toBeLessThanOrEqual(1001);
        expect(c.length % 4).toBe(0);
      }
      const buffers = new Set(chunks.map((c) => c.buffer));
      expect(buffers.size).toBe(chunks.length);
    } finally {
      await file.close();
    }
  });

  it("refuses ranges outside the tensor and unknown names", async () => {
    const file = await openPytorchFile(fixture("dtypes.bin"));
    try {
      await expect(readAll(file, "f32", { start: 0, end: 61 })).rejects.toThrow(RangeError);
      await expect(readAll(file, "f32", { start: 5, end: 4 })).rejects.toThrow(RangeError);
      await expect(readAll(file, "f32", { chunkBytes: 0 })).rejects.toThrow(RangeError);
      await expect(readAll(file, "nope")).rejects.toThrow(PytorchError);
      await expect(readAll(file, "nope")).rejects.toMatchObject({ rule: "tensor-not-in-file", message: expect.stringMatching(/tensor "nope" is not in this file/) });
    } finally {
      await file.close();
    }
  });
});

describe("state dict shapes", () => {
  it("skips non-tensor values of the dict", async () => {
    const file = await openPytorchFile(fixture("dtypes.bin"));
    try {
      expect(file.tensors.map((t) => t.name)).not.toContain("step");
      expect(file.tensors.find((t) => t.name === "scalar")).toMatchObject({ shape: [], byteLength: 4 });
      expect(file.tensors.find((t) => t.name === "empty")).toMatchObject({ shape: [0, 4], byteLength: 0 });
      expect(await readAll(file, "empty")).toEqual([]);
    } finally {
      await file.close();
    }
  });

  it("unwraps the weights of a training checkpoint saved under \"state_dict\"", async () => {
    const file = await openPytorchFile(fixture("training-checkpoint.bin"));
    try {
      expect(file.tensors.map((t) => t.name)).toContain("model.embed_tokens.weight");
    } finally {
      await file.close();
    }
  });

  it("reads the archive whatever its top folder is named", async () => {
    // buffer-saved.bin was written to a buffer (folder "archive/"), views.bin
    // to a file (folder "views/"); both are checked against torch above.
    const { readFile } = await import("node:fs/promises");
    expect((await readFile(fixture("buffer-saved.bin"))).includes("archive/data.pkl")).toBe(true);
    expect((await readFile(fixture("views.bin"))).includes("views/data.pkl")).toBe(true);
  });

  it("a tensor stream closed halfway stops with an error, never reading a recycled descriptor", async () => {
    const file = await openPytorchFile(fixture("views.bin"));
    const stream = file.readTensor("big_transposed", { chunkBytes: 64 })[Symbol.asyncIterator]();
    expect((await stream.next()).done).toBe(false);
    await file.close();
    await expect(stream.next()).rejects.toMatchObject({ rule: "read-after-close", message: expect.stringMatching(/was read after the file was closed/) });
  });

  it("reads after close fail cleanly", async () => {
    const file = await openPytorchFile(fixture("dtypes.bin"));
    await file.close();
    await expect(readAll(file, "f32")).rejects.toThrow(PytorchError);
  });
});
