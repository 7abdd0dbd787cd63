/**
 * apply-delta --format pytorch (or another tensor-file format): the recovery
 * plan's safetensors outputs become files of that format. PyTorch's are
 * checkpoints, each byte-identical to torch.save (1.13) of a
 * dict of its tensors in the header's data order, named as save_pretrained
 * names PyTorch shards (model-00001-of-00002.safetensors ->
 * pytorch_model-00001-of-00002.bin), with pytorch_model.bin.index.json in
 * place of the safetensors index. Every other file is unchanged.
 *
 * A checkpoint's own sha256 is not what the publisher recorded (they
 * recorded the safetensors file's), so each of its tensors is checked
 * instead, as it streams, against the tensor's sha256 in delta.json: the
 * file is then checked against delta.json's tensors (its zip and pickle
 * frame follow from the names, dtypes and shapes alone). A convention whose
 * publisher recorded no tensor digests leaves the file unverified, as its
 * safetensors output would have been.
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { DeltaError, UsageError } from "../errors.js";
import type { TensorFileFormat } from "../formats/output-format.js";
import { SAFETENSORS_OUTPUT } from "../formats/outputs/safetensors.js";
import { formatIndex } from "../formats/shard-plan.js";
import { parseHeaderJson } from "../safetensors/header.js";
import { dtypeBytes } from "../dtypes.js";
import type { ConventionPlan } from "./conventions/types.js";
import type { PlannedFile } from "./engine/recover.js";
import { tensorSpecOf, textFile, writeRecipes, type TensorFileSpec } from "./engine/tensor-file.js";
import { SkeletonWriter } from "../pytorch/skeleton.js";
import { MANIFEST_FILE } from "./own/manifest.js";
import { PYTORCH_CHECKPOINTS_FILE, type RecordedCheckpoint, type RecordedCheckpoints } from "./engine/pytorch-checkpoints.js";

export interface RetargetOptions {
  /** Add the `byteorder` record torch >= 2.1 writes. */
  byteorderRecord?: boolean;
  /** The release's own checkpoints, recorded by make-delta: written as published instead. */
  recorded?: RecordedCheckpoints;
}

const noSink = { write: async () => undefined };

/**
 * Rewrites `plan.files` in place for output in `format`; refuses a plan with
 * no tensor files: byte codecs restore the publisher's own files, and the
 * conventions with writers of their own (LoRA merges, Koala) write safetensors.
 */
export function retargetTensorFiles(plan: ConventionPlan, convention: string, format: TensorFileFormat, options: RetargetOptions = {}): void {
  if (plan.baseFiles !== undefined) {
    throw new UsageError(`--format ${format.name}: the ${convention} convention restores the publisher's own files byte for byte, in their own format; run without --format`);
  }
  if (!plan.files.some((f) => tensorSpecOf(f) !== undefined)) {
    throw new UsageError(
      `--format ${format.name}: the ${convention} convention writes its tensors as safetensors only; run without --format, then delta-weights convert TARGET OUT_DIR --format ${format.name} if you need ${format.title} files`,
    );
  }
  if (options.recorded !== undefined) {
    plan.files = releaseFiles(plan.files, options.recorded);
    return;
  }
  const files: PlannedFile[] = [];
  const weightMap = new Map<string, string>();
  let totalSize = 0;
  let allChecked = true;
  let index: { at: number; dir: string; from?: string } | undefined;
  for (const file of plan.files) {
    const spec = tensorSpecOf(file);
    const dir = posix.dirname(file.path);
    if (spec !== undefined) {
      const converted = retargetedFile(spec, file.reads, format, options);
      allChecked &&= converted.checkedBy !== undefined;
      for (const t of parseHeaderJson(spec.path, new TextEncoder().encode(spec.header)).tensors) {
        weightMap.set(t.name, posix.basename(converted.path));
        totalSize += t.shape.reduce((n, d) => n * d, 1) * dtypeBytes(t.dtype);
      }
      files.push(converted);
    } else if (posix.basename(file.path) === SAFETENSORS_OUTPUT.indexFile) {
      index = { at: files.length, dir, ...(file.expected === undefined ? {} : { from: file.expected.from }) };
      files.push(file); // replaced below, once every shard's tensors are known
    } else {
      files.push(file);
    }
  }
  if (index !== undefined) {
    const path = index.dir === "." ? format.indexFile : `${index.dir}/${format.indexFile}`;
    const text = textFile(path, formatIndex(totalSize, weightMap));
    // The index is the checked shards' own names and tensor list.
    if (allChecked && index.from !== undefined) text.checkedBy = `${index.from}'s tensor list`;
    files[index.at] = text;
  }
  const seen = new Set<string>();
  for (const f of files) {
    if (seen.has(f.path)) throw new DeltaError(`--format ${format.name} would write ${f.path} twice: the delta also carries a file of that name`);
    seen.add(f.path);
  }
  plan.files = files;
}

/** One safetensors output as a file of `format`, its tensors checked against the publisher's tensor digests where recorded. */
function retargetedFile(spec: TensorFileSpec, reads: PlannedFile["reads"], format: TensorFileFormat, options: RetargetOptions): PlannedFile {
  const dir = posix.dirname(spec.path);
  const name = format.shardName(posix.basename(spec.path));
  const path = dir === "." ? name : `${dir}/${name}`;
  const tensors = parseHeaderJson(spec.path, new TextEncoder().encode(spec.header)).tensors;
  const writeOptions = { byteorderRecord: options.byteorderRecord === true };
  const size = format.create(noSink, path, tensors, writeOptions).fileSize;
  const checked = spec.targetSha256 !== undefined && tensors.every((t) => spec.targetSha256!(t.name) !== undefined);
  return {
    path,
    size,
    ...(reads === undefined ? {} : { reads }),
    ...(spec.expected === undefined || !checked ? {} : { checkedBy: `${spec.expected.from}'s tensor sha256s` }),
    produce: (sink, context) => writeRecipes({ ...spec, path }, format.create(sink, sink.finalPath, tensors, writeOptions), context, checked),
  };
}

/**
 * The release's own checkpoints and index in place of the safetensors
 * outputs: each written from its recorded skeleton and the recovered
 * tensors, and checked against the publisher's sha256 (recorded in
 * pytorch-checkpoints.json, itself checked against delta.json).
 */
function releaseFiles(planned: readonly PlannedFile[], recorded: RecordedCheckpoints): PlannedFile[] {
  const byOutput = new Map(recorded.files.map((f) => [f.output, f]));
  const files: PlannedFile[] = [];
  const used = new Set<string>();
  for (const file of planned) {
    const spec = tensorSpecOf(file);
    if (spec !== undefined) {
      const checkpoint = byOutput.get(spec.path);
      if (checkpoint === undefined) throw new DeltaError(`${PYTORCH_CHECKPOINTS_FILE} records no checkpoint for ${spec.path}`);
      used.add(checkpoint.file);
      files.push(releaseCheckpoint(spec, file.reads, checkpoint));
    } else if (posix.basename(file.path) === SAFETENSORS_OUTPUT.indexFile) {
      if (recorded.index === undefined) throw new DeltaError(`${PYTORCH_CHECKPOINTS_FILE} records no index for the sharded release`);
      const text = recorded.index.text;
      files.push(textFile(recorded.index.file, text, { sha256: createHash("sha256").update(text).digest("hex"), from: MANIFEST_FILE }));
    } else {
      files.push(file);
    }
  }
  const unused = recorded.files.filter((f) => !used.has(f.file));
  if (unused.length > 0) throw new DeltaError(`${PYTORCH_CHECKPOINTS_FILE} records ${unused.map((f) => f.file).join(", ")}, which no output of delta.json makes`);
  return files;
}

function releaseCheckpoint(spec: TensorFileSpec, reads: PlannedFile["reads"], checkpoint: RecordedCheckpoint): PlannedFile {
  const header = new Map(parseHeaderJson(spec.path, new TextEncoder().encode(spec.header)).tensors.map((t) => [t.name, t]));
  const placed = checkpoint.segments.flatMap((s) => ("tensor" in s ? [s] : []));
  for (const s of placed) {
    const t = header.get(s.tensor);
    if (t === undefined || t.end - t.begin !== s.length) {
      throw new DeltaError(`${PYTORCH_CHECKPOINTS_FILE} places ${s.length} bytes of tensor "${s.tensor}" in ${checkpoint.file}, which ${spec.path} ${t === undefined ? "does not hold" : `holds as ${t.end - t.begin} bytes`}`);
    }
  }
  if (placed.length !== header.size || new Set(placed.map((s) => s.tensor)).size !== header.size) {
    throw new DeltaError(`${PYTORCH_CHECKPOINTS_FILE} does not place each tensor of ${spec.path} in ${checkpoint.file} exactly once`);
  }
  return {
    path: checkpoint.file,
    size: checkpoint.size,
    ...(reads === undefined ? {} : { reads }),
    expected: { sha256: checkpoint.sha256, from: MANIFEST_FILE },
    produce: (sink, context) => {
      const writer = new SkeletonWriter(sink, sink.finalPath, checkpoint.segments);
      const tensors = writer.tensors.map((t) => header.get(t.name)!);
      return writeRecipes({ ...spec, path: checkpoint.file }, { tensors, writeTensor: (name, chunks) => writer.writeTensor(name, chunks), finish: () => writer.finish() }, context, false);
    },
  };
}
