import { openAsBlob } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError, HubError, ioError } from "../errors.js";
import { MANIFEST_FILE } from "../delta/manifest.js";
import { Confinement } from "../io/confine.js";
import { listRegularFiles, readJsonFile } from "../io/files.js";
import { MAX_HUB_LISTING_ENTRIES, MAX_MANIFEST_BYTES } from "../limits.js";
import { isWeightFileName } from "../model/extra-files.js";
import type { OnProgress } from "../progress.js";
import { DEFAULT_HUB_URL } from "./download.js";
import { HubFetch, TOKEN_HOWTO, hubFailure, type FailureContext } from "./hub-errors.js";
import { makeModelCard, type CardManifest } from "./model-card.js";
import { validateRepoId } from "./repo-id.js";

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
  validateRepoId(repo, { requireNamespace: true });
  const hubUrl = (options.hubUrl ?? DEFAULT_HUB_URL).replace(/\/+$/, "");
  const token = options.accessToken;
  if (token === undefined || token === "") {
    throw new HubError(`Failed to push to ${repo}: no Hugging Face token: pass --token, set HF_TOKEN, or save one in $HF_HOME/token`);
  }
  if (!token.startsWith("hf_")) {
    throw new HubError(`Failed to push to ${repo}: the token does not look like a Hugging Face token (they start with "hf_"): check ${TOKEN_HOWTO}`);
  }

  const local = await listFolder(dir);
  const manifest = local.includes(MANIFEST_FILE) ? await readCardManifest(join(dir, MANIFEST_FILE)) : undefined;
  if (options.allowNonDelta !== true) refuseNonDelta(dir, local, manifest);
  const generatedCard = !local.includes("README.md");
  const uploads: { path: string; content: Blob }[] = [];
  for (const path of local) {
    const abs = join(dir, ...path.split("/"));
    uploads.push({ path, content: await openAsBlob(abs).catch((err) => { throw ioError("read", abs, err); }) });
  }
  if (generatedCard) uploads.push({ path: "README.md", content: new Blob([makeModelCard({ repo, manifest })]) });
  uploads.sort((a, b) => (a.path < b.path ? -1 : 1));

  const fetcher = new HubFetch(options.fetch);
  const ctx: FailureContext = { action: "push", repo, revision: options.revision, hubUrl, hasToken: true };
  const common = { hubUrl, accessToken: token, fetch: fetcher.fetch };
  const totalBytes = uploads.reduce((sum, u) => sum + u.content.size, 0);
  try {
    const hub = await import("@huggingface/hub");
    try {
      await hub.createRepo({ repo: { type: "model", name: repo }, ...(options.private === true ? { private: true } : {}), ...common });
    } catch (err) {
      const status = (err as { statusCode?: unknown }).statusCode;
      // 409: it exists. 403: a token scoped to one repo may write to it but not create repos (huggingface_hub checks the same way).
      const exists = status === 409 || (status === 403 && (await hub.modelInfo({ name: repo, ...common }).then(() => true, () => false)));
      if (!exists) throw err;
    }
    const branch = options.revision ?? "main";
    if (branch !== "main") await tolerateConflict(hub.createBranch({ repo: { type: "model", name: repo }, branch, ...common }));

    const sizes = new Map(uploads.map((u) => [u.path, u.content.size]));
    const reported = new Map<string, number>();
    const report = (path: string, fraction: number) => {
      const size = sizes.get(path) ?? 0;
      const bytes = Math.min(size, Math.round(fraction * size)) - (reported.get(path) ?? 0);
      if (bytes <= 0) return;
      reported.set(path, (reported.get(path) ?? 0) + bytes);
      options.onProgress?.({ kind: "advance", phase: "upload", bytes, label: path });
    };
    options.onProgress?.({ kind: "start", phase: "upload", totalBytes, label: repo });
    const commits = hub.commitIter({
      repo: { type: "model", name: repo },
      operations: uploads.map((u) => ({ operation: "addOrUpdate" as const, path: u.path, content: u.content })),
      title: options.message ?? (manifest !== undefined ? "Upload delta weights" : `Upload ${uploads.length} files`),
      branch,
      ...common,
    });
    let step = await commits.next();
    while (step.done !== true) {
      const event = step.value;
      if (event.event === "fileProgress" && event.state === "uploading") report(event.path, event.progress);
      if (event.event === "fileProgress" && event.state === "error") throw new HubError(`Failed to push to ${repo}: the Hub refused ${event.path}`);
      step = await commits.next();
    }
    // Regular files go inside the commit request itself: done when it is.
    for (const u of uploads) report(u.path, 1);
    options.onProgress?.({ kind: "end", phase: "upload" });
    const output = step.value;
    const info = await hub.modelInfo({ name: repo, ...common }).catch(() => undefined);
    return { repo, public: info?.private !== true, commitUrl: output?.commit.url, commitId: output?.commit.oid, files: uploads.map((u) => u.path), generatedCard };
  } catch (err) {
    throw hubFailure(err, ctx, fetcher);
  }
}

/** "Already exists" (409) is success for repo and branch creation. */
async function tolerateConflict(request: Promise<unknown>): Promise<void> {
  try {
    await request;
  } catch (err) {
    if ((err as { statusCode?: unknown }).statusCode !== 409) throw err;
  }
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
