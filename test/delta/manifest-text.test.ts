/**
 * delta.json is written piece by piece and read with its schema in hand:
 * both must agree with plain JSON, byte for byte and value for value.
 */
import { describe, expect, it } from "vitest";
import { manifestPieces, parseManifest, serializeManifest, type Manifest } from "../../src/delta/own/manifest.js";

const SHA = "ab".repeat(32);

function sample(header: string): Manifest {
  return {
    format: "delta-weights/1",
    codec: "add",
    tool: "delta-weights test",
    base: { source: "org/base", tensors: new Map([["w", { dtype: "F16", shape: [2, 3], sha256: SHA }], ["__proto__", { dtype: "BF16", shape: [], sha256: SHA }]]), dropped: ["gone", "constructor"] },
    target: {
      source: "org/target",
      files: new Map([["model.safetensors", { size: 123, sha256: SHA }], ["config.json", { size: 4, sha256: SHA }], ["model.safetensors.index.json", { size: 9, sha256: SHA }]]),
      tensors: new Map([["w", { dtype: "F16", shape: [2, 3], sha256: SHA, file: "model.safetensors" }], ["__proto__", { dtype: "BF16", shape: [], sha256: SHA, file: "model.safetensors" }]]),
      headers: new Map([["model.safetensors", header]]),
      index: { file: "model.safetensors.index.json", text: '{\n  "weight_map": {}\n}\n' },
    },
    delta: { files: new Map([["model.safetensors", { size: 123, sha256: SHA }], ["delta-fixups.safetensors", { size: 64, sha256: SHA }]]), weights: ["model.safetensors"], fixups: "delta-fixups.safetensors" },
  };
}

/** What JSON.stringify makes of the same manifest (own properties for every key, __proto__ too). */
function reference(m: Manifest): string {
  const object = (map: Map<string, unknown>) => {
    const out = {};
    for (const [k, v] of map) Object.defineProperty(out, k, { value: v, enumerable: true });
    return out;
  };
  return JSON.stringify({
    format: m.format, codec: m.codec, tool: m.tool,
    base: { source: m.base.source, tensors: object(m.base.tensors), dropped: m.base.dropped },
    target: { source: m.target.source, files: object(m.target.files), tensors: object(m.target.tensors), headers: object(m.target.headers), index: m.target.index },
    delta: { files: object(m.delta.files), weights: m.delta.weights, fixups: m.delta.fixups },
  }, null, 1) + "\n";
}

describe("delta.json text", () => {
  it("is what JSON.stringify(value, null, 1) writes, for a small manifest", () => {
    const m = sample('{"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}');
    expect(serializeManifest(m)).toBe(reference(m));
  });

  it("is the same for a header of several MB written in pieces, a surrogate pair across a piece's end", () => {
    const header = "a".repeat((1 << 20) - 1) + "\u{1F600}" + "é\u2028\"\\".repeat(700_000);
    const m = sample(header);
    const pieces = [...manifestPieces(m)];
    expect(pieces.every((p) => p.length <= (1 << 20) * 6 + 2)).toBe(true);
    expect(pieces.join("")).toBe(reference(m));
  });

  it("reads back what it writes, every name a plain key", () => {
    const m = sample("{}");
    expect(parseManifest("delta.json", serializeManifest(m))).toEqual(m);
  });

  it("skips unknown fields but still refuses a key given twice inside them", () => {
    const text = serializeManifest(sample("{}")).replace('"tool":', '"future": {"a": 1, "b": [1, {"c": 2}]},\n "tool":');
    expect(parseManifest("delta.json", text).tool).toBe("delta-weights test");
    expect(() => parseManifest("delta.json", text.replace('"b": [1', '"a": 2, "b": [1'))).toThrow(/not valid JSON \(duplicate key "a"/);
  });

  it("refuses a manifest whose target has no files (it would be 'verified' having recovered nothing)", () => {
    const m = sample("{}");
    const empty: Manifest = { ...m, target: { ...m.target, files: new Map(), tensors: new Map(), headers: new Map(), index: undefined }, delta: { files: new Map(), weights: [] } };
    expect(() => parseManifest("delta.json", serializeManifest(empty))).toThrow(/target\.files is empty: there is nothing to recover/);
  });

  it.each([["1.0"], ["1e2"], ["-1"], ["9007199254740993"]])("refuses a size written as %s (only a whole number as written)", (size) => {
    const text = serializeManifest(sample("{}")).replace('"size": 123', `"size": ${size}`);
    expect(() => parseManifest("delta.json", text)).toThrow(/files\["model\.safetensors"\] needs a size and a sha256/);
  });
});
