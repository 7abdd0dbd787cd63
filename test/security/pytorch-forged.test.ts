/**
 * Forged archives and pickles built in memory, one attack per test: each is
 * refused with a PytorchError naming the rule, before any large allocation.
 */
import { describe, expect, it } from "vitest";
import { readCheckpoint } from "../../src/pytorch/checkpoint.js";
import { PytorchError, type PytorchRule } from "../../src/errors.js";
import { checkpointZip, memoryReader, P, storedZip, tensorDictPickle } from "../pytorch/build.js";

const FILE = "forged.bin";

/** Refused by the rule `rule` (what programs see as error.rule), with a message that says it in words. */
async function refused(rule: PytorchRule, bytes: Uint8Array, message: RegExp, reads: number[] = []): Promise<void> {
  const promise = readCheckpoint(memoryReader(bytes, reads), bytes.length, FILE);
  await expect(promise).rejects.toThrow(PytorchError);
  await expect(promise).rejects.toMatchObject({ rule });
  await expect(promise).rejects.toThrow(message);
}

const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);
const weight = (over: Partial<Parameters<typeof tensorDictPickle>[0][0]> = {}) =>
  tensorDictPickle([{ name: "weight", storageType: "FloatStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1], ...over }]);

describe("forged zip structures", () => {
  it("rejects an end record whose central directory lies past the end of the file", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint32(zip.length - 6, 0x7fffffff, true);
    await refused("zip-past-end", zip, /central directory .* lies past the end of the file/);
  });

  it("rejects a central directory larger than the limit before reading it", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint32(zip.length - 10, 0xfffffff0, true);
    const reads: number[] = [];
    await refused("zip-too-large", zip, /central directory of \d+ bytes is larger than the limit/, reads);
    expect(Math.max(...reads)).toBeLessThan(100_000);
  });

  it("rejects an entry count the directory cannot hold", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint16(zip.length - 12, 0xfff0, true);
    await refused("zip-malformed", zip, /cannot hold 65520 entries/);
  });

  it("rejects a saturated end record without ZIP64 records", async () => {
    const zip = checkpointZip(weight(), { "0": f32(4) });
    new DataView(zip.buffer).setUint32(zip.length - 6, 0xffffffff, true);
    await refused("zip-malformed", zip, /needs ZIP64 records/);
  });

  it("rejects two entries with the same name", async () => {
    const zip = storedZip([
      { name: "archive/data.pkl", data: weight() },
      { name: "archive/data/0", data: f32(4) },
      { name: "archive/data/0", data: f32(4) },
    ]);
    await refused("zip-duplicate-entry", zip, /two entries named "archive\/data\/0"/);
  });

  it("rejects an entry whose size runs past the end of the file", async () => {
    const zip = storedZip([
      { name: "archive/data.pkl", data: weight() },
      { name: "archive/data/0", data: f32(4), centralSize: 1_000_000 },
    ]);
    await refused("zip-past-end", zip, /declares 1000000 bytes, more than the whole file|lies past the end of the file/);
  });

  it("rejects a local header whose name differs from the central directory's", async () => {
    const zip = storedZip([{ name: "archive/data.pkl", data: weight(), localName: "archive/data.pkX" }, { name: "archive/data/0", data: f32(4) }]);
    await refused("zip-malformed", zip, /local header whose name differs/);
  });

  it("rejects the encryption flag on any entry, even one torch never reads", async () => {
    // torch.load refuses it on data.pkl, a storage or version ("unsupported encryption")
    for (const flagged of ["archive/data.pkl", "archive/data/0", "archive/version", "archive/extra"]) {
      for (const flags of [0x0001, 0x0041, 0x2000]) {
        const zip = storedZip(
          [
            { name: "archive/data.pkl", data: weight() },
            { name: "archive/data/0", data: f32(4) },
            { name: "archive/version", data: new TextEncoder().encode("3\n") },
            { name: "archive/extra", data: new Uint8Array(3) },
          ].map((e) => (e.name === flagged ? { ...e, flags } : e)),
        );
        await refused("zip-unsupported", zip, new RegExp(`zip entry "${flagged}" is encrypted \\(flags 0x${flags.toString(16).padStart(4, "0")}\\)`));
      }
    }
  });

  it("rejects an archive without data.pkl, and one with two", async () => {
    await refused("checkpoint-no-pickle", storedZip([{ name: "archive/other.pkl", data: weight() }]), /without <folder>\/data\.pkl/);
    await refused("checkpoint-ambiguous", 
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
    await refused("storage-size-mismatch", checkpointZip(weight(), { "0": f32(3) }), /storage "0" should hold 4 F32 elements \(16 bytes\) but archive\/data\/0 is 12 bytes/);
  });

  it("rejects a view past its storage through its shape, offset or stride", async () => {
    await refused("tensor-past-storage", checkpointZip(weight({ shape: [5] }), { "0": f32(4) }), /tensor "weight" is a view past its storage/);
    await refused("tensor-past-storage", checkpointZip(weight({ offset: 1 }), { "0": f32(4) }), /tensor "weight" is a view past its storage/);
    await refused("tensor-past-storage", checkpointZip(weight({ shape: [2, 2], strides: [3, 1] }), { "0": f32(4) }), /tensor "weight" is a view past its storage/);
  });

  it("rejects a 488-byte checkpoint whose one float is viewed as 2^33 elements with stride 0 (convert would write 34 GB)", async () => {
    const zip = checkpointZip(weight({ numel: 1, shape: [2 ** 33], strides: [0] }), { "0": f32(1) });
    expect(zip.length).toBeLessThan(1000);
    await refused("tensor-overlapping", zip, /tensor "weight" is a view whose elements overlap in storage \(shape \[8589934592\], strides \[0\]: dimension 0, of size 8589934592, has stride 0\)/);
  });

  it("rejects views whose strides alias: equal strides, or one inside another's span", async () => {
    await refused("tensor-overlapping", checkpointZip(weight({ shape: [2, 2], strides: [1, 1] }), { "0": f32(4) }), /dimension \d's stride 1 does not step past the 2 elements/);
    await refused("tensor-overlapping", checkpointZip(weight({ numel: 6, shape: [2, 3], strides: [2, 1] }), { "0": f32(6) }), /dimension 0's stride 2 does not step past the 3 elements/);
  });

  it("loads legitimate views: transposed, sliced, stepped, a stride-0 dimension of size 1, zero-size, and two tensors on one storage", async () => {
    const views = [
      { name: "transposed", shape: [3, 2], strides: [1, 3] },
      { name: "sliced_cols", shape: [2, 2], strides: [3, 1], offset: 1 },
      { name: "every_other", shape: [3], strides: [2] },
      { name: "size_one_stride_zero", shape: [1, 6], strides: [0, 1] },
      { name: "zero_size_any_strides", shape: [0, 5], strides: [0, 0] },
      { name: "whole", shape: [6], strides: [1] },
    ];
    const pickle = tensorDictPickle(views.map((v) => ({ storageType: "FloatStorage", key: "0", numel: 6, offset: 0, ...v })));
    const zip = checkpointZip(pickle, { "0": f32(6) });
    const checkpoint = await readCheckpoint(memoryReader(zip), zip.length, FILE);
    expect(checkpoint.tensors.map((t) => [t.name, t.shape])).toEqual(views.map((v) => [v.name, v.shape]));
    expect(new Set(checkpoint.tensors.map((t) => t.view.storage)).size).toBe(1);
  });

  it("rejects shapes whose size overflows", async () => {
    const pickle = weight({ shape: [2 ** 30, 2 ** 30, 2 ** 30], strides: [0, 0, 0] });
    await refused("tensor-malformed", checkpointZip(pickle, { "0": f32(4) }), /tensor "weight" has a shape too large to address/);
  });

  it("rejects a storage type that is not a torch dtype storage", async () => {
    await refused("pickle-forbidden-global", checkpointZip(weight({ storageType: "UntypedStorage" }), { "0": f32(4) }), /torch\.UntypedStorage, which is not allowed/);
  });

  it("rejects calling a storage class", async () => {
    const pickle = P.pickle(P.proto(), P.emptyDict(), P.str("w"), P.global("torch", "FloatStorage"), P.int(4), P.tuple1(), P.reduce(), P.setitem(), P.stop());
    await refused("call-forbidden", checkpointZip(pickle), /calls torch\.FloatStorage, which is not allowed/);
  });

  it("rejects BUILD on anything but a dict", async () => {
    const pickle = P.pickle(P.proto(), P.global("collections", "OrderedDict"), P.emptyTuple(), P.emptyTuple(), P.tuple1(), P.build(), P.stop());
    // BUILD applies ((),) to the empty tuple below it: not a dict
    await refused("call-malformed", checkpointZip(pickle), /BUILD to a tuple, which is not allowed/);
    // BUILD on an allowed global itself (the classic way to set attributes on a class)
    const onGlobal = P.pickle(P.proto(), P.global("collections", "OrderedDict"), P.emptyDict(), P.build(), P.stop());
    await refused("call-malformed", checkpointZip(onGlobal), /BUILD to collections\.OrderedDict, which is not allowed/);
  });

  it("rejects persistent ids that are not storage references", async () => {
    const pickle = P.pickle(P.proto(), P.str("module"), P.binpersid(), P.stop());
    await refused("storage-malformed", checkpointZip(pickle), /persistent id that is not a \('storage'/);
  });

  it("rejects one storage key used with two dtypes", async () => {
    const pickle = tensorDictPickle([
      { name: "a", storageType: "FloatStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1] },
      { name: "b", storageType: "IntStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1] },
    ]);
    await refused("storage-malformed", checkpointZip(pickle, { "0": f32(4) }), /uses storage "0" both as F32 x 4 and as I32 x 4/);
  });

  it("rejects a pickle that is not a dict, and tensors nested deeper than one wrapper", async () => {
    await refused("not-a-state-dict", checkpointZip(P.pickle(P.proto(), P.emptyList(), P.stop())), /holds a list, not a state dict/);
    const inner = weight();
    // {"outer": {"weight": tensor}}: the inner pickle's body wrapped under a key
    const body = inner.subarray(2, inner.length - 1);
    const nested = P.pickle(P.proto(), P.emptyDict(), P.str("outer"), body, P.setitem(), P.str("x"), P.int(1), P.setitem(), P.stop());
    await refused("nested-state-dict", checkpointZip(nested, { "0": f32(4) }), /nests tensors under "outer"/);
  });

  it("rejects a pickle larger than MAX_PICKLE_BYTES before reading it", async () => {
    const { MAX_PICKLE_BYTES } = await import("../../src/limits.js");
    const zip = storedZip([{ name: "archive/data.pkl", data: weight(), centralSize: MAX_PICKLE_BYTES + 1 }]);
    const reads: number[] = [];
    // the forged size is also past the end of the file; either rule refuses it without reading it
    await refused("zip-past-end", zip, /more than the limit|more than the whole file/, reads);
    expect(Math.max(...reads)).toBeLessThan(100_000);
  });
});

/**
 * Pickles the mutation fuzzer found that our reader took and torch 1.13's
 * torch.load refuses (each checked against torch on the mutated file).
 */
describe("lenient pickles torch refuses", () => {
  const tuple = (...items: number[][]) => [...P.mark(), ...items.flat(), ...P.tuple()];
  const storage = (numel = P.int(4)) => [...tuple(P.str("storage"), P.global("torch", "FloatStorage"), P.str("0"), P.str("cpu"), numel), ...P.binpersid()];
  const hooks = () => [...P.global("collections", "OrderedDict"), ...P.emptyTuple(), ...P.reduce()];
  const float = (x: number) => {
    const b = new DataView(new ArrayBuffer(8));
    b.setFloat64(0, x, false);
    return [0x47, ...new Uint8Array(b.buffer)];
  };
  /** {"weight": torch._utils.<callable>(*args)} */
  const call = (callable: string, ...args: number[][]) =>
    checkpointZip(P.pickle(P.proto(), P.emptyDict(), P.str("weight"), P.global("torch._utils", callable), tuple(...args), P.reduce(), P.setitem(), P.stop()), {
      "0": f32(4),
    });
  const rebuild = (...args: number[][]) => call("_rebuild_tensor_v2", ...args);
  const valid = () => [storage(), P.int(0), tuple(P.int(4)), tuple(P.int(1)), P.newFalse(), hooks()];
  const loads = async (zip: Uint8Array) => (await readCheckpoint(memoryReader(zip), zip.length, FILE)).tensors.map((t) => [t.name, t.shape]);

  it("loads the valid call these mutate, with 6 arguments or a 7th metadata dict", async () => {
    expect(await loads(rebuild(...valid()))).toEqual([["weight", [4]]]);
    expect(await loads(rebuild(...valid(), P.emptyDict()))).toEqual([["weight", [4]]]);
  });

  it("rejects a size, stride, offset or element count given as a float (BINFLOAT 2.0 is not the int 2)", async () => {
    const [s, offset, size, stride, grad, h] = valid();
    await refused("tensor-malformed", rebuild(s!, offset!, tuple(float(4)), stride!, grad!, h!), /rebuilds a tensor whose size\[0\] is the float 4\.0, not a non-negative integer/);
    await refused("tensor-malformed", rebuild(s!, offset!, size!, tuple(float(1)), grad!, h!), /whose stride\[0\] is the float 1\.0/);
    await refused("tensor-malformed", rebuild(s!, float(0), size!, stride!, grad!, h!), /whose storage offset is the float 0\.0/);
    await refused("storage-malformed", rebuild(storage(float(4)), offset!, size!, stride!, grad!, h!), /storage "0" has an element count that is the float 4\.0/);
  });

  it("rejects a size or offset given as a bool", async () => {
    const [s, offset, , stride, grad, h] = valid();
    await refused("tensor-malformed", rebuild(s!, offset!, tuple([0x88]), stride!, grad!, h!), /size\[0\] is True, not a non-negative integer/);
    await refused("tensor-malformed", rebuild(s!, P.newFalse(), tuple(P.int(4)), stride!, grad!, h!), /storage offset is False/);
  });

  it("rejects _rebuild_tensor_v2 called with 5 arguments (it takes 6, or 7 with metadata)", async () => {
    const args = valid();
    await refused("call-malformed", rebuild(...args.slice(0, 5)), /calls _rebuild_tensor_v2 with 5 arguments; it takes 6 or 7/);
    await refused("call-malformed", rebuild(...args.slice(0, 4)), /with 4 arguments/);
    await refused("call-malformed", rebuild(...args, P.emptyDict(), P.none()), /with 8 arguments/);
  });

  it("rejects requires_grad that is not a bool, and metadata that is not a dict", async () => {
    const [s, offset, size, stride, , h] = valid();
    await refused("call-malformed", rebuild(s!, offset!, size!, stride!, P.int(1), h!), /requires_grad the integer 1; it must be a bool/);
    await refused("call-malformed", rebuild(s!, offset!, size!, stride!, P.none(), h!), /requires_grad None; it must be a bool/);
    await refused("call-malformed", rebuild(...valid(), P.int(5)), /metadata the integer 5; it must be a dict/);
  });

  it("rejects _rebuild_parameter with the wrong number of arguments", async () => {
    const tensor = [...P.global("torch._utils", "_rebuild_tensor_v2"), ...tuple(...valid()), ...P.reduce()];
    expect(await loads(call("_rebuild_parameter", tensor, [0x88], hooks()))).toEqual([["weight", [4]]]);
    await refused("call-malformed", call("_rebuild_parameter", tensor, [0x88]), /calls _rebuild_parameter with 2 arguments; it takes 3/);
    await refused("call-malformed", call("_rebuild_parameter", tensor, P.int(1), hooks()), /_rebuild_parameter with requires_grad the integer 1/);
    await refused("call-malformed", call("_rebuild_parameter_with_state", tensor, [0x88], hooks()), /_rebuild_parameter_with_state with 3 arguments; it takes 4/);
  });

  it("rejects a FRAME whose length does not match the bytes that follow", async () => {
    const body = weight().subarray(2); // after PROTO 2
    const framed = (length: number) => {
      const frame = new DataView(new ArrayBuffer(9));
      frame.setUint8(0, 0x95);
      frame.setBigUint64(1, BigInt(length), true);
      return checkpointZip(P.pickle(P.proto(4), new Uint8Array(frame.buffer), body), { "0": f32(4) });
    };
    expect(await loads(framed(body.length))).toEqual([["weight", [4]]]);
    // torch: "pickle data was truncated"
    await refused("pickle-malformed", framed(body.length + 1), /data\.pkl has a FRAME of \d+ bytes, but only \d+ bytes follow/);
    // a frame that ends inside an opcode (EMPTY_DICT, MARK, then half of BINUNICODE "weight"):
    // Python's pickle.py refuses it; torch misreads the opcode and fails
    await refused("pickle-malformed", framed(4), /has an opcode that runs past the end of its FRAME/);
  });
});

describe("names that would split the error line", () => {
  const oneLine = async (bytes: Uint8Array, message: RegExp) => {
    const promise = readCheckpoint(memoryReader(bytes), bytes.length, FILE);
    await expect(promise).rejects.toThrow(message);
    await expect(promise).rejects.not.toThrow(/\n/);
  };

  it("escapes a newline in a zip entry name", async () => {
    const zip = storedZip([
      { name: "archive/data.pkl", data: weight() },
      { name: "archive/x\ny", data: f32(1) },
      { name: "archive/x\ny", data: f32(1) },
    ]);
    await oneLine(zip, /two entries named "archive\/x\\u000ay"/);
  });

  it("escapes a newline in a STACK_GLOBAL name and in a storage key", async () => {
    await oneLine(checkpointZip(P.pickle(P.proto(4), P.str("os\nx"), P.str("system"), [0x93], P.stop())), /refers to os\\u000ax\.system, which is not allowed/);
    await oneLine(checkpointZip(weight({ key: "0\r\n1" })), /refers to storage "0\\u000d\\u000a1" but the archive has no/);
  });
});

describe("state and storage details torch checks", () => {
  it("rejects BUILD state that is not None or a dict, as Python's BUILD does", async () => {
    const build = (...state: number[][]) => checkpointZip(P.pickle(P.proto(), P.global("collections", "OrderedDict"), P.emptyTuple(), P.reduce(), ...state, P.build(), P.stop()));
    const loads = async (zip: Uint8Array) => (await readCheckpoint(memoryReader(zip), zip.length, FILE)).tensors;
    expect(await loads(build(P.none()))).toEqual([]);
    expect(await loads(build(P.emptyDict()))).toEqual([]);
    expect(await loads(build(P.none(), P.emptyDict(), P.tuple2()))).toEqual([]);
    // torch: "state is not a dictionary", "slot state is not a dictionary"
    await refused("call-malformed", build(P.int(5)), /applies BUILD with the integer 5 as state; it must be None or a dict/);
    await refused("call-malformed", build(P.emptyList()), /applies BUILD with a list as state/);
    await refused("call-malformed", build(P.emptyDict(), P.none(), P.tuple2()), /applies BUILD with a tuple as state/);
  });

  it("rejects a storage location that is not a string", async () => {
    const pickle = P.pickle(
      P.proto(), P.emptyDict(), P.str("weight"), P.global("torch._utils", "_rebuild_tensor_v2"),
      P.mark(), P.mark(), P.str("storage"), P.global("torch", "FloatStorage"), P.str("0"), P.int(5), P.int(4), P.tuple(), P.binpersid(),
      P.int(0), P.int(4), P.tuple1(), P.int(1), P.tuple1(), P.newFalse(), P.global("collections", "OrderedDict"), P.emptyTuple(), P.reduce(), P.tuple(),
      P.reduce(), P.setitem(), P.stop(),
    );
    await refused("storage-malformed", checkpointZip(pickle, { "0": f32(4) }), /storage "0" has the location the integer 5, not a device name/);
  });
});
