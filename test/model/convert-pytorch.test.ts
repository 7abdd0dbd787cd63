/**
 * convert --format pytorch (or OUT ending in .bin / .pt / .pth): files
 * byte-identical to what torch 1.13's torch.save wrote for the same state
 * dicts (test/fixtures/pytorch-writer, made by
 * scripts/make-pytorch-writer-fixtures.py), shards and index named and laid
 * out as transformers' save_pretrained writes them.
 */
import { createHash } from "node:crypto";
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { convertModel } from "../../src/model/convert.js";
import { openModel } from "../../src/model/open-model.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const fixtures = fileURLToPath(new URL("../fixtures/pytorch-writer/", import.meta.url));
const expected = JSON.parse(readFileSync(join(fixtures, "expected.json"), "utf8")) as {
  files: Record<string, { sha256: string; size: number }>;
  sharded: { max_shard_size: number };
};
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("convert to a PyTorch checkpoint", () => {
  for (const name of ["mixed.bin", "dict-1001.bin", "consolidated.00.pth"]) {
    it(`${name} -> ${name}: torch.save's bytes (the extension asks for the format)`, async () => {
      const dir = await makeTempDir();
      const out = join(dir, name);
      const result = await convertModel(join(fixtures, name), out);
      expect(sha256(out)).toBe(expected.files[name]!.sha256);
      expect(result.files).toEqual([{ path: name, size: expected.files[name]!.size, sha256: expected.files[name]!.sha256 }]);
      expect(readdirSync(dir)).toEqual([name]);
    });
  }

  it("safetensors -> .bin -> safetensors gives back the same tensors", async () => {
    const dir = await makeTempDir();
    await convertModel(join(fixtures, "mixed.bin"), join(dir, "a.safetensors"));
    await convertModel(join(dir, "a.safetensors"), join(dir, "b.pt"));
    await convertModel(join(dir, "b.pt"), join(dir, "c.safetensors"));
    expect(sha256(join(dir, "c.safetensors"))).toBe(sha256(join(dir, "a.safetensors")));
  });

  it("a sharded model: save_pretrained's shard names and index, every file byte-identical", async () => {
    const dir = await makeTempDir();
    const out = join(dir, "model");
    const result = await convertModel(join(fixtures, "sharded"), out, { format: "pytorch", maxShardBytes: expected.sharded.max_shard_size });
    const names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"];
    expect(result.files.map((f) => f.path)).toEqual(names);
    for (const name of names) expect(sha256(join(out, name)), name).toBe(sha256(join(fixtures, "sharded", name)));
    const model = await openModel(out);
    try {
      expect(model.format).toBe("pytorch");
      expect(model.tensors.size).toBe(21);
    } finally {
      await model.close();
    }
  });

  it("one shard is pytorch_model.bin", async () => {
    const dir = await makeTempDir();
    const out = join(dir, "model");
    await convertModel(join(fixtures, "sharded"), out, { format: "pytorch" });
    expect(readdirSync(out).filter((n) => !n.startsWith("."))).toEqual(["pytorch_model.bin"]);
  });

  it("--byteorder-record writes another file, which still reads back", async () => {
    const dir = await makeTempDir();
    await convertModel(join(fixtures, "mixed.bin"), join(dir, "mixed.bin"), { byteorderRecord: true });
    expect(sha256(join(dir, "mixed.bin"))).not.toBe(expected.files["mixed.bin"]!.sha256);
    // Read back and written without the record (under the same name: the archive is named after the file), it is torch's file again.
    const again = await makeTempDir();
    await convertModel(join(dir, "mixed.bin"), join(again, "mixed.bin"));
    expect(sha256(join(again, "mixed.bin"))).toBe(expected.files["mixed.bin"]!.sha256);
  });

  it("refuses a format OUT's extension contradicts, and --byteorder-record for safetensors", async () => {
    const dir = await makeTempDir();
    await expect(convertModel(join(fixtures, "mixed.bin"), join(dir, "x.safetensors"), { format: "pytorch" })).rejects.toThrow(UsageError);
    await expect(convertModel(join(fixtures, "mixed.bin"), join(dir, "x.bin"), { format: "safetensors" })).rejects.toThrow(/extension names the pytorch format/);
    await expect(convertModel(join(fixtures, "mixed.bin"), join(dir, "x.safetensors"), { byteorderRecord: true })).rejects.toThrow(/--byteorder-record/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("refuses a dtype torch 1.13 cannot store, leaving no file", async () => {
    const dir = await makeTempDir();
    copyFileSync(join(fixtures, "mixed.bin"), join(dir, "in.bin"));
    const src = join(dir, "u16.safetensors");
    // A safetensors file with one U16 tensor.
    const header = new TextEncoder().encode(JSON.stringify({ w: { dtype: "U16", shape: [2], data_offsets: [0, 4] } }));
    const bytes = new Uint8Array(8 + header.length + 4);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
    bytes.set(header, 8);
    writeFileSync(src, bytes);
    await expect(convertModel(src, join(dir, "out.bin"))).rejects.toThrow(/tensor "w" is U16, a dtype torch 1\.13 cannot store/);
    expect(readdirSync(dir).sort()).toEqual(["in.bin", "u16.safetensors"]);
  });
});
