import { readFile, stat } from "node:fs/promises";
import { DeltaError, ioError } from "../errors.js";
import { MAX_MANIFEST_BYTES } from "../limits.js";
import { parseManifest, type Manifest } from "./manifest.js";

/** Reads and checks delta.json at `path`; undefined when there is none. Its size is checked before it is read. */
export async function readManifest(path: string): Promise<Manifest | undefined> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw ioError("read", path, err);
  }
  if (size > MAX_MANIFEST_BYTES) throw new DeltaError(`${path} is ${size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit for a manifest`);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw ioError("read", path, err);
  }
  return parseManifest(path, text);
}
