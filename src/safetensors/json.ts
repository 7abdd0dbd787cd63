/**
 * A small strict JSON parser for safetensors headers.
 *
 * Why not `JSON.parse`: it silently keeps the last of two duplicate keys (a
 * header could then describe a tensor twice and show a reviewer a different
 * one than a loader uses), it turns `1.0`, `1e3` and 2^64 into the same kind
 * of number as `1` (the reference implementation, serde_json into `usize`,
 * refuses all three), and it recurses without bound on `[[[[...`.
 * This parser keeps object entries in order with duplicates detected, keeps
 * number lexemes as written, and refuses nesting deeper than `maxDepth`
 * before it can exhaust the stack.
 */

export type JsonValue =
  | { kind: "object"; entries: [string, JsonValue][] }
  | { kind: "array"; items: JsonValue[] }
  | { kind: "string"; value: string }
  | { kind: "number"; lexeme: string }
  | { kind: "boolean"; value: boolean }
  | { kind: "null" };

/** A parse failure: `message` is one line, `offset` the character index. */
export class JsonSyntaxError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "JsonSyntaxError";
  }
}

const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const SIMPLE_ESCAPES: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

export function parseJson(text: string, maxDepth: number): JsonValue {
  let pos = 0;

  const fail = (what: string, at = pos): never => {
    throw new JsonSyntaxError(`${what} at character ${at}`, at);
  };
  const skipWhitespace = (): void => {
    while (pos < text.length && WHITESPACE.has(text.charCodeAt(pos))) pos++;
  };
  const describe = (at: number): string =>
    at >= text.length ? "unexpected end of JSON" : `unexpected character ${JSON.stringify(text[at])}`;

  const parseString = (): string => {
    // pos is at the opening quote
    pos++;
    let out = "";
    let runStart = pos;
    for (;;) {
      if (pos >= text.length) fail("unterminated string");
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(runStart, pos);
        pos++;
        return out;
      }
      if (c < 0x20) fail("control character in string");
      if (c !== 0x5c) {
        pos++;
        continue;
      }
      out += text.slice(runStart, pos);
      const e = text[pos + 1];
      if (e === undefined) fail("unterminated string");
      if (e === "u") {
        const unit = readHex4(pos + 2);
        pos += 6;
        if (unit >= 0xd800 && unit <= 0xdbff) {
          // serde_json refuses lone surrogates; so do we (a name must be valid Unicode)
          if (text[pos] !== "\\" || text[pos + 1] !== "u") fail("lone surrogate in \\u escape");
          const low = readHex4(pos + 2);
          if (low < 0xdc00 || low > 0xdfff) fail("lone surrogate in \\u escape");
          pos += 6;
          out += String.fromCharCode(unit, low);
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          fail("lone surrogate in \\u escape");
        } else {
          out += String.fromCharCode(unit);
        }
      } else {
        const simple = SIMPLE_ESCAPES[e as string];
        if (simple === undefined) fail("invalid escape in string", pos);
        out += simple;
        pos += 2;
      }
      runStart = pos;
    }
  };

  const readHex4 = (at: number): number => {
    const hex = text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("invalid \\u escape", at);
    return parseInt(hex, 16);
  };

  const parseValue = (depth: number): JsonValue => {
    skipWhitespace();
    const c = text[pos];
    if (c === "{" || c === "[") {
      if (depth >= maxDepth) fail(`nesting deeper than ${maxDepth} levels`);
      return c === "{" ? parseObject(depth + 1) : parseArray(depth + 1);
    }
    if (c === '"') return { kind: "string", value: parseString() };
    if (c === "t" && text.startsWith("true", pos)) { pos += 4; return { kind: "boolean", value: true }; }
    if (c === "f" && text.startsWith("false", pos)) { pos += 5; return { kind: "boolean", value: false }; }
    if (c === "n" && text.startsWith("null", pos)) { pos += 4; return { kind: "null" }; }
    NUMBER.lastIndex = pos;
    const match = NUMBER.exec(text);
    if (match === null) return fail(describe(pos));
    pos += match[0].length;
    return { kind: "number", lexeme: match[0] };
  };

  const parseObject = (depth: number): JsonValue => {
    pos++;
    const entries: [string, JsonValue][] = [];
    skipWhitespace();
    if (text[pos] === "}") { pos++; return { kind: "object", entries }; }
    for (;;) {
      skipWhitespace();
      if (text[pos] !== '"') fail(`${describe(pos)}, expected a key`);
      const key = parseString();
      skipWhitespace();
      if (text[pos] !== ":") fail(`${describe(pos)}, expected ':'`);
      pos++;
      entries.push([key, parseValue(depth)]);
      skipWhitespace();
      if (text[pos] === ",") { pos++; continue; }
      if (text[pos] === "}") { pos++; return { kind: "object", entries }; }
      fail(`${describe(pos)}, expected ',' or '}'`);
    }
  };

  const parseArray = (depth: number): JsonValue => {
    pos++;
    const items: JsonValue[] = [];
    skipWhitespace();
    if (text[pos] === "]") { pos++; return { kind: "array", items }; }
    for (;;) {
      items.push(parseValue(depth));
      skipWhitespace();
      if (text[pos] === ",") { pos++; continue; }
      if (text[pos] === "]") { pos++; return { kind: "array", items }; }
      fail(`${describe(pos)}, expected ',' or ']'`);
    }
  };

  const value = parseValue(0);
  skipWhitespace();
  if (pos < text.length) fail(`trailing characters after the JSON value (${describe(pos)})`);
  return value;
}

/** The first key that appears twice in an object's entries, if any. */
export function firstDuplicateKey(entries: readonly [string, JsonValue][]): string | undefined {
  const seen = new Set<string>();
  for (const [key] of entries) {
    if (seen.has(key)) return key;
    seen.add(key);
  }
  return undefined;
}
