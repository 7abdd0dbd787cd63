/**
 * The zip layer on its own: archives written by torch (the fixtures), by
 * Python's zipfile, by hand with ZIP64 records, and by the in-memory builder.
 */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { locateEntryData, readZipDirectory } from "../../src/pytorch/zip.js";
import { memoryReader, storedZip } from "./build.js";
import { fixture } from "./fixtures.js";

async function entriesOf(bytes: Uint8Array) {
  const read = memoryReader(bytes);
  const entries = await readZipDirectory(read, bytes.length, "mem.zip");
  return Promise.all(
    entries.map(async (e) => {
      const start = await locateEntryData(read, bytes.length, "mem.zip", e);
      return { name: e.name, data: bytes.subarray(start, start + e.uncompressedSize), start };
    }),
  );
}

describe("readZipDirectory", () => {
  it("reads torch.save's layout: data descriptors, sizes in the central directory, 64-byte aligned data", async () => {
    const bytes = new Uint8Array(await readFile(fixture("views.bin")));
    const entries = await entriesOf(bytes);
    expect(entries[0]!.name).toBe("views/data.pkl");
    const storages = entries.filter((e) => e.name.startsWith("views/data/"));
    expect(storages.length).toBeGreaterThan(5);
    for (const e of storages) expect(e.start % 64).toBe(0);
    // the pickle entry starts with PROTO 2 and ends with STOP
    expect([...entries[0]!.data.subarray(0, 2)]).toEqual([0x80, 2]);
    expect(entries[0]!.data[entries[0]!.data.length - 1]).toBe(0x2e);
  });

  it("reads the same entries through ZIP64 records (sizes, offsets and counts in ZIP64 fields)", async () => {
    const plain = await entriesOf(new Uint8Array(await readFile(fixture("views.bin"))));
    const zip64 = await entriesOf(new Uint8Array(await readFile(fixture("zip64.bin"))));
    expect(zip64.map((e) => [e.name, e.data])).toEqual(plain.map((e) => [e.name, e.data]));
    const raw = new Uint8Array(await readFile(fixture("zip64.bin")));
    const tail = new DataView(raw.buffer, raw.byteOffset + raw.length - 22, 22);
    expect(tail.getUint32(16, true)).toBe(0xffffffff); // the end record really is saturated
  });

  it("reads an archive with a trailing comment", async () => {
    const zip = storedZip([{ name: "a/data.pkl", data: new Uint8Array([1, 2, 3]) }]);
    const comment = new TextEncoder().encode("a comment PK\x05\x06 with a fake signature");
    const withComment = new Uint8Array(zip.length + comment.length);
    withComment.set(zip);
    withComment.set(comment, zip.length);
    new DataView(withComment.buffer).setUint16(zip.length - 2, comment.length, true);
    const entries = await entriesOf(withComment);
    expect(entries.map((e) => [e.name, [...e.data]])).toEqual([["a/data.pkl", [1, 2, 3]]]);
  });
});
