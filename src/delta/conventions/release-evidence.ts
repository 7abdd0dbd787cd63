import { join } from "node:path";
import type { DeltaView } from "./types.js";

/**
 * What names the release a delta is, for picking a publisher's digests or
 * sum: the repo id it was fetched by (a source that is no local path), and
 * the folders it lies in (a clone's folder, the Hugging Face cache's
 * `models--org--name/snapshots/<sha>`), plus any folder inside it that holds
 * the payload.
 */
export function releaseEvidence(view: Pick<DeltaView, "source" | "dir" | "hubRepo">, payloadFolder = ""): ReleaseEvidence {
  return {
    ...(view.hubRepo === undefined ? {} : { hubRepo: view.hubRepo }),
    dirs: [view.source, view.dir, ...(payloadFolder === "" ? [] : [join(view.dir, payloadFolder)])],
  };
}

/** What a delta offers as evidence of which release it is. */
export interface ReleaseEvidence {
  /** The Hub repo id the delta was fetched from (`org/name`, `org/name@rev`, `hf://...`), when it came from the Hub. */
  hubRepo?: string;
  /** Local directories holding the delta (as given, and the payload folder inside it): their names count too. */
  dirs: readonly string[];
  /** sha256 of output files known without decoding them (from .enc names), by output path. */
  sha256?: ReadonlyMap<string, string>;
}

/**
 * Whether `evidence` names the Hub repo `repo` (org/name), and how, in words
 * for the summary: by repo id, by its Hugging Face cache folder
 * (`models--org--name/snapshots/<sha>`), or by the folder a clone gives it
 * (`name`). Every table of published digests and sums is picked this one way.
 */
export function namesRepo(evidence: ReleaseEvidence, repo: string): string | undefined {
  const given = evidence.hubRepo === undefined ? undefined : /^(?:hf:\/\/)?([^@]+)/.exec(evidence.hubRepo)?.[1]?.toLowerCase();
  const parts = evidence.dirs.map((d) => d.split(/[\\/]/).filter((part) => part !== "").map((part) => part.toLowerCase()));
  // A clone's folder is named after the repo; the payload folder inside it
  // (Pygmalion's xor_encoded_files) says nothing, its parent does.
  const names = parts.flatMap((p) => (p.at(-1) === "xor_encoded_files" ? p.slice(-2) : p.slice(-1)));
  const wanted = repo.toLowerCase();
  const name = wanted.slice(wanted.indexOf("/") + 1);
  if (given === wanted) return `the delta's repo id ${repo}`;
  if (parts.some((p) => p.includes(`models--${wanted.replace("/", "--")}`))) return `the delta's Hugging Face cache folder (${repo})`;
  if (names.includes(name)) return `the delta's directory name (${name}, as a clone of ${repo} is named)`;
  return undefined;
}
