/**
 * The restricted unpickler on its own, on pickles whose meaning is fixed by
 * Python's pickle format (the bytes are what CPython's pickler writes for
 * these values at protocol 2).
 */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { PickleFloat, PickleGlobal, PickleTuple, unpickle, type UnpickleHooks } from "../../src/pytorch/unpickler.js";
import { PytorchError } from "../../src/errors.js";
import { P } from "./build.js";

const refuseAll: UnpickleHooks = {
  allowGlobal: () => false,
  persistentLoad: () => {
    throw new Error("no persistent ids here");
  },
  reduce: () => {
    throw new Error("no calls here");
  },
  build: () => {
    throw new Error("no builds here");
  },
};

const load = (bytes: Uint8Array | number[], hooks: UnpickleHooks = refuseAll) => unpickle(Uint8Array.from(bytes), "t.pkl", hooks);

describe("unpickle", () => {
  it("reads the scalars and containers CPython writes", () => {
    // {"a": [1, -2, 300, 70000, 2**40, -(2**63)], "b": (None, True, False, 1.5, "é")}
    const value = load(
      P.pickle(
        P.proto(2), P.emptyDict(), P.mark(),
        P.str("a"), P.emptyList(), P.mark(), P.int(1), P.int(-2), P.int(300), P.int(70000), P.long1(2n ** 40n), P.long1(-(2n ** 63n)), [0x65],
        P.str("b"), P.mark(), P.none(), [0x88], [0x89], [0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], P.str("é"), P.tuple(),
        P.setitems(), P.stop(),
      ),
    ) as Map<string, unknown>;
    expect(value.get("a")).toEqual([1, -2, 300, 70000, 2 ** 40, -(2n ** 63n)]);
    expect(value.get("b")).toEqual(new PickleTuple([null, true, false, new PickleFloat(1.5), "é"]));
  });

  it("appends a million items at once without overflowing the call stack", () => {
    const count = 1_000_000;
    const bytes = new Uint8Array(count + 6).fill(0x4e); // NONE x count
    bytes.set([0x80, 2, 0x5d, 0x28]); // PROTO 2, EMPTY_LIST, MARK
    bytes.set([0x65, 0x2e], count + 4); // APPENDS, STOP
    expect((load(bytes) as unknown[]).length).toBe(count);
  });

  it("keeps floats apart from ints, even integral ones (2.0 is not 2), but as dict keys they are one", () => {
    const value = load(P.pickle(P.proto(), P.int(2), [0x47, 0x40, 0, 0, 0, 0, 0, 0, 0], P.tuple2(), P.stop())) as PickleTuple;
    expect(value.items).toEqual([2, new PickleFloat(2)]);
    const dict = load(P.pickle(P.proto(), P.emptyDict(), [0x47, 0x40, 0, 0, 0, 0, 0, 0, 0], P.str("a"), P.setitem(), P.stop())) as Map<unknown, unknown>;
    expect(dict.get(2)).toBe("a");
  });

  it("reads protocol 4 frames that hold whole opcodes", () => {
    // FRAME 2: NONE STOP; and two frames back to back
    const frame = (n: number) => [0x95, n, 0, 0, 0, 0, 0, 0, 0];
    expect(load(P.pickle(P.proto(4), frame(2), P.none(), P.stop()))).toBe(null);
    expect(load(P.pickle(P.proto(4), frame(1), P.none(), frame(1), P.stop()))).toBe(null);
  });

  it("shares memoized objects (BINPUT/BINGET) instead of copying them", () => {
    const value = load(P.pickle(P.proto(), P.emptyList(), P.binput(0), P.binget(0), P.tuple2(), P.stop())) as PickleTuple;
    expect(value.items[0]).toBe(value.items[1]);
  });

  it("reads a real torch.save data.pkl with every global handed to the hooks", async () => {
    const { readZipDirectory, locateEntryData } = await import("../../src/pytorch/zip.js");
    const { memoryReader } = await import("./build.js");
    const bytes = new Uint8Array(await readFile(new URL("../fixtures/pytorch/llama-state-dict.bin", import.meta.url)));
    const read = memoryReader(bytes);
    const entry = (await readZipDirectory(read, bytes.length, "x")).find((e) => e.name.endsWith("/data.pkl"))!;
    const start = await locateEntryData(read, bytes.length, "x", entry);
    const globals = new Set<string>();
    let builds = 0;
    const value = load(bytes.subarray(start, start + entry.uncompressedSize), {
      allowGlobal: (m, n) => (globals.add(`${m}.${n}`), true),
      persistentLoad: (pid) => pid,
      reduce: (g, args) => (g.qualifiedName === "collections.OrderedDict" ? new Map() : { call: g.qualifiedName, args }),
      build: () => void builds++,
    }) as Map<string, { call: string; args: unknown[] }>;
    expect([...globals].sort()).toEqual(["collections.OrderedDict", "torch.FloatStorage", "torch._utils._rebuild_tensor_v2"]);
    expect(value.get("model.embed_tokens.weight")!.call).toBe("torch._utils._rebuild_tensor_v2");
    expect(value.get("model.embed_tokens.weight")!.args[2]).toEqual(new PickleTuple([32, 16]));
    expect(builds).toBe(1); // the state dict's _metadata
  });

  it("hands GLOBAL names to the allow-list before anything else happens", () => {
    const seen: string[] = [];
    const hooks = { ...refuseAll, allowGlobal: (m: string, n: string) => (seen.push(`${m}.${n}`), false) };
    expect(() => load(P.pickle(P.proto(), P.global("os", "system"), P.str("touch x"), P.tuple1(), P.reduce(), P.stop()), hooks)).toThrow(
      /refers to os\.system, which is not allowed/,
    );
    expect(seen).toEqual(["os.system"]);
  });

  it("checks STACK_GLOBAL names against the allow-list too", () => {
    expect(() => load(P.pickle(P.proto(4), P.str("builtins"), P.str("eval"), [0x93], P.stop()))).toThrow(expect.objectContaining({ rule: "pickle-forbidden-global", message: expect.stringMatching(/refers to builtins\.eval, which is not allowed/) }));
  });

  it("returns allowed globals as inert names", () => {
    const value = load(P.pickle(P.proto(), P.global("torch", "HalfStorage"), P.stop()), { ...refuseAll, allowGlobal: () => true });
    expect(value).toEqual(new PickleGlobal("torch", "HalfStorage"));
  });
});

describe("unpickle refuses", () => {
  const cases: [string, number[] | Uint8Array, RegExp][] = [
    ["an empty stream", [], /not a pickle/],
    ["a stream without PROTO", [0x4e, 0x2e], /not a pickle/],
    ["protocol 1", [0x80, 1, 0x4e, 0x2e], /protocol 1/],
    ["a stream without STOP", P.pickle(P.proto(), P.none()), /truncated pickle/],
    ["a string longer than the stream", P.pickle(P.proto(), [0x58, 0xff, 0xff, 0xff, 0x7f, 0x41]), /truncated pickle/],
    ["BINUNICODE8 longer than the stream", P.pickle(P.proto(4), [0x8d, 0, 0, 0, 0, 0, 0, 0, 0x10]), /past the end of the pickle/],
    ["an integer of 1000 bytes", P.pickle(P.proto(), [0x8b, 0xe8, 0x03, 0, 0], new Uint8Array(1000), P.stop()), /integer of 1000 bytes/],
    ["POP on an empty stack", P.pickle(P.proto(), [0x30], P.stop()), /empty stack/],
    ["reaching below a MARK", P.pickle(P.proto(), P.none(), P.mark(), P.tuple1(), P.stop()), /empty stack/],
    ["a MARK never set", P.pickle(P.proto(), P.tuple(), P.stop()), /MARK that was never set/],
    ["a memo entry never stored", P.pickle(P.proto(), P.binget(3), P.stop()), /memo entry 3/],
    ["values left at STOP", P.pickle(P.proto(), P.none(), P.none(), P.stop()), /values left on the stack/],
    ["bytes after STOP", P.pickle(P.proto(), P.none(), P.stop(), P.none()), /bytes after STOP/],
    ["REDUCE on a non-global", P.pickle(P.proto(), P.emptyList(), P.emptyTuple(), P.reduce(), P.stop()), /REDUCE calls something that is not an allowed global/],
    ["APPEND to a tuple", P.pickle(P.proto(), P.emptyTuple(), P.none(), P.append(), P.stop()), /APPEND on something that is not a list/],
    ["SETITEM on a list", P.pickle(P.proto(), P.emptyList(), P.str("k"), P.none(), P.setitem(), P.stop()), /SETITEM on something that is not a dict/],
    ["a list as a dict key", P.pickle(P.proto(), P.emptyDict(), P.emptyList(), P.none(), P.setitem(), P.stop()), /dict key that is not a string/],
    ["NEWOBJ", P.pickle(P.proto(), P.none(), P.emptyTuple(), [0x81], P.stop()), /opcode NEWOBJ/],
    ["INST", P.pickle(P.proto(), P.mark(), [0x69], new TextEncoder().encode("os\nsystem\n"), P.stop()), /opcode INST/],
    ["OBJ", P.pickle(P.proto(), P.mark(), P.none(), [0x6f], P.stop()), /opcode OBJ/],
    ["EXT1", P.pickle(P.proto(), [0x82, 1], P.stop()), /opcode EXT1/],
    ["an unknown opcode", P.pickle(P.proto(), [0xff], P.stop()), /unknown opcode 0xff/],
    ["a non-UTF-8 string", P.pickle(P.proto(), [0x58, 2, 0, 0, 0, 0xc3, 0x28], P.stop()), /not UTF-8/],
    ["a FRAME longer than the bytes that follow", P.pickle(P.proto(4), [0x95, 3, 0, 0, 0, 0, 0, 0, 0], P.none(), P.stop()), /FRAME of 3 bytes, but only 2 bytes follow/],
    ["a FRAME of 2^64-1 bytes", P.pickle(P.proto(4), [0x95, 255, 255, 255, 255, 255, 255, 255, 255], P.none(), P.stop()), /FRAME of 18446744073709551615 bytes/],
    ["a FRAME shorter than its opcodes", P.pickle(P.proto(4), [0x95, 2, 0, 0, 0, 0, 0, 0, 0], P.int(300), P.stop()), /runs past the end of its FRAME/],
    ["a FRAME inside a FRAME", P.pickle(P.proto(4), [0x95, 12, 0, 0, 0, 0, 0, 0, 0], [0x95, 2, 0, 0, 0, 0, 0, 0, 0], P.none(), P.stop(), P.none()), /starts a FRAME 3 bytes before the previous one ends/],
  ];
  for (const [what, bytes, message] of cases) {
    it(what, () => {
      expect(() => load(bytes)).toThrow(PytorchError);
      expect(() => load(bytes)).toThrow(message);
    });
  }

  it("a stack grown past the allocation budget", () => {
    const count = 100_000;
    const bytes = new Uint8Array(count + 3).fill(0x4e); // NONE x count
    bytes.set([0x80, 2]);
    bytes[bytes.length - 1] = 0x2e;
    // each stack slot is charged 24 bytes: 100,000 of them are 2.4 MB
    expect(() => unpickle(bytes, "t.pkl", refuseAll, { maxAllocationBytes: 2_000_000 })).toThrow(expect.objectContaining({ rule: "pickle-too-large", message: expect.stringMatching(/builds more objects than the limit of 2000000 bytes/) }));
  });
});

describe("unpickle's allocation budget", () => {
  it("keeps a bytes value as a view into the pickle, never a copy", () => {
    const payload = new Uint8Array(1 << 20).fill(7);
    const bytes = P.pickle(P.proto(3), [0x42, 0, 0, 0x10, 0], payload, P.stop());
    const value = unpickle(bytes, "t.pkl", refuseAll) as Uint8Array;
    expect(value.length).toBe(1 << 20);
    expect(value.buffer === bytes.buffer).toBe(true);
  });

  it("charges memo entries, marks, containers and strings", () => {
    const cases: [string, Uint8Array][] = [
      ["memo entries", P.pickle(P.proto(), P.none(), ...Array.from({ length: 30_000 }, (_, i) => [0x72, i & 0xff, i >> 8, 0, 0]), P.stop())],
      ["marks", P.pickle(P.proto(), P.none(), new Uint8Array(100_000).fill(0x28), P.stop())],
      ["empty dicts", P.pickle(P.proto(), P.emptyList(), ...Array.from({ length: 20_000 }, () => [0x7d, 0x61]), P.stop())],
      ["long strings", P.pickle(P.proto(), P.emptyList(), ...Array.from({ length: 100 }, () => [...P.str("x".repeat(30_000)), 0x61]), P.stop())],
    ];
    for (const [what, bytes] of cases) {
      expect(() => unpickle(bytes, "t.pkl", refuseAll, { maxAllocationBytes: 2_000_000 }), what).toThrow(/builds more objects than the limit/);
    }
  });
});
