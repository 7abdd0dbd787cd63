import { readFile } from "node:fs/promises";
import { UsageError, ioError } from "../errors.js";
import { MAX_INDEX_BYTES } from "../limits.js";
import { stat } from "node:fs/promises";

/**
 * A `sha256sum` list: `<64 hex>  <path>` (or ` *<path>` for binary mode) a
 * line. Returns path -> sha256, paths as written (relative to the model).
 */
export function parseChecksums(file: string, text: string): Map<string, string> {
  const sums = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "" || line.startsWith("#")) return;
    const match = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (match === null) throw new UsageError(`${file}:${i + 1}: not a sha256sum line ("<sha256>  <file>")`);
    const path = match[2]!.replace(/^\.\//, "");
    sums.set(path, match[1]!.toLowerCase());
  });
  if (sums.size === 0) throw new UsageError(`${file}: no checksums in it`);
  return sums;
}

export async function readChecksums(file: string): Promise<Map<string, string>> {
  try {
    if ((await stat(file)).size > MAX_INDEX_BYTES) throw new UsageError(`${file}: too large for a checksum list`);
    return parseChecksums(file, await readFile(file, "utf8"));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw ioError("read", file, err);
  }
}
