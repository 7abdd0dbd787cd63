import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { HubBackend, RemoteRef } from "./backend.js";
import { huggingFace } from "./huggingface/backend.js";

/**
 * Every host a source may name, asked in this order. A mirror or another
 * host is one module implementing HubBackend and one entry here.
 */
const BACKENDS: readonly HubBackend[] = [huggingFace];

/** Where `push` and make-delta --push-to-hub upload. */
export const PUSH_BACKEND: HubBackend = huggingFace;

/** Where a source is read from (see locateSource). */
export type SourceLocation =
  | { kind: "local"; path: string }
  | { kind: "remote"; backend: HubBackend; ref: RemoteRef }
  | { kind: "missing" };

/**
 * The one place that decides whether a SRC is read from disk or fetched.
 * A source a host names explicitly (`hf://...`) is remote; otherwise an
 * existing local path wins over a repo id of the same shape (`org/name` may
 * be a folder); otherwise a repo-shaped id is remote, and anything else is a
 * local path that does not exist. Throws a UsageError for an explicit or
 * repo-shaped source that breaks its host's naming rules.
 */
export function locateSource(src: string): SourceLocation {
  const explicit = BACKENDS.find((backend) => backend.isExplicit(src));
  if (explicit === undefined && existsSync(src)) return { kind: "local", path: resolve(src) };
  for (const backend of explicit !== undefined ? [explicit] : BACKENDS) {
    const ref = backend.parseRef(src);
    if (ref !== undefined) return { kind: "remote", backend, ref };
  }
  return { kind: "missing" };
}

/** Whether `src` names a host explicitly (then it was never looked for on disk). */
export function namesHostExplicitly(src: string): boolean {
  return BACKENDS.some((backend) => backend.isExplicit(src));
}
