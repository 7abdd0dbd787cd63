import { createHash } from "node:crypto";

/** sha256 (hex) of bytes in memory. */
export function sha256Bytes(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}
