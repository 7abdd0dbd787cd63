import { statSync } from "node:fs";
import { VerifyError } from "../errors.js";
import { MAX_CHECKSUM_LIST_BYTES } from "../limits.js";

/**
 * A checksum list larger than MAX_CHECKSUM_LIST_BYTES is refused before the
 * library reads it (the library's reader allows any small file's size, far
 * more than a list needs). Anything else (missing, a pipe) is left for the
 * reader to name.
 */
export function checkChecksumListSize(path: string | undefined): void {
  if (path === undefined) return;
  let size: number;
  try {
    const info = statSync(path);
    if (!info.isFile()) return;
    size = info.size;
  } catch {
    return;
  }
  if (size > MAX_CHECKSUM_LIST_BYTES) {
    throw new VerifyError(`Failed to read ${path}: ${size} bytes is more than the ${MAX_CHECKSUM_LIST_BYTES}-byte limit for a checksum list (a model's is a few KB)`);
  }
}
