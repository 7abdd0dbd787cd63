/**
 * Strict JSON reading for every JSON file the tool reads: safetensors
 * headers, model indexes, delta.json, configs and tokenizer files.
 *
 * Why not `JSON.parse`: it silently keeps the last of two duplicate keys (a
 * header could then describe a tensor twice and show a reviewer a different
 * one than a loader uses), it turns `1.0`, `1e3` and 2^64 into the same kind
 * of number as `1` (the reference implementation, serde_json into `usize`,
 * refuses all three), and it recurses without bound on `[[[[...`.
 *
 * `JsonCursor` reads a document piece by piece so a caller that knows the
 * schema (the header parser) materializes only what it needs: a 100 MB
 * header of ignored values costs no memory beyond its text. Nesting deeper
 * than `maxDepth` is refused before it can exhaust the stack.
 */

export type JsonValue =
  | { kind: "object"; entries: [string, JsonValue][] }
  | { kind: "array"; items: JsonValue[] }
  | { kind: "string"; value: string }
  | { kind: "number"; lexeme: string }
  | { kind: "boolean"; value: boolean }
  | { kind: "null" };

export type JsonKind = JsonValue["kind"];

/** A parse failure: `message` is one line, `offset` the character index. */
export class JsonSyntaxError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "JsonSyntaxError";
  }
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const SIMPLE_ESCAPES: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

export class JsonCursor {
  pos = 0;

  constructor(readonly text: string, readonly maxDepth: number) {}

  fail(what: string, at = this.pos): never {
    throw new JsonSyntaxError(`${what} at character ${at}`, at);
  }

  skipWhitespace(): void {
    const text = this.text;
    let pos = this.pos;
    for (;;) {
      const c = text.charCodeAt(pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) pos++;
      else break;
    }
    this.pos = pos;
  }

  /** The kind of the next value (after whitespace), without consuming it. */
  peekKind(): JsonKind {
    this.skipWhitespace();
    const c = this.text[this.pos];
    switch (c) {
      case "{": return "object";
      case "[": return "array";
      case '"': return "string";
      case "t": case "f":
        if (this.text.startsWith("true", this.pos) || this.text.startsWith("false", this.pos)) return "boolean";
        return this.fail(this.describe());
      case "n":
        if (this.text.startsWith("null", this.pos)) return "null";
        return this.fail(this.describe());
      default:
        if (c !== undefined && (c === "-" || (c >= "0" && c <= "9"))) return "number";
        return this.fail(this.describe());
    }
  }

  describe(at = this.pos): string {
    return at >= this.text.length ? "unexpected end of JSON" : `unexpected character ${JSON.stringify(this.text[at])}`;
  }

  /**
   * Iterates an object's keys; the caller must consume each value (read or
   * skip it) before asking for the next key. `depth` is the object's depth.
   */
  *objectKeys(depth: number): Generator<string> {
    this.enter(depth, "{");
    this.skipWhitespace();
    if (this.text[this.pos] === "}") { this.pos++; return; }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.pos] !== '"') this.fail(`${this.describe()}, expected a key`);
      const key = this.readString();
      this.skipWhitespace();
      if (this.text[this.pos] !== ":") this.fail(`${this.describe()}, expected ':'`);
      this.pos++;
      yield key;
      this.skipWhitespace();
      const c = this.text[this.pos];
      if (c === ",") { this.pos++; continue; }
      if (c === "}") { this.pos++; return; }
      this.fail(`${this.describe()}, expected ',' or '}'`);
    }
  }

  /** Iterates an array's items (yields their index); the caller consumes each item. */
  *arrayItems(depth: number): Generator<number> {
    this.enter(depth, "[");
    this.skipWhitespace();
    if (this.text[this.pos] === "]") { this.pos++; return; }
    for (let i = 0; ; i++) {
      yield i;
      this.skipWhitespace();
      const c = this.text[this.pos];
      if (c === ",") { this.pos++; continue; }
      if (c === "]") { this.pos++; return; }
      this.fail(`${this.describe()}, expected ',' or ']'`);
    }
  }

  private enter(depth: number, open: string): void {
    this.skipWhitespace();
    if (this.text[this.pos] !== open) this.fail(`${this.describe()}, expected '${open}'`);
    if (depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`);
    this.pos++;
  }

  /**
   * A string's extent and escapes are checked here (serde_json's rules: no
   * control characters, no lone surrogates), then a string with escapes is
   * decoded by JSON.parse in one native pass. Appending once per escape
   * would leave V8 a rope node per append until the string is flattened: a
   * 54 MB manifest of "\u00e9" escapes took 430 MB that way.
   */
  readString(): string {
    this.skipWhitespace();
    const text = this.text;
    const start = this.pos;
    if (text[start] !== '"') this.fail(`${this.describe()}, expected a string`);
    let pos = start + 1;
    let escaped = false;
    for (;;) {
      if (pos >= text.length) this.fail("unterminated string", pos);
      const c = text.charCodeAt(pos);
      if (c === 0x22) break;
      if (c < 0x20) this.fail("control character in string", pos);
      if (c !== 0x5c) {
        pos++;
        continue;
      }
      escaped = true;
      const e = text[pos + 1];
      if (e === undefined) this.fail("unterminated string", pos);
      if (e !== "u") {
        if (!Object.hasOwn(SIMPLE_ESCAPES, e)) this.fail("invalid escape in string", pos);
        pos += 2;
        continue;
      }
      const unit = this.readHex4(pos + 2);
      pos += 6;
      if (unit >= 0xd800 && unit <= 0xdbff) {
        if (text[pos] !== "\\" || text[pos + 1] !== "u") this.fail("lone surrogate in \\u escape", pos);
        const low = this.readHex4(pos + 2);
        if (low < 0xdc00 || low > 0xdfff) this.fail("lone surrogate in \\u escape", pos);
        pos += 6;
      } else if (unit >= 0xdc00 && unit <= 0xdfff) {
        this.fail("lone surrogate in \\u escape", pos);
      }
    }
    this.pos = pos + 1;
    return escaped ? (JSON.parse(text.slice(start, pos + 1)) as string) : text.slice(start + 1, pos);
  }

  private readHex4(at: number): number {
    const hex = this.text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("invalid \\u escape", at);
    return parseInt(hex, 16);
  }

  /** A number exactly as written. */
  readNumberLexeme(): string {
    this.skipWhitespace();
    NUMBER.lastIndex = this.pos;
    const match = NUMBER.exec(this.text);
    if (match === null) return this.fail(this.describe());
    this.pos += match[0].length;
    return match[0];
  }

  private readLiteral(): boolean | null {
    this.skipWhitespace();
    for (const [word, value] of [["true", true], ["false", false], ["null", null]] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return value;
      }
    }
    return this.fail(this.describe());
  }

  /**
   * Consumes and checks the next value without keeping it, refusing an
   * object that has a key twice. Only the keys of the objects being read
   * (one per nesting level) are held at once.
   */
  checkValue(depth: number): void {
    switch (this.peekKind()) {
      case "object": {
        const keys = new Set<string>();
        for (const key of this.objectKeys(depth + 1)) {
          if (keys.has(key)) this.fail(`duplicate key ${JSON.stringify(key.slice(0, 100))}`);
          keys.add(key);
          this.checkValue(depth + 1);
        }
        return;
      }
      case "array":
        for (const _i of this.arrayItems(depth + 1)) this.checkValue(depth + 1);
        return;
      default:
        this.skipValue(depth);
    }
  }

  /** Consumes and checks the next value without keeping any of it. */
  skipValue(depth: number): void {
    switch (this.peekKind()) {
      case "object":
        for (const _key of this.objectKeys(depth + 1)) this.skipValue(depth + 1);
        return;
      case "array":
        for (const _i of this.arrayItems(depth + 1)) this.skipValue(depth + 1);
        return;
      case "string": this.readString(); return;
      case "number": this.readNumberLexeme(); return;
      default: this.readLiteral();
    }
  }

  /** Reads the next value as a tree (for small documents). */
  readValue(depth: number): JsonValue {
    switch (this.peekKind()) {
      case "object": {
        const entries: [string, JsonValue][] = [];
        for (const key of this.objectKeys(depth + 1)) entries.push([key, this.readValue(depth + 1)]);
        return { kind: "object", entries };
      }
      case "array": {
        const items: JsonValue[] = [];
        for (const _i of this.arrayItems(depth + 1)) items.push(this.readValue(depth + 1));
        return { kind: "array", items };
      }
      case "string": return { kind: "string", value: this.readString() };
      case "number": return { kind: "number", lexeme: this.readNumberLexeme() };
      default: {
        const v = this.readLiteral();
        return v === null ? { kind: "null" } : { kind: "boolean", value: v };
      }
    }
  }

  /** After the top-level value: only JSON whitespace may follow. */
  expectEnd(): void {
    this.skipWhitespace();
    if (this.pos < this.text.length) this.fail(`trailing characters after the JSON value (${this.describe()})`);
  }
}

/**
 * A document as plain values, after the strict checks: duplicate keys, excess
 * nesting and trailing text are refused (JSON.parse would keep the last of
 * two keys, and overflow the stack on deep nesting). Objects come from
 * JSON.parse, so their keys are own properties: look them up with
 * Object.hasOwn, never `in` or plain indexing of untrusted names.
 */
export function parseJsonDocument(text: string, maxDepth: number): unknown {
  const cursor = new JsonCursor(text, maxDepth);
  cursor.checkValue(0);
  cursor.expectEnd();
  return JSON.parse(text) as unknown;
}

/** Parses a whole (small) document into a tree with ordered, duplicate-preserving objects. */
export function parseJson(text: string, maxDepth: number): JsonValue {
  const cursor = new JsonCursor(text, maxDepth);
  const value = cursor.readValue(0);
  cursor.expectEnd();
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
