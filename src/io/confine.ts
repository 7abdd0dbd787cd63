import { existsSync, realpathSync } from "node:fs";
import { basename, dirname, join, relative, isAbsolute } from "node:path";
import { DeltaWeightsError, ioError, type ErrorCode } from "../errors.js";

/**
 * The files of a downloaded directory (a delta: its delta.json, shards,
 * fix-ups, config) are read only from inside it. A symbolic link is
 * followed only when it resolves inside the directory, or, for a Hugging
 * Face cache snapshot (`<cache>/models--org--name/snapshots/<commit>/`,
 * whose files are relative links to `../../blobs/<etag>`), inside that
 * repo's `blobs/`. A delta that a hostile publisher shipped as a git clone
 * or an archive could otherwise hold `config.json -> ~/.ssh/id_ed25519`,
 * and apply-delta would copy the key into the recovered model (and push
 * upload it). A refusal names the link, never where it leads.
 */
export class Confinement {
  private constructor(
    /** The directory as the user named it, for messages. */
    readonly dir: string,
    private readonly roots: readonly string[],
    private readonly code: ErrorCode,
    private readonly rule: string,
  ) {}

  /** The confinement of `dir` (which must exist); `rule` ends a refusal ("a delta's files must lie inside it"). */
  static of(dir: string, rule: string, code: ErrorCode): Confinement {
    let real: string;
    try {
      real = realpathSync(dir);
    } catch (err) {
      throw ioError("open", dir, err);
    }
    const roots = [real];
    const snapshots = dirname(real);
    const repo = dirname(snapshots);
    if (basename(snapshots) === "snapshots" && /^(models|datasets|spaces)--/.test(basename(repo)) && existsSync(join(repo, "blobs"))) {
      roots.push(realpathSync(join(repo, "blobs")));
    }
    return new Confinement(dir, roots, code, rule);
  }

  /** Whether the real path `real` lies inside one of the allowed roots. */
  allows(real: string): boolean {
    return this.roots.some((root) => isInsideReal(real, root));
  }

  /**
   * Throws when `path` (inside the directory) resolves outside what it may.
   * A path that does not exist passes: opening it reports that.
   */
  check(path: string): void {
    let real: string;
    try {
      real = realpathSync(path);
    } catch {
      return; // a missing file, a dangling link, a loop: opening it names the failure (and reads nothing)
    }
    if (!this.allows(real)) throw this.refusal(path);
  }

  /** The refusal of `path`, which leads outside: where it leads is not named (that may be a secret's name). */
  refusal(path: string): DeltaWeightsError {
    return new DeltaWeightsError(this.code, `${path} is a symbolic link that leads outside ${this.dir}: refused (${this.rule})`);
  }
}

function isInsideReal(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === "" || (rel !== ".." && !rel.startsWith("../") && !isAbsolute(rel));
}
