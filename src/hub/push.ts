import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError, HubError, ioError } from "../errors.js";
import { Confinement } from "../io/confine.js";
import { listRegularFiles } from "../io/files.js";
import { MAX_HUB_LISTING_ENTRIES, UPLOAD_HASH_ON_WORKERS_BYTES } from "../limits.js";
import { HashPool } from "../hash/hash-pool.js";
import type { OnProgress } from "../progress.js";
import type { CardManifest, HubBackend, RepoUpload, UploadOptions } from "./backend.js";

/**
 * Uploads a folder to a Hub model repo in one commit. The hub uploads what it
 * is given: whether the folder is a delta, and what its model card says, are
 * the caller's to decide (see api.ts pushToHub).
 */
export interface FolderUploadOptions {
  /** A write token. Without one the push fails before any request. */
  accessToken?: string;
  hubUrl?: string;
  fetch?: typeof fetch;
  /** Create the repo private (a repo that already exists keeps its visibility). */
  private?: boolean;
  /** Branch to commit to (created from main if missing); default main. */
  revision?: string;
  /** Commit title; default "Upload N files". */
  message?: string;
  /** What the generated model card shows (nothing: a plain folder's card); unused when the folder has its own README.md. */
  card?: CardManifest;
  /** How often a transient failure of one upload request is tried again (see UploadSessionOptions). */
  retry?: UploadOptions["retry"];
  onNotice?: (message: string) => void;
  onProgress?: OnProgress;
}

export interface PushResult {
  repo: string;
  /** Whether the repo can be read by anyone (false: private). */
  public: boolean;
  commitUrl?: string;
  commitId?: string;
  /** Repo paths committed, sorted (README.md included). */
  files: string[];
  /** True when README.md is the generated card (false: the folder's own README.md was kept). */
  generatedCard: boolean;
}

/**
 * Uploads `files` (repo paths under `dir`, from listUploadableFiles) to the
 * model repo `repo` of `backend`'s host in ONE commit, creating the repo if it does not
 * exist. Weights go through LFS (the Hub's preupload answer decides which
 * files). A model card README.md is added, built from `options.card`; a
 * README.md already in the folder is the author's and is uploaded unchanged
 * instead.
 */
export async function uploadFolder(backend: HubBackend, dir: string, files: readonly string[], repo: string, options: FolderUploadOptions): Promise<PushResult> {
  backend.checkPush(repo, options.accessToken);
  const generatedCard = !files.includes("README.md");
  const uploads: { path: string; source: string | Uint8Array; size: number }[] = [];
  for (const path of files) {
    const abs = join(dir, ...path.split("/"));
    const info = await stat(abs).catch((err) => { throw ioError("read", abs, err); });
    uploads.push({ path, source: abs, size: info.size });
  }
  if (generatedCard) {
    const card = new TextEncoder().encode(backend.modelCard({ repo, manifest: options.card }));
    uploads.push({ path: "README.md", source: card, size: card.length });
  }
  const large = uploads.some((u) => u.size >= UPLOAD_HASH_ON_WORKERS_BYTES);
  // Nobody told us these files' sha256: large ones are hashed on the hash workers, which read them themselves.
  const hashPool = large ? new HashPool() : undefined;
  try {
    const totalBytes = uploads.reduce((sum, u) => sum + u.size, 0);
    const session = await backend.beginUpload(repo, {
      accessToken: options.accessToken,
      hubUrl: options.hubUrl,
      fetch: options.fetch,
      private: options.private,
      revision: options.revision,
      retry: options.retry,
      onNotice: options.onNotice,
      onProgress: options.onProgress,
      totalBytes,
      ...(hashPool !== undefined ? { hashPool } : {}),
    });
    try {
      for (const u of uploads) session.add(u.path, u.source, { size: u.size });
    } catch (err) {
      await session.cancel();
      throw err;
    }
    const committed = await session.commit(options.message ?? `Upload ${uploads.length} files`);
    return { repo, ...committed, generatedCard };
  } finally {
    await hashPool?.close();
  }
}

/**
 * The end of a push made file by file (make-delta --push-to-hub): every file
 * is in the session already; the model card is made from `card` (unless a
 * README.md travelled with the files), then the one commit.
 */
export async function commitWithCard(backend: HubBackend, session: RepoUpload, card: CardManifest | undefined, message: string): Promise<PushResult> {
  const generatedCard = !session.has("README.md");
  if (generatedCard) {
    const bytes = new TextEncoder().encode(backend.modelCard({ repo: session.repo, manifest: card }));
    session.add("README.md", bytes, { size: bytes.length });
  }
  const committed = await session.commit(message);
  return { repo: session.repo, ...committed, generatedCard };
}

/** Every regular file under `dir` (links followed), as sorted repo paths; hidden ones (.git, our temporary files) are never uploaded. */
export async function listUploadableFiles(dir: string): Promise<string[]> {
  const info = await stat(dir).catch((err) => { throw ioError("read", dir, err); });
  if (!info.isDirectory()) throw ioError("read", dir, Object.assign(new Error(), { code: "ENOTDIR" }));
  try {
    // Links out of the folder are refused: they would upload files from elsewhere.
    const confine = Confinement.of(dir, "only what lies inside a directory is read from it", "E_IO");
    return await listRegularFiles(dir, { recursive: true, maxFiles: MAX_HUB_LISTING_ENTRIES, confine });
  } catch (err) {
    if (err instanceof DeltaError || !(err instanceof Error) || !/holds more than/.test(err.message)) throw err;
    throw new HubError(`Failed to push ${dir}: more than ${MAX_HUB_LISTING_ENTRIES} files`);
  }
}
