import { describe, expect, it } from "vitest";
import { JsonSyntaxError, firstDuplicateKey, parseJson } from "../src/json.js";

describe("strict JSON", () => {
  it("keeps duplicate keys and their order, which JSON.parse would merge", () => {
    const v = parseJson('{"b":1,"a":2,"b":3}', 8);
    expect(v.kind === "object" && v.entries.map(([k]) => k)).toEqual(["b", "a", "b"]);
    expect(v.kind === "object" && firstDuplicateKey(v.entries)).toBe("b");
  });

  it("keeps number lexemes as written (1, 1.0, 1e0 and 2^64 stay distinguishable)", () => {
    const v = parseJson("[1,1.0,1e0,18446744073709551616,-0]", 8);
    expect(v.kind === "array" && v.items.map((i) => (i.kind === "number" ? i.lexeme : ""))).toEqual(["1", "1.0", "1e0", "18446744073709551616", "-0"]);
  });

  it("decodes escapes, including surrogate pairs", () => {
    expect(parseJson('"a\\n\\u00e9\\ud83d\\ude00\\/"', 8)).toEqual({ kind: "string", value: "a\né\u{1F600}/" });
  });

  it.each([
    ["{", "unexpected end"],
    ['{"a" 1}', "expected ':'"],
    ["[1,]", "unexpected character"],
    ['"\\x"', "invalid escape"],
    ['"a\nb"', "control character"],
    ["01", "trailing characters"],
    ["tru", "unexpected character"],
    ["{} x", "trailing characters"],
    ['"\\udc00"', "lone surrogate"],
  ])("refuses %j (%s)", (text, why) => {
    expect(() => parseJson(text, 8)).toThrow(JsonSyntaxError);
    expect(() => parseJson(text, 8)).toThrow(why);
  });

  it("refuses nesting deeper than the limit without recursing further", () => {
    expect(() => parseJson("[".repeat(100_000), 64)).toThrow(/nesting deeper than 64 levels/);
    expect(parseJson("[".repeat(64) + "]".repeat(64), 64).kind).toBe("array");
  });
});
