// The benches' file digest and SHA-256 rate, shared so every bench measures them the same way.
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

/** SHA-256 bytes per CPU-second on one core (CPU time, so other work on the machine matters less). */
export function sha256PerCpuSecond() {
  const buffer = Buffer.alloc(16 * 1024 * 1024, 0x5a);
  createHash("sha256").update(buffer).digest(); // warm up
  const cpuSeconds = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1e6; };
  let bytes = 0;
  const start = cpuSeconds();
  do {
    createHash("sha256").update(buffer).digest();
    bytes += buffer.length;
  } while (cpuSeconds() - start < 0.5);
  return bytes / (cpuSeconds() - start);
}
