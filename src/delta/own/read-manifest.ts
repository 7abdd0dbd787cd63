import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { Confinement } from "../../io/confine.js";
import { readSmallFile } from "../../io/files.js";
import { MAX_MANIFEST_BYTES } from "../../limits.js";
import { parseManifest, type Manifest } from "./manifest.js";

/**
 * Reads and checks delta.json at `path`; undefined when there is none. Its
 * size is checked before it is read, and it must lie in its directory (a
 * link out of a downloaded delta is refused; a Hub snapshot's link into its
 * blobs is not a link out).
 */
export async function readManifest(path: string): Promise<Manifest | undefined> {
  if (!existsSync(path)) return undefined;
  Confinement.of(dirname(path), "a delta's files must lie inside it", "E_DELTA").check(path);
  return parseManifest(path, await readSmallFile(path, MAX_MANIFEST_BYTES, "a manifest", "E_DELTA"));
}
