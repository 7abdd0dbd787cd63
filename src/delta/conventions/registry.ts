import { DeltaError, UsageError } from "../../errors.js";
import { deltaWeights } from "./delta-weights.js";
import { alpaca } from "./alpaca.js";
import { enc } from "./enc.js";
import { fastchat } from "./fastchat.js";
import { fastchatV0 } from "./fastchat-v0.js";
import { koala } from "./koala.js";
import { llava } from "./llava.js";
import { ziya } from "./ziya.js";
import type { Convention, DeltaView, Recognition } from "./types.js";
import { xorPayload } from "./xor-payload.js";

/**
 * Every convention apply-delta knows, in the order they are tried: byte
 * codecs first (their files are not checkpoints, so no tensor rule could
 * read them), then the most specific evidence (a manifest; LLaVA's config
 * fields; Ziya's whole embeddings; a one-token vocabulary growth in half or
 * single precision), FastChat's last (it asks least of the files).
 */
export const CONVENTIONS: readonly Convention[] = [enc, xorPayload, koala, deltaWeights, llava, ziya, fastchatV0, alpaca, fastchat];

/**
 * The convention the delta's files follow, and why. With `forced` (the
 * user's --convention) that one, unless the files contradict it.
 */
export async function chooseConvention(view: DeltaView, forced?: string): Promise<{ convention: Convention; recognition: Recognition }> {
  if (forced !== undefined) {
    const convention = CONVENTIONS.find((c) => c.name === forced);
    if (convention === undefined) throw new UsageError(`--convention ${forced}: unknown; expected one of ${CONVENTIONS.map((c) => c.name).join(", ")}`);
    const recognition = await convention.recognize(view);
    if (!recognition.fits) throw new DeltaError(`--convention ${forced} does not fit ${view.source}: ${recognition.reason}`);
    return { convention, recognition: { fits: true, reason: `--convention ${forced} (${recognition.reason})` } };
  }
  const reasons: string[] = [];
  for (const convention of CONVENTIONS) {
    const recognition = await convention.recognize(view);
    if (recognition.fits) return { convention, recognition };
    reasons.push(`${convention.name}: ${recognition.reason}`);
  }
  throw new DeltaError(`${view.source} follows no delta convention this tool knows (${reasons.join("; ")})`);
}
