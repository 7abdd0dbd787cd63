import { UsageError } from "../../errors.js";

/** A Hub model repo and the revision asked for. */
export interface HubRef {
  /** `org/name` (or a legacy un-namespaced `name`). */
  repo: string;
  /** Branch, tag or 40-hex commit id; "main" when none was given. */
  revision: string;
}

/** The Hub's own bound on a repo name (namespace and name, each). */
const MAX_REPO_PART_CHARS = 96;
const REPO_PART = /^[A-Za-z0-9_.-]+$/;
const COMMIT_ID = /^[0-9a-f]{40}$/;

export function isCommitId(revision: string): boolean {
  return COMMIT_ID.test(revision);
}

/** Why `part` breaks the Hub's naming rules, or undefined if it follows them. */
function repoPartProblem(part: string): string | undefined {
  if (part.length === 0) return "has an empty part";
  if (part.length > MAX_REPO_PART_CHARS) return `has a part longer than ${MAX_REPO_PART_CHARS} characters`;
  if (!REPO_PART.test(part)) return "may only contain letters, digits, '-', '_' and '.'";
  if (part.includes("..") || part.includes("--")) return "may not contain '..' or '--'";
  if (/^[-.]|[-.]$/.test(part)) return "may not start or end with '-' or '.'";
  return undefined;
}

/** Throws a UsageError when `repo` is not a valid Hub repo id (`org/name`). */
export function validateRepoId(repo: string, options: { requireNamespace?: boolean } = {}): void {
  const parts = repo.split("/");
  if (parts.length > 2 || (options.requireNamespace === true && parts.length !== 2)) {
    throw new UsageError(`invalid Hub repo id "${repo}": expected org/name`);
  }
  for (const part of parts) {
    const problem = repoPartProblem(part);
    if (problem !== undefined) throw new UsageError(`invalid Hub repo id "${repo}": it ${problem}`);
  }
}

/** Branch or tag names: git's rules, roughly; refuses path tricks and control characters. */
function validateRevision(revision: string, src: string): void {
  const bad =
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
    revision.length === 0 || revision.length > 256 || /[\x00-\x20~^:?*[\\\x7f]/.test(revision) ||
    revision.includes("..") || revision.startsWith("/") || revision.endsWith("/") || revision.includes("//") ||
    revision.endsWith(".lock") || revision.split("/").some((p) => p.startsWith("."));
  if (bad) throw new UsageError(`invalid revision "${revision}" in ${src}: expected a branch, tag or commit id`);
}

/**
 * Reads a SRC as a Hub reference: `hf://org/name[@rev]` always, `org/name[@rev]`
 * when it has that shape. Returns undefined for anything that is not Hub-shaped
 * (callers try it as a local path first). Throws UsageError for `hf://` garbage
 * and for Hub-shaped ids that break the naming rules.
 */
export function parseHubRef(src: string): HubRef | undefined {
  const forced = src.startsWith("hf://");
  const body = forced ? src.slice("hf://".length) : src;
  const at = body.indexOf("@");
  const repo = at === -1 ? body : body.slice(0, at);
  const revision = at === -1 ? "main" : body.slice(at + 1);
  const parts = repo.split("/");
  if (!forced) {
    // Only `org/name` shapes are taken for Hub ids: `model` or `./x/y/z` are paths.
    if (parts.length !== 2 || src.startsWith(".") || src.startsWith("/") || src.includes("\\")) return undefined;
  }
  if (parts.length !== 2) throw new UsageError(`invalid Hub repo id "${src}": expected org/name[@revision]`);
  validateRepoId(repo, { requireNamespace: true });
  validateRevision(revision, src);
  return { repo, revision };
}

/** The repo id a source names, if it names one (`org/name`, `org/name@rev`, `hf://...`), for model cards. */
export function hubRepoOf(source: string): string | undefined {
  try {
    return parseHubRef(source)?.repo;
  } catch {
    return undefined;
  }
}

/** Validates a HubRef built by a library caller (parseHubRef's output always passes). */
export function checkHubRef(ref: HubRef): void {
  validateRepoId(ref.repo, { requireNamespace: true });
  validateRevision(ref.revision, `${ref.repo}@${ref.revision}`);
}
