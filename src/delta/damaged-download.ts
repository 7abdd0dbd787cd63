import { join } from "node:path";
import { DeltaError } from "../errors.js";
import { LFS_POINTER_MAX_BYTES, isLfsPointer } from "../formats/lfs-pointer.js";
import { isEncName, isReleaseDocument } from "../formats/weight-files.js";
import type { DeltaView } from "./conventions/types.js";

/**
 * Files whose bytes are never legitimately empty: weights of any format, a
 * codec's payload, a sentencepiece model. A JSON file or a document may be.
 */
const NEVER_EMPTY = /\.(safetensors|bin|pt|pth|ckpt|gguf|enc|model)$/i;

/**
 * A delta damaged in the download, named before any convention looks at its
 * files: a weight file of 0 bytes (an interrupted or failed download), or a
 * Git LFS pointer in place of a file (a clone made without git-lfs). Either
 * would otherwise be taken for something else (an XOR payload has no zip
 * header either) and the run would fail later with a misleading reason.
 */
export async function refuseDamagedDownload(view: DeltaView): Promise<void> {
  for (const rel of await view.files()) {
    const name = rel.slice(rel.lastIndexOf("/") + 1);
    if (isReleaseDocument(name)) continue;
    const size = await view.deltaFiles.size(rel);
    const path = join(view.dir, ...rel.split("/"));
    if (size === 0 && (NEVER_EMPTY.test(name) || isEncName(name))) {
      throw new DeltaError(`delta file ${path} is empty (0 bytes): a failed or interrupted download; download it again (nothing was written)`);
    }
    if (size > 0 && size < LFS_POINTER_MAX_BYTES && isLfsPointer(await view.head(rel, size))) {
      throw new DeltaError(`delta file ${path} is a Git LFS pointer, not the file: run git lfs pull in the clone (or download the delta again); nothing was written`);
    }
  }
}
