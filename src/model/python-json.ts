/**
 * JSON text as Python's json.dumps writes it (indent=2, sort_keys=True, the
 * default ensure_ascii=True and separators), for files whose bytes must be
 * those transformers writes: config.json, generation_config.json, the
 * tokenizer's JSON files. Pure.
 */
import { compareCodePoints } from "../text.js";
import { pythonJsonString } from "../formats/shard-plan.js";

/** An integer too large for a JS number, written as its digits (transformers' VERY_LARGE_INTEGER, int(1e30)). */
export class PythonInt {
  constructor(readonly digits: string) {}
}

export type PythonJsonValue = null | boolean | number | string | PythonInt | PythonJsonValue[] | { [key: string]: PythonJsonValue };

/** json.dumps(value, indent=2, sort_keys=True) */
export function pythonJsonDumps(value: PythonJsonValue, level = 0): string {
  const pad = "  ".repeat(level + 1);
  const end = "  ".repeat(level);
  if (value === null) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return pythonFloatOrInt(value);
  if (typeof value === "string") return pythonJsonString(value);
  if (value instanceof PythonInt) return value.digits;
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => pad + pythonJsonDumps(v, level + 1)).join(",\n")}\n${end}]`;
  }
  const keys = Object.keys(value).sort(compareCodePoints);
  if (keys.length === 0) return "{}";
  return `{\n${keys.map((k) => `${pad}${pythonJsonString(k)}: ${pythonJsonDumps(value[k] as PythonJsonValue, level + 1)}`).join(",\n")}\n${end}}`;
}

/**
 * An integral JS number is a Python int ("4096"); any other is a Python
 * float, in repr's shortest round-trip digits: fixed notation for exponents
 * -4..15 ("0.02"), scientific otherwise with at least two exponent digits
 * ("1e-06"). A float that happens to be integral cannot be told from an int
 * here: callers that need "1.0" pass it as a string they format themselves.
 */
export function pythonFloatOrInt(value: number): string {
  if (!Number.isFinite(value)) throw new RangeError(`${value} has no JSON form`);
  if (Number.isInteger(value) && Math.abs(value) < 1e16) return String(value);
  const [mantissa, exp] = value.toExponential().split("e") as [string, string];
  const exponent = Number(exp);
  const negative = mantissa.startsWith("-");
  const digits = mantissa.replace("-", "").replace(".", "");
  let text: string;
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) text = "0." + "0".repeat(-exponent - 1) + digits;
    else if (digits.length > exponent + 1) text = `${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
    else text = digits + "0".repeat(exponent + 1 - digits.length) + ".0";
  } else {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    text = `${m}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return negative ? `-${text}` : text;
}
