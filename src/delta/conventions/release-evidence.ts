import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ReleaseEvidence } from "../byte-codecs/published-lists.js";
import type { DeltaView } from "./types.js";

/**
 * What names the release a delta is, for picking a publisher's digests or
 * sum: the repo id it was fetched by (a source that is no local path), and
 * the folders it lies in (a clone's folder, the Hugging Face cache's
 * `models--org--name/snapshots/<sha>`), plus any folder inside it that holds
 * the payload.
 */
export function releaseEvidence(view: Pick<DeltaView, "source" | "dir">, payloadFolder = ""): ReleaseEvidence {
  return {
    ...(existsSync(view.source) ? {} : { hubRepo: view.source }),
    dirs: [view.source, view.dir, ...(payloadFolder === "" ? [] : [join(view.dir, payloadFolder)])],
  };
}
