/**
 * Text helpers shared by every layer: sizes for people, code-point order,
 * and escaping of untrusted text before it reaches a terminal.
 */

/** Bytes for people, in decimal units as Hugging Face shows sizes: "999 B", "1.5 MB", "13.5 GB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${Math.round(bytes)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** "1 file", "3 files" */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/**
 * Orders strings by Unicode code point, as Python's str and Rust's byte-wise
 * UTF-8 order do (JavaScript's < compares UTF-16 units, which differs above
 * U+FFFF).
 */
export function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done === true) return y.done === true ? 0 : -1;
    if (y.done === true) return 1;
    const cx = (x.value as string).codePointAt(0) as number;
    const cy = (y.value as string).codePointAt(0) as number;
    if (cx !== cy) return cx - cy;
  }
}

/**
 * Characters a terminal acts on rather than shows: C0 and C1 controls (ESC
 * starts a sequence that can clear or rewrite the screen, CR overwrites the
 * line), DEL, the Unicode line and paragraph separators, bidirectional
 * overrides that reorder what is shown, and lone surrogates.
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Untrusted text (tensor names, file names and metadata from a model file,
 * paths from a manifest) made safe to print on one terminal line: every
 * character a terminal would act on becomes a visible \u escape (a newline
 * is \u000a, ESC \u001b).
 */
export function printable(text: string): string {
  return text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * JSON text with the characters JSON.stringify leaves raw but a terminal
 * acts on (DEL, C1 controls, U+2028/9, bidi overrides) written as \u
 * escapes: still the same JSON value.
 */
export function terminalSafeJson(json: string): string {
  return json.replace(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
