import { readFile, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { ioError } from "../../errors.js";
import { makeDirectory } from "../../io/make-directory.js";

/**
 * The Hugging Face cache layout, exactly as Python's `huggingface_hub`
 * (file_download.py) writes it, so both tools share one cache:
 *
 *   <cache>/models--org--name/blobs/<etag>                 file bytes
 *   <cache>/models--org--name/blobs/<etag>.incomplete      a download in progress
 *   <cache>/models--org--name/snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag>
 *   <cache>/models--org--name/refs/<revision>              the commit id a branch or tag resolved to
 *   <cache>/.locks/models--org--name/<etag>.lock           flock(2)ed around writing a blob
 *
 * Our own partial downloads sit beside the blobs as `<etag>.dw.incomplete`
 * and `<etag>.dw-ranges.incomplete` (partial-blob.ts says why not
 * `<etag>.incomplete`).
 *
 * The etag is the LFS sha256 for LFS files and the git blob sha1 otherwise.
 */
export class RepoCache {
  readonly root: string;
  constructor(readonly cacheDir: string, readonly repo: string) {
    this.root = join(cacheDir, repoFolderName(repo));
  }

  blobPath(etag: string): string {
    return join(this.root, "blobs", etag);
  }

  incompletePath(etag: string): string {
    return `${this.blobPath(etag)}.incomplete`;
  }

  /** Python's lock around writing a blob: `<cache>/.locks/models--org--name/<etag>.lock` (file_download.py). */
  lockPath(etag: string): string {
    return join(this.cacheDir, ".locks", repoFolderName(this.repo), `${etag}.lock`);
  }

  snapshotDir(commit: string): string {
    return join(this.root, "snapshots", commit);
  }

  /** `file` uses "/" separators (a repo path); it was checked by `checkRepoPath`. */
  snapshotPath(commit: string, file: string): string {
    return join(this.snapshotDir(commit), ...file.split("/"));
  }

  refPath(revision: string): string {
    return join(this.root, "refs", ...revision.split("/"));
  }

  /** The commit a branch or tag resolved to when last online, if recorded. */
  async readRef(revision: string): Promise<string | undefined> {
    try {
      const text = (await readFile(this.refPath(revision), "utf8")).trim();
      return /^[0-9a-f]{40}$/.test(text) ? text : undefined;
    } catch {
      return undefined;
    }
  }

  /** Written like Python does: only when it changes, without a trailing newline. */
  async writeRef(revision: string, commit: string): Promise<void> {
    if ((await this.readRef(revision)) === commit) return;
    const path = this.refPath(revision);
    try {
      await makeDirectory(dirname(path));
      const temp = `${path}.${process.pid}.tmp`;
      await writeFile(temp, commit);
      await rename(temp, path);
    } catch (err) {
      throw ioError("write", path, err);
    }
  }

  /**
   * Points snapshots/<commit>/<file> at blobs/<etag> with a RELATIVE link
   * (os.path.relpath in Python), so the cache survives being moved.
   */
  async linkSnapshotFile(commit: string, file: string, etag: string): Promise<string> {
    const pointer = this.snapshotPath(commit, file);
    const target = relative(dirname(pointer), this.blobPath(etag)).split(sep).join("/");
    try {
      await makeDirectory(dirname(pointer));
      const existing = await readlink(pointer).catch(() => undefined);
      if (existing === target) return pointer;
      await rm(pointer, { force: true });
      await symlink(target, pointer);
    } catch (err) {
      throw ioError("link", pointer, err);
    }
    return pointer;
  }
}

/** `org/name` -> `models--org--name` (Python: repo_folder_name). */
export function repoFolderName(repo: string): string {
  return ["models", ...repo.split("/")].join("--");
}
