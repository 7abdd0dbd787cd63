import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { ioError } from "../errors.js";
import { CHUNK_BYTES } from "../limits.js";

/** sha256 (hex) of a file, read in bounded chunks; `onBytes` reports progress. */
export async function sha256File(path: string, onBytes?: (bytes: number) => void): Promise<{ sha256: string; size: number }> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw ioError("open", path, err);
  }
  try {
    const hash = createHash("sha256");
    const buffer = new Uint8Array(CHUNK_BYTES);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, size);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
      onBytes?.(bytesRead);
    }
    return { sha256: hash.digest("hex"), size };
  } catch (err) {
    throw ioError("read", path, err);
  } finally {
    await handle.close();
  }
}

export function sha256Bytes(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}
