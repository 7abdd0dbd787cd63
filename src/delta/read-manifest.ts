import { existsSync } from "node:fs";
import { readSmallFile } from "../io/files.js";
import { MAX_MANIFEST_BYTES } from "../limits.js";
import { parseManifest, type Manifest } from "./manifest.js";

/** Reads and checks delta.json at `path`; undefined when there is none. Its size is checked before it is read. */
export async function readManifest(path: string): Promise<Manifest | undefined> {
  if (!existsSync(path)) return undefined;
  return parseManifest(path, await readSmallFile(path, MAX_MANIFEST_BYTES, "a manifest", "E_DELTA"));
}
