/**
 * A release published as PyTorch .bin checkpoints, recovered as those very
 * files. make-delta records, for each of the target's checkpoints, its
 * skeleton (pytorch/skeleton.ts: every byte that is not tensor data, and
 * where each tensor's bytes go), its size and sha256, and the release's own
 * index text, in pytorch-checkpoints.json, a delta file like any other
 * (delta.json lists its sha256). apply-delta --format pytorch then writes
 * each checkpoint from the skeleton and the recovered tensors, and checks it
 * against the publisher's sha256: the publisher's files, byte for byte,
 * whatever torch version or container wrote them.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { DeltaError } from "../../errors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import { PYTORCH_OUTPUT } from "../../formats/outputs/pytorch.js";
import type { HashPool } from "../../hash/hash-pool.js";
import { openRandomAccessFile } from "../../io/random-access-file.js";
import { parseJsonDocument } from "../../json.js";
import { MAX_CHECKPOINTS_FILE_BYTES } from "../../limits.js";
import type { ModelSource } from "../../model/types.js";
import { checkpointSkeleton, type SkeletonSegment } from "../../pytorch/skeleton.js";

export { PYTORCH_CHECKPOINTS_FILE } from "../../formats/weight-files.js";
const FORMAT = "delta-weights/pytorch-checkpoints/1";

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export interface RecordedCheckpoint {
  /** The release's file name, e.g. pytorch_model-00001-of-00002.bin. */
  file: string;
  /** The safetensors output the same tensors make by default. */
  output: string;
  size: number;
  sha256: string;
  segments: SkeletonSegment[];
}

export interface RecordedCheckpoints {
  files: RecordedCheckpoint[];
  /** The release's own index, verbatim. */
  index?: { file: string; text: string };
}

/**
 * The skeletons of every checkpoint of a PyTorch target, or why they cannot
 * be recorded (then apply-delta --format pytorch writes checkpoints of its
 * own layout instead).
 */
export async function recordCheckpoints(target: ModelSource, pool: HashPool): Promise<{ recorded: RecordedCheckpoints } | { refused: string }> {
  const files: RecordedCheckpoint[] = [];
  for (const rel of target.weightFiles) {
    if (rel.includes("/") || rel.startsWith(".") || !PYTORCH_OUTPUT.claimsFile(rel)) return { refused: `${rel} is not a checkpoint named at the top of the model` };
    const path = join(target.root, rel);
    const source = await openRandomAccessFile(path);
    let skeleton;
    try {
      skeleton = await checkpointSkeleton((at, n) => source.read(at, n), source.size, path);
    } finally {
      await source.close();
    }
    if ("refused" in skeleton) return { refused: `${rel}: ${skeleton.refused}` };
    const { sha256, size } = await pool.hashFile(path);
    files.push({ file: rel, output: SAFETENSORS_OUTPUT.fileNameFor(rel), size, sha256, segments: skeleton.segments });
  }
  const indexPath = join(target.root, PYTORCH_OUTPUT.indexFile);
  let index: RecordedCheckpoints["index"];
  if (target.weightFiles.length > 1) {
    const indexFile = await openRandomAccessFile(indexPath).catch(() => undefined);
    if (indexFile === undefined) return { refused: `the release has no ${PYTORCH_OUTPUT.indexFile} to record` };
    try {
      index = { file: PYTORCH_OUTPUT.indexFile, text: new TextDecoder("utf-8", { fatal: true }).decode(await indexFile.read(0, indexFile.size)) };
    } catch {
      return { refused: `${PYTORCH_OUTPUT.indexFile} is not UTF-8 text` };
    } finally {
      await indexFile.close();
    }
  }
  return { recorded: { files, ...(index === undefined ? {} : { index }) } };
}

export function formatCheckpoints(recorded: RecordedCheckpoints): string {
  const files = Object.fromEntries(recorded.files.map((f) => [f.file, {
    output: f.output,
    size: f.size,
    sha256: f.sha256,
    segments: f.segments.map((s) => ("tensor" in s ? { tensor: s.tensor, length: s.length } : { bytes: Buffer.from(s.bytes).toString("base64") })),
  }]));
  return JSON.stringify({ format: FORMAT, files, ...(recorded.index === undefined ? {} : { index: recorded.index }) }) + "\n";
}

/** Reads and checks pytorch-checkpoints.json (its sha256 against delta.json's record first). */
export function parseCheckpoints(bytes: Uint8Array, expectedSha256: string, file: string): RecordedCheckpoints {
  const fail = (problem: string): never => {
    throw new DeltaError(`${file} ${problem}; download the delta again`);
  };
  if (bytes.length > MAX_CHECKPOINTS_FILE_BYTES) fail(`is ${bytes.length} bytes, more than ${MAX_CHECKPOINTS_FILE_BYTES}`);
  if (createHash("sha256").update(bytes).digest("hex") !== expectedSha256) fail("does not match its sha256 in delta.json");
  let doc: unknown;
  try {
    doc = parseJsonDocument(new TextDecoder().decode(bytes), 8);
  } catch {
    return fail("is not JSON");
  }
  if (!isJsonObject(doc) || doc.format !== FORMAT || !isJsonObject(doc.files)) return fail(`is not a ${FORMAT} document`);
  const files: RecordedCheckpoint[] = [];
  for (const [name, entry] of Object.entries(doc.files)) {
    if (!isJsonObject(entry) || typeof entry.output !== "string" || typeof entry.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(entry.sha256)
      || typeof entry.size !== "number" || !Number.isSafeInteger(entry.size) || !Array.isArray(entry.segments)) {
      return fail(`has a malformed entry for ${name}`);
    }
    if (!PYTORCH_OUTPUT.claimsFile(name) || name.includes("/") || name.includes("\\") || name.startsWith(".")) fail(`names ${JSON.stringify(name)}, not a checkpoint file name`);
    const segments: SkeletonSegment[] = [];
    let total = 0;
    for (const s of entry.segments as unknown[]) {
      if (isJsonObject(s) && typeof s.tensor === "string" && typeof s.length === "number" && Number.isSafeInteger(s.length) && s.length >= 0) {
        segments.push({ tensor: s.tensor, length: s.length });
        total += s.length;
      } else if (isJsonObject(s) && typeof s.bytes === "string") {
        const literal = new Uint8Array(Buffer.from(s.bytes, "base64"));
        segments.push({ bytes: literal });
        total += literal.length;
      } else {
        fail(`has a malformed segment in ${name}`);
      }
    }
    if (total !== entry.size) fail(`describes ${name} as ${entry.size} bytes, but its segments make ${total}`);
    files.push({ file: name, output: entry.output, size: entry.size, sha256: entry.sha256, segments });
  }
  let index: RecordedCheckpoints["index"];
  if (doc.index !== undefined) {
    const i = doc.index;
    if (!isJsonObject(i) || i.file !== PYTORCH_OUTPUT.indexFile || typeof i.text !== "string") return fail("has a malformed index");
    index = { file: i.file, text: i.text };
  }
  return { files, ...(index === undefined ? {} : { index }) };
}
