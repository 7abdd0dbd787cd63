import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DTYPES } from "../../src/dtypes.js";
import { SafetensorsError } from "../../src/errors.js";
import { encodeHeader, encodeHeaderVerbatim, jsonString, parseHeader, readHeaderLength } from "../../src/safetensors/header.js";
import { REAL_FILES, hasRealdata, realPath } from "../helpers/realdata.js";
import { buildSafetensors, entry, rawSafetensors } from "../helpers/safetensors-bytes.js";

/** Parses a whole in-memory file the way the reader does. */
function parse(bytes: Uint8Array) {
  const n = readHeaderLength("mem.safetensors", bytes.subarray(0, 8), bytes.length);
  return parseHeader("mem.safetensors", bytes.subarray(8, 8 + n), bytes.length);
}

describe("encodeHeader matches the reference serializer's own test vectors", () => {
  // huggingface/safetensors safetensors/src/tensor.rs, test_serialization
  it("writes attn.0 F32 [1,2,3] as the Rust crate does", () => {
    const { bytes } = encodeHeader([{ name: "attn.0", dtype: "F32", shape: [1, 2, 3] }]);
    const expected = [
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
      116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
      58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
      101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0,
    ];
    // the vector has no padding: 64 bytes of JSON is already aligned; it continues with tensor data
    expect([...bytes]).toEqual(expected.slice(0, 72));
  });

  // test_serialization_forced_alignement: "attn0" pads with 7 spaces
  it("pads the header with spaces so data starts at a multiple of 8", () => {
    const { bytes } = encodeHeader([{ name: "attn0", dtype: "F32", shape: [1, 1, 2, 3] }]);
    expect(bytes.length).toBe(80);
    expect(bytes[0]).toBe(72);
    expect([...bytes.subarray(73)]).toEqual([32, 32, 32, 32, 32, 32, 32]);
  });

  // test_empty
  it("writes an empty model as {} and six spaces", () => {
    expect([...encodeHeader([]).bytes]).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  });

  it("writes metadata first: {\"__metadata__\":{\"framework\":\"pt\"}} + 5 spaces", () => {
    const expected = [
      40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
      95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
      116, 34, 125, 125, 32, 32, 32, 32, 32,
    ];
    expect([...encodeHeader([], { framework: "pt" }).bytes]).toEqual(expected);
  });
});

describe("encodeHeader ordering and escaping", () => {
  it("orders by dtype descending in the reference enum order, then by name", () => {
    const shuffled = [...DTYPES].reverse().flatMap((dtype, i) => [
      { name: `b${i}`, dtype, shape: [1] },
      { name: `a${i}`, dtype, shape: [1] },
    ]);
    const { tensors } = encodeHeader(shuffled);
    const dtypes = [...new Set(tensors.map((t) => t.dtype))];
    expect(dtypes).toEqual([...DTYPES].reverse());
    expect(tensors[0]?.name.startsWith("a")).toBe(true);
  });

  it("compares names by bytes, not by locale or UTF-16 units", () => {
    const names = ["b", "B", "a", "\u{1F600}", "\uFF21", "a.10", "a.2"];
    const { tensors } = encodeHeader(names.map((name) => ({ name, dtype: "U8" as const, shape: [1] })));
    // UTF-8 byte order: "B" < "a" < "a.10" < "a.2" < "b" < U+FF21 < U+1F600 (UTF-16 would put the emoji first)
    expect(tensors.map((t) => t.name)).toEqual(["B", "a", "a.10", "a.2", "b", "\uFF21", "\u{1F600}"]);
  });

  it("escapes strings exactly as serde_json (quote, backslash, control characters; not / or non-ASCII)", () => {
    expect(jsonString('a"b\\c/d\u00e9\u4e2d\u007f')).toBe('"a\\"b\\\\c/d\u00e9\u4e2d\u007f"');
    expect(jsonString("\n\t\r\b\f\u0001\u001f")).toBe('"\\n\\t\\r\\b\\f\\u0001\\u001f"');
  });

  it("refuses a name with a lone surrogate, which no UTF-8 header can hold", () => {
    expect(() => encodeHeader([{ name: "x\uD800", dtype: "U8", shape: [1] }])).toThrow(SafetensorsError);
  });

  it("keeps the given metadata key order, integer-like keys included", () => {
    const { bytes } = encodeHeader([], [["version", "1.0"], ["2", "two"], ["git_tag", "v1"]]);
    const text = new TextDecoder().decode(bytes.subarray(8)).trimEnd();
    expect(text).toBe('{"__metadata__":{"version":"1.0","2":"two","git_tag":"v1"}}');
  });

  it("round-trips through parseHeader", () => {
    const file = buildSafetensors(
      [
        { name: "w", dtype: "BF16", shape: [3, 5] },
        { name: "scalar", dtype: "F64", shape: [] },
        { name: "empty", dtype: "F32", shape: [0, 7] },
        { name: "naïve ✓", dtype: "I8", shape: [2] },
      ],
      { "clé": "valeur ✓" },
    );
    const h = parse(file);
    expect(h.metadata).toEqual({ "clé": "valeur ✓" });
    expect(h.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      ["scalar", "F64", []],
      ["empty", "F32", [0, 7]],
      ["w", "BF16", [3, 5]],
      ["naïve ✓", "I8", [2]],
    ]);
    expect(h.dataStart % 8).toBe(0);
  });

  it("encodeHeaderVerbatim keeps a header text byte for byte, unpadded", () => {
    const text = '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}';
    const bytes = encodeHeaderVerbatim(text);
    expect(bytes.length).toBe(8 + text.length);
    expect(new TextDecoder().decode(bytes.subarray(8))).toBe(text);
  });
});

describe.skipIf(!hasRealdata)("real files written by Hugging Face's serializer", () => {
  for (const real of REAL_FILES) {
    it(`re-encodes the header of ${real.path} byte for byte`, () => {
      const bytes = new Uint8Array(readFileSync(realPath(real.path)));
      const h = parse(bytes);
      expect(h.headerLength).toBe(real.headerLength);
      expect(h.tensors.length).toBe(real.tensors);
      expect(h.metadata === null ? null : { ...h.metadata }).toEqual(real.metadata);
      const { bytes: again } = encodeHeader(h.tensors, h.metadataEntries);
      expect(Buffer.from(again).equals(Buffer.from(bytes.subarray(0, h.dataStart)))).toBe(true);
    });
  }
});

describe("valid oddities are accepted", () => {
  it("accepts a zero-size tensor", () => {
    const h = parse(rawSafetensors(`{${entry("z", "F32", [0, 4], [0, 0])},${entry("a", "U8", [2], [0, 2])}}`, 2));
    expect(h.tensors.map((t) => t.name)).toEqual(["z", "a"]);
  });

  it("accepts a scalar (shape [])", () => {
    const h = parse(rawSafetensors(`{${entry("s", "F64", [], [0, 8])}}`, 8));
    expect(h.tensors[0]?.shape).toEqual([]);
  });

  it("accepts a header without padding", () => {
    const text = `{${entry("t", "U8", [3], [0, 3])}}`;
    expect((8 + text.length) % 8).not.toBe(0);
    expect(parse(rawSafetensors(text, 3)).tensors).toHaveLength(1);
  });

  it("accepts non-ASCII metadata", () => {
    const h = parse(rawSafetensors('{"__metadata__":{"模型":"Вікуна ✓ 🦙"}}'));
    expect(h.metadata?.["模型"]).toBe("Вікуна ✓ 🦙");
  });

  it("accepts an empty model {}", () => {
    const h = parse(rawSafetensors("{}"));
    expect(h.tensors).toEqual([]);
    expect(h.metadata).toBeNull();
  });

  it("accepts __metadata__: null", () => {
    expect(parse(rawSafetensors('{"__metadata__":null}')).metadata).toBeNull();
  });

  it("ignores unknown fields in an entry, as serde does for the reference TensorInfo", () => {
    const h = parse(rawSafetensors('{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":{"x":[1]}}}', 1));
    expect(h.tensors[0]?.name).toBe("t");
  });

  it("accepts the F8 family and every dtype of the table", () => {
    const specs = DTYPES.map((dtype, i) => ({ name: `t${i}`, dtype, shape: [2] }));
    expect(parse(buildSafetensors(specs)).tensors).toHaveLength(DTYPES.length);
  });

  it("accepts tensors listed in any order, sorting them by offset", () => {
    const h = parse(rawSafetensors(`{${entry("second", "U8", [1], [1, 2])},${entry("first", "U8", [1], [0, 1])}}`, 2));
    expect(h.tensors.map((t) => t.name)).toEqual(["first", "second"]);
  });
});
