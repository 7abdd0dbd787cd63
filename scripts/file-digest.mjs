// The benches' file digest, shared so every bench compares files the same way.
import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";

/** A file's SHA-256 (hex), read 16 MB at a time: memory stays flat on a 13 GB shard. */
export function sha256(file) {
  const hash = createHash("sha256");
  const fd = openSync(file, "r");
  const buffer = Buffer.allocUnsafe(16 * 1024 * 1024);
  try {
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}
