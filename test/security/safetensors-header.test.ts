/**
 * Hostile safetensors files built in memory, one per rule of the format
 * (DESIGN.md "Inputs", the reference crate's read_metadata / validate).
 * Each must be refused with a SafetensorsError whose one-line message names
 * the file and the rule, before any allocation sized by the file's claims.
 */
import { describe, expect, it } from "vitest";
import { SafetensorsError, type SafetensorsRule } from "../../src/errors.js";
import { MAX_METADATA_ENTRIES, MAX_SAFETENSORS_HEADER_BYTES, MAX_TENSORS_PER_FILE } from "../../src/limits.js";
import { encodeHeader, parseHeader, readHeaderLength } from "../../src/safetensors/header.js";
import { entry, rawSafetensors } from "../helpers/safetensors-bytes.js";

function parse(bytes: Uint8Array) {
  const n = readHeaderLength("evil.safetensors", bytes.subarray(0, 8), bytes.length);
  return parseHeader("evil.safetensors", bytes.subarray(8, 8 + n), bytes.length);
}

/** Refused by the rule `rule` (what programs see as error.rule), with a one-line message that says it in words. */
function refused(rule: SafetensorsRule, bytes: Uint8Array, pattern: RegExp): SafetensorsError {
  let caught: unknown;
  try {
    parse(bytes);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(SafetensorsError);
  const err = caught as SafetensorsError;
  expect(err.message).toMatch(/^Failed to read evil\.safetensors: /);
  expect(err.message).not.toContain("\n");
  expect(err.rule).toBe(rule);
  expect(err.message).toMatch(pattern);
  return err;
}

const one = (name: string, dtype: string, shape: unknown[], offsets: unknown[]) => `{${entry(name, dtype, shape, offsets)}}`;

describe("header length", () => {
  it("rejects an empty file", () => {
    refused("file-too-short", new Uint8Array(0), /shorter than the 8-byte header length/);
  });

  it("rejects a file shorter than 8 bytes", () => {
    refused("file-too-short", new Uint8Array([2, 0, 0]), /shorter than the 8-byte header length/);
  });

  it("rejects a header length of 0", () => {
    refused("header-empty", rawSafetensors("", 0, 0n), /header length is 0/);
  });

  it("rejects a header length past the end of the file", () => {
    refused("header-past-end", rawSafetensors("{}", 0, 1000n), /header length 1000 runs past the end of the file \(10 bytes\)/);
  });

  it("rejects a header length of 2^64-1 without converting it to a number", () => {
    refused("header-too-large", rawSafetensors("{}", 0, 2n ** 64n - 1n), /header length 18446744073709551615 exceeds the 25000000-byte limit/);
  });

  it("rejects a header length over the 25 MB cap (Hugging Face's JS reader's)", () => {
    refused("header-too-large", rawSafetensors("{}", 0, BigInt(MAX_SAFETENSORS_HEADER_BYTES) + 1n), /exceeds the 25000000-byte limit/);
  });

  it("rejects a valid 99 MB header by its length, before reading it (it took 465 MB)", () => {
    // only the 8-byte length is given: the rule needs nothing else
    refused("header-too-large", rawSafetensors("", 0, 99_000_000n), /header length 99000000 exceeds the 25000000-byte limit/);
  });

  it("accepts a header of exactly the cap", () => {
    const text = "{}" + " ".repeat(MAX_SAFETENSORS_HEADER_BYTES - 2);
    expect(parse(rawSafetensors(text)).headerLength).toBe(MAX_SAFETENSORS_HEADER_BYTES);
  });
});

describe("header JSON", () => {
  it("rejects a header that is not JSON", () => {
    refused("header-not-json", rawSafetensors("this is not json"), /header is not valid JSON/);
  });

  it("rejects a JSON array", () => {
    refused("header-not-object", rawSafetensors("[1,2,3]"), /header is a JSON array, not an object/);
  });

  it("rejects a JSON string", () => {
    refused("header-not-object", rawSafetensors('"hello"'), /header is a JSON string, not an object/);
  });

  it("rejects invalid UTF-8", () => {
    const bytes = new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x6e, 0x75, 0x6c, 0x6c, 0x7d]); // {"\xff\xfe":null}
    refused("header-not-utf8", rawSafetensors(bytes), /not valid UTF-8/);
  });

  it("rejects a lone surrogate escape in a name", () => {
    refused("header-not-json", rawSafetensors('{"\\ud800":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'), /lone surrogate/);
  });

  it("rejects 200,000-deep nesting cleanly (no stack overflow)", () => {
    const deep = "[".repeat(200_000) + "]".repeat(200_000);
    // where the reference would descend into it: an unknown field it ignores
    refused("header-not-json", rawSafetensors(`{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":${deep}}}`), /nesting deeper than \d+ levels/);
    refused("header-not-json", rawSafetensors(`{"__metadata__":null,"t":{"x":{"y":${deep}}}}`), /nesting deeper than \d+ levels/);
    // and where a shape is expected, or at the top
    refused("entry-malformed", rawSafetensors(`{"t":{"dtype":"U8","shape":${deep},"data_offsets":[0,0]}}`), /shape holds a JSON array/);
    refused("header-not-object", rawSafetensors(deep), /header is a JSON array, not an object/);
  });

  it("rejects a forged header of millions of ignored values without building them", () => {
    const values = "0,".repeat(5_000_000) + "0";
    const before = process.memoryUsage().heapUsed;
    refused("offsets-size-mismatch", rawSafetensors(`{"t":{"dtype":"U8","shape":[],"data_offsets":[0,0],"x":[${values}]}}`), /needs 1/);
    // the 10 MB of text is all it costs: no 5-million-node tree
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(200_000_000);
  });

  it("rejects trailing garbage after the JSON object (only space padding may follow)", () => {
    refused("header-not-json", rawSafetensors("{}\u0000\u0000\u0000\u0000\u0000\u0000"), /trailing characters/);
  });

  it("rejects duplicate tensor names, which JSON.parse would silently merge", () => {
    const text = `{${entry("w", "U8", [1], [0, 1])},${entry("w", "U8", [1], [1, 2])}}`;
    const err = refused("tensor-duplicate", rawSafetensors(text, 2), /listed twice in the header \(duplicate tensor name\)/);
    expect(err.tensor).toBe("w");
  });

  it("rejects __metadata__ given twice", () => {
    refused("metadata-invalid", rawSafetensors('{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"}}'), /__metadata__ twice/);
  });

  it("rejects a duplicate field inside an entry", () => {
    refused("entry-malformed", rawSafetensors('{"t":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}', 1), /field "dtype" twice/);
  });
});

describe("metadata", () => {
  it("rejects non-string metadata values", () => {
    refused("metadata-invalid", rawSafetensors('{"__metadata__":{"epochs":3}}'), /value of "epochs" is a JSON number: metadata values must be strings/);
  });

  it("rejects nested metadata", () => {
    refused("metadata-invalid", rawSafetensors('{"__metadata__":{"config":{"a":"b"}}}'), /value of "config" is a JSON object/);
  });

  it("rejects metadata that is not an object", () => {
    refused("metadata-invalid", rawSafetensors('{"__metadata__":["format","pt"]}'), /__metadata__ is a JSON array/);
  });
});

describe("tensor entries", () => {
  it("rejects a tensor entry that is not an object", () => {
    refused("entry-malformed", rawSafetensors('{"t":[0,1]}'), /tensor "t" entry is a JSON array, not an object/);
  });

  it("rejects an unknown dtype", () => {
    refused("dtype-unknown", rawSafetensors(one("t", "Q4_K", [1], [0, 1]), 1), /tensor "t" has unknown dtype "Q4_K"/);
  });

  it("rejects a lowercase dtype (dtypes are case-sensitive)", () => {
    refused("dtype-unknown", rawSafetensors(one("t", "f16", [1], [0, 2]), 2), /unknown dtype "f16"/);
  });

  it("rejects a sub-byte dtype this tool cannot stream (F4)", () => {
    refused("dtype-unknown", rawSafetensors(one("t", "F4", [2], [0, 1]), 1), /unknown dtype "F4"/);
  });

  it("rejects a negative dimension", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", [-1], [0, 1]), 1), /shape holds the negative number -1/);
  });

  it("rejects a fractional dimension", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", [1.5], [0, 1]), 1), /shape holds 1.5, not an integer/);
  });

  it("rejects a dimension written as 1.0 or 1e0 (serde reads usize from integers only)", () => {
    refused("entry-malformed", rawSafetensors('{"t":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', 1), /not an integer/);
    refused("entry-malformed", rawSafetensors('{"t":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}', 1), /not an integer/);
  });

  it("rejects a string dimension", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", ["4"], [0, 4]), 4), /shape holds a JSON string/);
  });

  it("rejects a shape that is not an array", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", 4 as unknown as unknown[], [0, 4]), 4), /shape is a JSON number/);
  });

  it("rejects a dimension larger than 2^64-1", () => {
    refused("entry-malformed", rawSafetensors('{"t":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}', 1), /larger than a 64-bit unsigned integer/);
  });

  it("rejects a shape whose element count overflows 64 bits", () => {
    refused("shape-overflow", rawSafetensors(one("t", "U8", [2 ** 40, 2 ** 40], [0, 1]), 1), /more elements than fit in 64 bits \(overflow\)/);
  });

  it("rejects a shape whose size wraps to zero in u64 (2^32 x 2^32 bytes with offsets [0, 0])", () => {
    refused("shape-overflow", rawSafetensors(one("t", "U8", [2 ** 32, 2 ** 32], [0, 0])), /overflow/);
  });

  it("rejects a shape whose byte size wraps to zero in u64 (2^62 F32 elements with offsets [0, 0])", () => {
    refused("shape-overflow", rawSafetensors('{"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}'), /more bytes than fit in 64 bits \(overflow\)/);
  });

  it("rejects an overflowing prefix even when a later dimension is 0, as the reference's checked fold does", () => {
    refused("shape-overflow", rawSafetensors(one("t", "U8", [2 ** 32, 2 ** 32, 0], [0, 0])), /overflow/);
  });

  it("rejects missing data_offsets", () => {
    refused("entry-malformed", rawSafetensors('{"t":{"dtype":"U8","shape":[1]}}', 1), /tensor "t" entry has no "data_offsets"/);
  });

  it("rejects a missing dtype", () => {
    refused("entry-malformed", rawSafetensors('{"t":{"shape":[1],"data_offsets":[0,1]}}', 1), /entry has no "dtype"/);
  });

  it("rejects a missing shape", () => {
    refused("entry-malformed", rawSafetensors('{"t":{"dtype":"U8","data_offsets":[0,1]}}', 1), /entry has no "shape"/);
  });

  it("rejects three data_offsets", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", [1], [0, 1, 2]), 1), /data_offsets has more than 2 numbers: it must be exactly \[begin, end\]/);
  });

  it("rejects one data_offset", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", [1], [0]), 1), /data_offsets has 1 number: it must be exactly \[begin, end\]/);
  });

  it("rejects negative data_offsets", () => {
    refused("entry-malformed", rawSafetensors(one("t", "U8", [1], [-1, 0]), 1), /data_offsets holds the negative number -1/);
  });

  it("rejects data_offsets whose end is before their begin", () => {
    refused("offsets-reversed", rawSafetensors(one("t", "U8", [0], [4, 2]), 4), /data_offsets \[4, 2\] end before they begin/);
  });

  it("rejects a size mismatch between shape x dtype and the offsets", () => {
    refused("offsets-size-mismatch", rawSafetensors(one("t", "F32", [2, 2], [0, 12]), 12), /span 12 bytes, but F32 \[2, 2\] needs 16/);
  });

  it("rejects more dimensions than the rank limit", () => {
    refused("shape-invalid", rawSafetensors(one("t", "U8", new Array(65).fill(1), [0, 1]), 1), /shape has more than 64 dimensions/);
  });
});

describe("layout of the data section", () => {
  it("rejects data_offsets past end of file", () => {
    const err = refused("data-past-end", rawSafetensors(one("t", "U8", [16], [0, 16]), 8), /data_offsets end at 16, past the end of the file \(the data section has 8 bytes\)/);
    expect(err.tensor).toBe("t");
  });

  it("rejects truncated data (the file ends before the last tensor)", () => {
    const text = `{${entry("a", "F32", [4], [0, 16])},${entry("b", "F32", [4], [16, 32])}}`;
    refused("data-past-end", rawSafetensors(text, 20), /past the end of the file .* truncated/);
  });

  it("rejects data_offsets past 2^53 (a forged file size)", () => {
    refused("offsets-too-large", rawSafetensors('{"t":{"dtype":"U8","shape":[2,4503599627370497],"data_offsets":[0,9007199254740994]}}'), /point past 2\^53-1 bytes/);
  });

  it("rejects overlapping tensors", () => {
    const text = `{${entry("a", "U8", [8], [0, 8])},${entry("b", "U8", [8], [4, 12])}}`;
    const err = refused("offsets-overlap", rawSafetensors(text, 12), /overlap the previous tensor, which ends at 8/);
    expect(err.tensor).toBe("b");
  });

  it("rejects two tensors sharing the same bytes", () => {
    const text = `{${entry("a", "U8", [8], [0, 8])},${entry("b", "U8", [8], [0, 8])}}`;
    refused("offsets-overlap", rawSafetensors(text, 8), /overlap/);
  });

  it("rejects a hole between tensors", () => {
    const text = `{${entry("a", "U8", [4], [0, 4])},${entry("b", "U8", [4], [8, 12])}}`;
    refused("offsets-hole", rawSafetensors(text, 12), /leave a hole of 4 bytes/);
  });

  it("rejects offsets not starting at 0", () => {
    refused("offsets-hole", rawSafetensors(one("t", "U8", [4], [4, 8]), 8), /data_offsets begin at 4, but the first tensor must begin at 0/);
  });

  it("rejects trailing bytes after the last tensor", () => {
    refused("trailing-bytes", rawSafetensors(one("t", "U8", [4], [0, 4]), 5), /1 trailing bytes after the last tensor/);
  });

  it("rejects trailing bytes after an empty model", () => {
    refused("trailing-bytes", rawSafetensors("{}", 3), /3 trailing bytes/);
  });
});

describe("headers that cost far more than their size", () => {
  const zeroSize = (i: number) => `"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`;

  it("rejects a valid 21 MB header of 360,000 zero-size tensors (it took 530 MB) at tensor MAX_TENSORS_PER_FILE + 1", () => {
    const text = `{${Array.from({ length: 360_000 }, (_, i) => zeroSize(i)).join(",")}}`;
    expect(text.length).toBeGreaterThan(20_000_000);
    refused("too-many-tensors", rawSafetensors(text), new RegExp(`header lists more than ${MAX_TENSORS_PER_FILE} tensors, the limit for one file`));
  });

  it("accepts MAX_TENSORS_PER_FILE tensors, and the writer refuses to write more", () => {
    const text = `{${Array.from({ length: MAX_TENSORS_PER_FILE }, (_, i) => zeroSize(i)).join(",")}}`;
    expect(parse(rawSafetensors(text)).tensors.length).toBe(MAX_TENSORS_PER_FILE);
    const tensors = Array.from({ length: MAX_TENSORS_PER_FILE + 1 }, (_, i) => ({ name: `t${i}`, dtype: "F32" as const, shape: [0] }));
    expect(() => encodeHeader(tensors)).toThrow(new RegExp(`would list ${MAX_TENSORS_PER_FILE + 1} tensors, more than the ${MAX_TENSORS_PER_FILE} readers accept in one file`));
  });

  it("rejects __metadata__ of more than MAX_METADATA_ENTRIES entries (6.6 million took 2.7 GB)", () => {
    const entries = Array.from({ length: MAX_METADATA_ENTRIES + 1 }, (_, i) => `"k${i}":"v"`).join(",");
    refused("metadata-invalid", rawSafetensors(`{"__metadata__":{${entries}}}`), new RegExp(`__metadata__ has more than ${MAX_METADATA_ENTRIES} entries, the limit`));
  });

  it("decodes a 24 MB metadata value of 12 million escapes as one flat string (it took 400 MB as appended pieces)", () => {
    const text = `{"__metadata__":{"a":"${"\\n".repeat(12_000_000)}"}}`;
    global.gc?.();
    const before = process.memoryUsage().heapUsed;
    const header = parse(rawSafetensors(text));
    const value = header.metadata?.["a"] ?? "";
    expect(value.length).toBe(12_000_000);
    expect(value.slice(0, 3)).toBe("\n\n\n");
    // the 24 MB text, the 12 MB value, and change
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(150_000_000);
  });

  it("decodes escaped names and metadata exactly as JSON does, and still refuses what serde refuses", () => {
    // JSON source text: every escape JSON has, a surrogate pair, and plain text between
    const name = String.raw`a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00z`;
    const text = `{"__metadata__":{"k\\u0041":"${name}"},"${name}":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`;
    const header = parse(rawSafetensors(text, 1));
    const decoded = JSON.parse(`"${name}"`) as string;
    expect(decoded).toBe('a"b\\c/d\b\f\n\r\té\u{1f600}z');
    expect(header.tensors[0]!.name).toBe(decoded);
    expect(header.metadataEntries).toEqual([["kA", decoded]]);
    refused("header-not-json", rawSafetensors(String.raw`{"__metadata__":{"a":"\x"}}`), /invalid escape in string at character 22/);
    refused("header-not-json", rawSafetensors(String.raw`{"__metadata__":{"a":"\u12G4"}}`), /invalid \\u escape/);
    refused("header-not-json", rawSafetensors(String.raw`{"__metadata__":{"a":"\udc00"}}`), /lone surrogate/);
    refused("header-not-json", rawSafetensors(String.raw`{"__metadata__":{"a":"\ud800x"}}`), /lone surrogate/);
    refused("header-not-json", rawSafetensors('{"__metadata__":{"a":"x\ty"}}'), /control character in string/);
    refused("header-not-json", rawSafetensors(String.raw`{"__metadata__":{"a":"\n`), /unterminated string/);
  });
});
