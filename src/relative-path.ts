/**
 * Paths that come from files we did not write (delta.json, checksum lists,
 * indexes, Hub listings) are joined onto directories we read or write:
 * only a plain relative path inside the directory may be.
 */

/**
 * A relative path inside a directory, with "/" separators: no absolute path,
 * no drive or URL scheme (no ":"), no "..", no empty or "." part, no
 * backslash, no control character.
 */
export function isSafeRelativePath(path: string): boolean {
  if (path.length === 0 || path.length > 1024 || path.startsWith("/") || path.includes("\\") || path.includes(":")) return false;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) return false;
  return path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}
