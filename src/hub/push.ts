import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError, HubError, ioError } from "../errors.js";
import { MANIFEST_FILE } from "../delta/own/manifest.js";
import { Confinement } from "../io/confine.js";
import { listRegularFiles, readJsonFile } from "../io/files.js";
import { MAX_HUB_LISTING_ENTRIES, MAX_MANIFEST_BYTES, UPLOAD_HASH_ON_WORKERS_BYTES } from "../limits.js";
import { isWeightFileName } from "../model/extra-files.js";
import { HashPool } from "../hash/hash-pool.js";
import type { OnProgress } from "../progress.js";
import { makeModelCard, type CardManifest } from "./model-card.js";
import { UploadSession, type UploadSessionOptions, checkPushRequest } from "./upload-session.js";

export interface PushOptions {
  /** A write token. Without one the push fails before any request. */
  accessToken?: string;
  hubUrl?: string;
  fetch?: typeof fetch;
  /** Create the repo private (a repo that already exists keeps its visibility). */
  private?: boolean;
  /** Branch to commit to (created from main if missing); default main. */
  revision?: string;
  /** Commit title. */
  message?: string;
  /**
   * Upload a directory that is not a delta (no delta.json, or weight files
   * delta.json does not list). Off by default: pushing a base or a full
   * fine-tune by mistake publishes exactly what deltas exist to keep private.
   */
  allowNonDelta?: boolean;
  /** How often a transient failure of one upload request is tried again (see UploadSessionOptions). */
  retry?: UploadSessionOptions["retry"];
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
 * Uploads every file of `dir` to the Hub model repo `repo` in ONE commit,
 * creating the repo if it does not exist. Weights go through LFS (the Hub's
 * preupload answer decides which files). A model card README.md is added,
 * built from the folder's delta.json; a README.md already in the folder is the
 * author's and is uploaded unchanged instead. Hidden files and folders
 * (`.git`, `.cache`, temporary `.partial` files) are not uploaded.
 */
export async function pushToHub(dir: string, repo: string, options: PushOptions): Promise<PushResult> {
  // The repo id and token are checked before the folder is read: nothing is read or sent for a push that cannot happen.
  checkPushRequest(repo, options.accessToken);
  const local = await listFolder(dir);
  const manifest = local.includes(MANIFEST_FILE) ? await readCardManifest(join(dir, MANIFEST_FILE)) : undefined;
  if (options.allowNonDelta !== true) refuseNonDelta(dir, local, manifest);
  const generatedCard = !local.includes("README.md");
  const uploads: { path: string; source: string | Uint8Array; size: number }[] = [];
  for (const path of local) {
    const abs = join(dir, ...path.split("/"));
    const info = await stat(abs).catch((err) => { throw ioError("read", abs, err); });
    uploads.push({ path, source: abs, size: info.size });
  }
  if (generatedCard) {
    const card = new TextEncoder().encode(makeModelCard({ repo, manifest }));
    uploads.push({ path: "README.md", source: card, size: card.length });
  }
  const large = uploads.some((u) => u.size >= UPLOAD_HASH_ON_WORKERS_BYTES);
  // Nobody told us these files' sha256: large ones are hashed on the hash workers, which read them themselves.
  const hashPool = large ? new HashPool() : undefined;
  try {
    const totalBytes = uploads.reduce((sum, u) => sum + u.size, 0);
    const session = await UploadSession.begin(repo, { ...options, totalBytes, ...(hashPool !== undefined ? { hashPool } : {}) });
    try {
      for (const u of uploads) session.add(u.path, u.source, { size: u.size });
    } catch (err) {
      await session.cancel();
      throw err;
    }
    const title = options.message ?? (manifest !== undefined ? "Upload delta weights" : `Upload ${uploads.length} files`);
    const committed = await session.commit(title);
    return { repo, ...committed, generatedCard };
  } finally {
    await hashPool?.close();
  }
}

/**
 * The end of a make-delta --push-to-hub: every delta file is in the session
 * already; the model card is made from the delta.json just written (unless a
 * README.md travelled with the delta), then the one commit.
 */
export async function commitDelta(session: UploadSession, dir: string, message: string | undefined): Promise<PushResult> {
  const generatedCard = !session.has("README.md");
  if (generatedCard) {
    const card = new TextEncoder().encode(makeModelCard({ repo: session.repo, manifest: await readCardManifest(join(dir, MANIFEST_FILE)) }));
    session.add("README.md", card, { size: card.length });
  }
  const committed = await session.commit(message ?? "Upload delta weights");
  return { repo: session.repo, ...committed, generatedCard };
}

/** Every regular file under `dir` (links followed), as sorted repo paths; hidden ones (.git, our temporary files) are never uploaded. */
async function listFolder(dir: string): Promise<string[]> {
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

/** delta.json as the model card reads it: strict JSON, bounded; only the fields the card shows are used. */
async function readCardManifest(path: string): Promise<CardManifest> {
  const value = await readJsonFile(path, MAX_MANIFEST_BYTES, "a manifest", "E_DELTA");
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new DeltaError(`Failed to read ${path}: not a JSON object`);
  return value as CardManifest;
}

/**
 * A push publishes: a directory without delta.json, or with weight files
 * delta.json does not list, holds weights that are not a delta (a base, a
 * full fine-tune) and is refused unless the caller says so.
 */
function refuseNonDelta(dir: string, files: readonly string[], manifest: CardManifest | undefined): void {
  if (manifest === undefined) {
    throw new HubError(`Failed to push ${dir}: it holds no ${MANIFEST_FILE}, so it is not a delta; a push makes its weights downloadable (by anyone, unless the repo is private): pass --allow-non-delta to upload it anyway`);
  }
  const listed = manifest.delta?.files ?? {};
  const unlisted = files.find((f) => isWeightFileName(f) && !Object.hasOwn(listed, f));
  if (unlisted !== undefined) {
    throw new HubError(`Failed to push ${dir}: ${unlisted} is a weight file that ${MANIFEST_FILE} does not list, so it is not part of the delta (a base or a full model?); remove it, or pass --allow-non-delta to upload it anyway`);
  }
}
