import { VerifyError } from "../errors.js";
import { readSmallFile } from "../io/files.js";
import { MAX_INDEX_BYTES } from "../limits.js";
import { isSafeRelativePath } from "../relative-path.js";

/**
 * A `sha256sum` list: `<64 hex>  <path>` (or ` *<path>` for binary mode) a
 * line. Returns path -> sha256, paths as written (relative to the model).
 */
export function parseChecksums(file: string, text: string): Map<string, string> {
  const sums = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "" || line.startsWith("#")) return;
    const match = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (match === null) throw new VerifyError(`${file}:${i + 1}: not a sha256sum line ("<sha256>  <file>")`);
    const path = match[2]!.replace(/^\.\//, "");
    if (!isSafeRelativePath(path)) throw new VerifyError(`${file}:${i + 1}: ${JSON.stringify(path.slice(0, 100))} is not a plain relative path inside the model`);
    if (sums.has(path)) throw new VerifyError(`${file}:${i + 1}: ${path} is listed twice`);
    sums.set(path, match[1]!.toLowerCase());
  });
  if (sums.size === 0) throw new VerifyError(`${file}: no checksums in it`);
  return sums;
}

/** A checksum list is bad input when malformed: exit 1, like any other. */
export async function readChecksums(file: string): Promise<Map<string, string>> {
  return parseChecksums(file, await readSmallFile(file, MAX_INDEX_BYTES, "a checksum list", "E_VERIFY"));
}
