/**
 * Forged archives and pickles built in memory, one attack per test: each is
 * refused with a PytorchError naming the rule, before any large allocation.
 */
import { describe, expect, it } from "vitest";
import { readCheckpoint } from "../../src/pytorch/checkpoint.js";
import { PytorchError } from "../../src/errors.js";
import { checkpointZip, memoryReader, P, storedZip, tensorDictPickle } from "../pytorch/build.js";

const FILE = "forged.bin";

async function refused(bytes: Uint8Array, message: RegExp, reads: number[] = []): Promise<void> {
  const promise = readCheckpoint(memoryReader(bytes, reads), bytes.length, FILE);
  await expect(promise).rejects.toThrow(PytorchError);
  await expect(promise).rejects.toThrow(message);
}

const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);
const weight = (over: Partial<Parameters<typeof tensorDictPickle>[0][0]> = {}) =>
  tensorDictPickle([{ name: "weight", storageType: "FloatStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1], ...over }]);

describe("forged zip structures", () => {
  it("rejects an end record whose central directory lies past the end of the file", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint32(zip.length - 6, 0x7fffffff, true);
    await refused(zip, /central directory .* lies past the end of the file/);
  });

  it("rejects a central directory larger than the limit before reading it", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint32(zip.length - 10, 0xfffffff0, true);
    const reads: number[] = [];
    await refused(zip, /central directory of \d+ bytes is larger than the limit/, reads);
    expect(Math.max(...reads)).toBeLessThan(100_000);
  });

  it("rejects an entry count the directory cannot hold", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint16(zip.length - 12, 0xfff0, true);
    await refused(zip, /cannot hold 65520 entries/);
  });

  it("rejects a saturated end record without ZIP64 records", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint32(zip.length - 6, 0xffffffff, true);
    await refused(zip, /needs ZIP64 records/);
  });

  it("rejects two entries with the same name", async () => {
    const zip = storedZip([
      { name: "archive/data.pkl", data: weight() },
      { name: "archive/data/0", data: f32(4) },
      { name: "archive/data/0", data: f32(4) },
    ]);
    await refused(zip, /two entries named "archive\/data\/0"/);
  });

  it("rejects an entry whose size runs past the end of the file", async () => {
    const zip = storedZip([
      { name: "archive/data.pkl", data: weight() },
      { name: "archive/data/0", data: f32(4), centralSize: 1_000_000 },
    ]);
    await refused(zip, /declares 1000000 bytes, more than the whole file|lies past the end of the file/);
  });

  it("rejects a local header whose name differs from the central directory's", async () => {
    const zip = storedZip([{ name: "archive/data.pkl", data: weight(), localName: "archive/data.pkX" }, { name: "archive/data/0", data: f32(4) }]);
    await refused(zip, /local header whose name differs/);
  });

  it("rejects an archive without data.pkl, and one with two", async () => {
    await refused(storedZip([{ name: "archive/other.pkl", data: weight() }]), /without <folder>\/data\.pkl/);
    await refused(
      storedZip([
        { name: "a/data.pkl", data: weight() },
        { name: "b/data.pkl", data: weight() },
      ]),
      /2 data\.pkl entries/,
    );
  });
});

describe("forged pickles", () => {
  it("rejects a storage entry shorter than the storage it claims", async () => {
    await refused(checkpointZip(weight(), { "0": f32(3) }), /storage "0" should hold 4 F32 elements \(16 bytes\) but archive\/data\/0 is 12 bytes/);
  });

  it("rejects a view past its storage through its shape, offset or stride", async () => {
    await refused(checkpointZip(weight({ shape: [5] }), { "0": f32(4) }), /tensor "weight" is a view past its storage/);
    await refused(checkpointZip(weight({ offset: 1 }), { "0": f32(4) }), /tensor "weight" is a view past its storage/);
    await refused(checkpointZip(weight({ shape: [2, 2], strides: [3, 1] }), { "0": f32(4) }), /tensor "weight" is a view past its storage/);
  });

  it("rejects shapes whose size overflows", async () => {
    const pickle = weight({ shape: [2 ** 30, 2 ** 30, 2 ** 30], strides: [0, 0, 0] });
    await refused(checkpointZip(pickle, { "0": f32(4) }), /tensor "weight" has a shape too large to address/);
  });

  it("rejects a storage type that is not a torch dtype storage", async () => {
    await refused(checkpointZip(weight({ storageType: "UntypedStorage" }), { "0": f32(4) }), /torch\.UntypedStorage, which is not allowed/);
  });

  it("rejects calling a storage class", async () => {
    const pickle = P.pickle(P.proto(), P.emptyDict(), P.str("w"), P.global("torch", "FloatStorage"), P.int(4), P.tuple1(), P.reduce(), P.setitem(), P.stop());
    await refused(checkpointZip(pickle), /calls torch\.FloatStorage, which is not allowed/);
  });

  it("rejects BUILD on anything but a dict", async () => {
    const pickle = P.pickle(P.proto(), P.global("collections", "OrderedDict"), P.emptyTuple(), P.emptyTuple(), P.tuple1(), P.build(), P.stop());
    // BUILD applies ((),) to the empty tuple below it: not a dict
    await refused(checkpointZip(pickle), /BUILD to a tuple, which is not allowed/);
    // BUILD on an allowed global itself (the classic way to set attributes on a class)
    const onGlobal = P.pickle(P.proto(), P.global("collections", "OrderedDict"), P.emptyDict(), P.build(), P.stop());
    await refused(checkpointZip(onGlobal), /BUILD to collections\.OrderedDict, which is not allowed/);
  });

  it("rejects persistent ids that are not storage references", async () => {
    const pickle = P.pickle(P.proto(), P.str("module"), P.binpersid(), P.stop());
    await refused(checkpointZip(pickle), /persistent id that is not a \('storage'/);
  });

  it("rejects one storage key used with two dtypes", async () => {
    const pickle = tensorDictPickle([
      { name: "a", storageType: "FloatStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1] },
      { name: "b", storageType: "IntStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1] },
    ]);
    await refused(checkpointZip(pickle, { "0": f32(4) }), /uses storage "0" both as F32 x 4 and as I32 x 4/);
  });

  it("rejects a pickle that is not a dict, and tensors nested deeper than one wrapper", async () => {
    await refused(checkpointZip(P.pickle(P.proto(), P.emptyList(), P.stop())), /holds a list, not a state dict/);
    const inner = weight();
    // {"outer": {"weight": tensor}}: the inner pickle's body wrapped under a key
    const body = inner.subarray(2, inner.length - 1);
    const nested = P.pickle(P.proto(), P.emptyDict(), P.str("outer"), body, P.setitem(), P.str("x"), P.int(1), P.setitem(), P.stop());
    await refused(checkpointZip(nested, { "0": f32(4) }), /nests tensors under "outer"/);
  });

  it("rejects a pickle larger than MAX_PICKLE_BYTES before reading it", async () => {
    const { MAX_PICKLE_BYTES } = await import("../../src/limits.js");
    const zip = storedZip([{ name: "archive/data.pkl", data: weight(), centralSize: MAX_PICKLE_BYTES + 1 }]);
    const reads: number[] = [];
    // the forged size is also past the end of the file; either rule refuses it without reading it
    await refused(zip, /more than the limit|more than the whole file/, reads);
    expect(Math.max(...reads)).toBeLessThan(100_000);
  });
});
