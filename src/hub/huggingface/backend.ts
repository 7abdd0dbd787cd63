import type { HubBackend } from "../backend.js";
import { startSnapshotDownload } from "./download.js";
import { makeModelCard } from "./model-card.js";
import { parseHubRef } from "./repo-id.js";
import { UploadSession, checkPushRequest } from "./upload-session.js";

/** The scheme that names the Hub whatever the disk holds. */
const SCHEME = "hf://";

/**
 * The Hugging Face Hub: repo ids `org/name[@rev]` and `hf://org/name[@rev]`,
 * the HF cache layout shared with Python's huggingface_hub, and its commit
 * protocol for pushes.
 */
export const huggingFace: HubBackend = {
  name: "the Hugging Face Hub",
  isExplicit: (src) => src.startsWith(SCHEME),
  parseRef: parseHubRef,
  startDownload: startSnapshotDownload,
  checkPush: (repo, accessToken) => {
    checkPushRequest(repo, accessToken);
  },
  beginUpload: (repo, options) => UploadSession.begin(repo, options),
  modelCard: makeModelCard,
};
