/**
 * Hostile EasyLM streaming checkpoints, built in memory record by record
 * (the layout EasyLM's checkpointer writes: [key path, bin(ext 1 ([shape],
 * dtype, bin data))]): every length is checked against its container and
 * the file before anything is trusted or allocated.
 */
import { describe, expect, it } from "vitest";
import { scanEasyLmCheckpoint } from "../../src/easylm/streaming-checkpoint.js";
import type { EasyLmRule } from "../../src/errors.js";

const enc = new TextEncoder();
const str = (s: string) => { const b = enc.encode(s); return [0xa0 | b.length, ...b]; };
const u32 = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const bin32 = (bytes: number[]) => [0xc6, ...u32(bytes.length), ...bytes];
const ext32 = (type: number, bytes: number[]) => [0xc9, ...u32(bytes.length), type, ...bytes];

function record(key: string[], value: number[]): number[] {
  return [0x92, 0x90 | key.length, ...key.flatMap(str), ...bin32(value)];
}
function array(shape: number[], dtype: string, data: number[], extType = 1): number[] {
  return ext32(extType, [0x93, 0x90 | shape.length, ...shape, ...str(dtype), ...bin32(data)]);
}

async function scan(bytes: number[]) {
  const file = Uint8Array.from(bytes);
  return scanEasyLmCheckpoint(async (p, n) => {
    if (p < 0 || p + n > file.length) throw new Error("read past the end");
    return file.subarray(p, p + n);
  }, file.length, "diff");
}

/** Refused by `rule` (what programs see as error.rule), with a message that says it in words. */
async function refused(bytes: number[], rule: EasyLmRule, message: RegExp): Promise<void> {
  const scanned = scan(bytes);
  await expect(scanned).rejects.toThrow(message);
  await expect(scanned).rejects.toMatchObject({ rule });
}

describe("EasyLM streaming checkpoint: hostile records", () => {
  it("reads a well-formed record (so the refusals below are not a blanket failure)", async () => {
    const records = await scan(record(["lm_head", "kernel"], array([2, 1], "bfloat16", [1, 2, 3, 4])));
    expect(records).toEqual([{ key: ["lm_head", "kernel"], dtype: "BF16", shape: [2, 1], dataStart: expect.any(Number), byteLength: 4 }]);
  });

  it("rejects a value claiming 4 GB in a file of a few bytes, before reading it", async () => {
    const bytes = [0x92, 0x91, ...str("x"), 0xc6, 0xff, 0xff, 0xff, 0xf0, 0xc9];
    await refused(bytes, "record-truncated", /"x" runs past the end of the file .*truncated/);
  });

  it("rejects an array whose data length disagrees with its shape", async () => {
    await refused(record(["w"], array([3], "float16", [0, 0, 0, 0])), "record-malformed", /"w" holds 4 bytes, but \[3\] float16 is 6/);
  });

  it("rejects a flax chunked array (a map where the array belongs)", async () => {
    await refused(record(["w"], [0x81, ...str("a"), 0x01]), "record-unsupported", /chunked array .*not supported/);
  });

  it("rejects another msgpack extension type", async () => {
    await refused(record(["w"], array([1], "float16", [0, 0], 2)), "record-unsupported", /extension type 2, not flax's ndarray/);
  });

  it("rejects an object or integer dtype", async () => {
    await refused(record(["w"], array([1], "object", [0])), "record-unsupported", /"w" is "object", not a float16/);
    await refused(record(["w"], array([1], "int64", [0, 0, 0, 0, 0, 0, 0, 0])), "record-unsupported", /"int64"/);
  });

  it("rejects a key path part that is not a string", async () => {
    await refused([0x92, 0x91, 0x01, ...bin32([])], "record-malformed", /msgpack type 0x1 where a string belongs/);
  });

  it("rejects a key stored twice", async () => {
    const one = record(["w"], array([1], "float16", [0, 0]));
    await refused([...one, ...one], "record-duplicate", /"w" is stored twice/);
  });

  it("rejects trailing bytes that are not a record, naming the record before them", async () => {
    const one = record(["w"], array([1], "float16", [0, 0]));
    await refused([...one, 0x00], "record-malformed", /the record at byte 33 \(after "w"\) has msgpack type 0x0 where an array belongs/);
  });

  it("rejects an empty file", async () => {
    await refused([], "no-records", /holds no records/);
  });
});
