import { join } from "node:path";
import { DeltaError, DeltaWeightsError, VerifyError } from "../../errors.js";
import type { HashPool } from "../../hash/hash-pool.js";
import { LFS_POINTER_MAX_BYTES, isLfsPointer } from "../../formats/lfs-pointer.js";
import { openWeightFiles } from "../../model/open-model.js";
import type { ModelSource } from "../../model/types.js";
import { firstDifferentTensor } from "./diagnose.js";
import { FixupSource } from "./fixups.js";
import { MANIFEST_FILE, type FileEntry, type Manifest } from "./manifest.js";
import { readManifest } from "./read-manifest.js";
import { MAX_CHECKPOINTS_FILE_BYTES } from "../../limits.js";
import { PYTORCH_CHECKPOINTS_FILE, parseCheckpoints, type RecordedCheckpoints } from "../engine/pytorch-checkpoints.js";
import { sameShape } from "../engine/pairing.js";
import { conversionProblem, planTensor, type Op, type TensorRecipe } from "../engine/recipe.js";
import { isArithmeticDType, type DType } from "../../dtypes.js";
import type { Codec } from "./manifest.js";
import type { PlannedFile } from "../engine/recover.js";
import { copiedFile, tensorFile, textFile } from "../engine/tensor-file.js";
import type { Convention, ConventionPlan, DeltaView } from "../conventions/types.js";

/**
 * Our own format: delta.json records the base's tensors, the target's every
 * file, tensor and header, and the delta's files; codec add stores
 * target - base plus the fix-ups that make base + delta exact, codec xor
 * stores target XOR base. Every output file is checked against its sha256
 * in delta.json, every base tensor as it is used.
 */
export const deltaWeights: Convention = {
  name: "delta-weights",
  accepts: ["checksums"],
  streams: true,
  exact: true,
  signatureFile: MANIFEST_FILE,

  async recognize(view) {
    const manifest = await manifestOf(view);
    return manifest === undefined
      ? { fits: false, reason: `no ${MANIFEST_FILE}` }
      : { fits: true, reason: `${MANIFEST_FILE}, format ${manifest.format}, codec ${manifest.codec}` };
  },

  async plan(view) {
    const manifest = await manifestOf(view);
    if (manifest === undefined) throw new DeltaError(`${view.source} has no ${MANIFEST_FILE}`);
    await checkDeltaFiles(view, manifest);
    const base = await view.base();
    checkBaseShapes(base, manifest);
    const deltaShards = await openWeightFiles(view.deltaFiles, manifest.delta.weights, "safetensors", view.source);
    let fixups: FixupSource | undefined;
    try {
      fixups = await FixupSource.open(manifest.delta.fixups === undefined ? undefined : await view.deltaFiles.open(manifest.delta.fixups));
      return planRecovery(view, manifest, base, deltaShards, fixups);
    } catch (err) {
      await deltaShards.close();
      await fixups?.close();
      throw err;
    }
  },

  async recordedRelease(view) {
    const entry = (await manifestOf(view))?.delta.files.get(PYTORCH_CHECKPOINTS_FILE);
    return entry === undefined ? undefined : { file: PYTORCH_CHECKPOINTS_FILE, read: () => readRecordedCheckpoints(view, entry) };
  },
};

/** Each view's delta.json, parsed and checked once; undefined when the delta has none. */
const manifests = new WeakMap<DeltaView, Promise<Manifest | undefined>>();

function manifestOf(view: DeltaView): Promise<Manifest | undefined> {
  let manifest = manifests.get(view);
  if (manifest === undefined) {
    manifest = view.files().then(async (files) => (files.includes(MANIFEST_FILE) ? readManifest(await view.deltaFiles.whole(MANIFEST_FILE)) : undefined));
    manifests.set(view, manifest);
  }
  return manifest;
}

/** The release's checkpoints make-delta recorded (pytorch-checkpoints.json), checked against delta.json's entry. */
async function readRecordedCheckpoints(view: DeltaView, entry: FileEntry): Promise<RecordedCheckpoints> {
  const file = await view.deltaFiles.open(PYTORCH_CHECKPOINTS_FILE);
  try {
    if (file.size !== entry.size || file.size > MAX_CHECKPOINTS_FILE_BYTES) {
      throw new DeltaError(`${join(view.dir, PYTORCH_CHECKPOINTS_FILE)} is ${file.size} bytes, delta.json says ${entry.size}; download the delta again`);
    }
    return parseCheckpoints(await file.read(0, file.size), entry.sha256, join(view.dir, PYTORCH_CHECKPOINTS_FILE));
  } finally {
    await file.close();
  }
}

function planRecovery(view: DeltaView, manifest: Manifest, base: ModelSource, deltaShards: ModelSource, fixups: FixupSource): ConventionPlan {
  let fixed = 0;
  const files: PlannedFile[] = [];
  for (const [rel, entry] of manifest.target.files) {
    const expected = { sha256: entry.sha256, from: MANIFEST_FILE };
    const header = manifest.target.headers.get(rel);
    if (header !== undefined) {
      files.push(tensorFile({
        path: rel,
        header,
        recipes: recipesFor(rel, manifest, base, deltaShards),
        delta: deltaShards,
        base,
        baseSha256: (name) => manifest.base.tensors.get(name)?.sha256,
        wrongBase: (name) => wrongBase(base, manifest, name, `has different values (the sha256 of its ${manifest.base.tensors.get(name)!.dtype} bytes differs)`),
        fixups,
        onFixed: (count) => { fixed += count; },
        expected,
        targetSha256: (name) => manifest.target.tensors.get(name)?.sha256,
      }));
    } else if (manifest.target.index?.file === rel) {
      files.push(textFile(rel, manifest.target.index.text, expected));
    } else {
      if (!manifest.delta.files.has(rel)) throw new DeltaError(`${join(view.dir, MANIFEST_FILE)} lists the target file ${rel}, which the delta does not carry`);
      files.push(copiedFile(rel, { files: view.deltaFiles, path: rel }, entry.size, expected));
    }
  }
  return {
    files,
    tensors: manifest.target.tensors.size,
    dropped: [...base.tensors.keys()].filter((n) => !manifest.base.tensors.has(n)),
    notes: [],
    fixups: () => fixed,
    explain: (err, { pool, tempPath }) => explainFailure(err, pool, view, manifest, tempPath),
    async close() {
      await deltaShards.close();
      await fixups.close();
    },
  };
}

/** Each tensor of a target file: from its delta tensor, with its base tensor when delta.json names one. */
function recipesFor(file: string, manifest: Manifest, base: ModelSource, deltaShards: ModelSource): Map<string, TensorRecipe> {
  const recipes = new Map<string, TensorRecipe>();
  for (const [name, entry] of manifest.target.tensors) {
    if (entry.file !== file) continue;
    const delta = deltaShards.tensors.get(name);
    if (delta === undefined) throw new DeltaError(`the delta has no tensor "${name}" for ${file}; download the delta again`);
    if (delta.dtype !== entry.dtype || !sameShape(delta.shape, entry.shape)) {
      throw new DeltaError(`${join(deltaShards.root, delta.file)}: tensor "${name}" is ${delta.dtype} [${delta.shape}], the target needs ${entry.dtype} [${entry.shape}]`);
    }
    const paired = manifest.base.tensors.has(name) ? base.tensors.get(name) : undefined;
    recipes.set(name, planTensor({ name, dtype: entry.dtype, shape: entry.shape }, paired, opFor(manifest.codec, entry.dtype, paired !== undefined), { baseSource: base.source, role: "target" }));
  }
  return recipes;
}

/**
 * The op our own codecs use for a tensor: arithmetic for floats under codec
 * add, XOR otherwise (integers and bools, whose XOR is exact and needs no
 * fix-ups), copy when the base has no such tensor. make-delta stores the
 * inverse of the same op.
 */
export function opFor(codec: Codec, dtype: DType, hasBase: boolean): Op {
  if (!hasBase) return "copy";
  return codec === "add" && isArithmeticDType(dtype) ? "add" : "xor";
}

/**
 * Every delta file the manifest lists must be there, whole, and inside the
 * delta (not a link out of it): a truncated download is named before any
 * work, and every file read later (shards, fix-ups, copied files, the
 * hashes that explain a failure) is one of these.
 */
async function checkDeltaFiles(view: DeltaView, manifest: Manifest): Promise<void> {
  const present = new Set(await view.deltaFiles.list()); // refuses links out of the delta, pipes and devices
  for (const [rel, entry] of manifest.delta.files) {
    const path = join(view.dir, ...rel.split("/"));
    if (!present.has(rel)) {
      // A directory of that name is named as one; anything else is missing.
      await view.deltaFiles.size(rel).then(
        () => undefined,
        (err: unknown) => { if (err instanceof DeltaWeightsError && /not a regular file/.test(err.message)) throw new DeltaError(`delta file ${err.message}`, { cause: err }); },
      );
      throw new DeltaError(`delta file ${path} is missing; download the delta again`);
    }
    const size = await view.deltaFiles.size(rel);
    if (size !== entry.size) {
      if (size < LFS_POINTER_MAX_BYTES && await isLfsPointerFile(view, rel)) {
        throw new DeltaError(`delta file ${path} is a Git LFS pointer, not the file: run git lfs pull (or download the delta again)`);
      }
      throw new DeltaError(`delta file ${path} is ${size} bytes, delta.json says ${entry.size}: it is truncated or corrupted; download it again`);
    }
  }
}

/** Whether a small delta file is a Git LFS pointer (a clone made without git-lfs). */
async function isLfsPointerFile(view: DeltaView, rel: string): Promise<boolean> {
  const file = await view.deltaFiles.open(rel);
  try {
    return isLfsPointer(await file.read(0, file.size));
  } finally {
    await file.close();
  }
}

/** Cheap checks first: every base tensor the delta needs exists, with the recorded shape and a convertible dtype. */
function checkBaseShapes(base: ModelSource, manifest: Manifest): void {
  for (const [name, expected] of manifest.base.tensors) {
    const actual = base.tensors.get(name);
    const problem =
      actual === undefined ? "is missing"
      : !sameShape(actual.shape, expected.shape) ? `has shape [${actual.shape}]`
      : conversionProblem(expected.dtype, actual.dtype);
    if (problem !== undefined) throw wrongBase(base, manifest, name, problem);
  }
}

function wrongBase(base: ModelSource, manifest: Manifest, name: string, problem: string): DeltaError {
  const e = manifest.base.tensors.get(name)!;
  return new DeltaError(
    `wrong base: tensor "${name}" of ${base.source} ${problem}; the delta expects ${e.dtype} [${e.shape}] with sha256 ${e.sha256.slice(0, 12)}... (the base it was made from: ${manifest.base.source})`,
  );
}

/**
 * An output that failed its check. Delta files are hashed only now: every
 * byte of a delta file (its header, every tensor, the fix-ups, the copied
 * files) goes into an output whose sha256 is checked, so outputs that match
 * prove the delta intact, and hashing it up front would cost a whole pass.
 * A corrupted delta file is named; when every delta file matches (and every
 * base tensor did), delta.json itself disagrees with the delta.
 */
async function explainFailure(err: unknown, pool: HashPool, view: DeltaView, manifest: Manifest, tempPath: string | undefined): Promise<unknown> {
  if (!(err instanceof VerifyError)) return err;
  const dir = view.dir;
  for (const [rel, entry] of manifest.delta.files) {
    const path = join(dir, ...rel.split("/"));
    // A file streamed without a copy (--no-cache-delta) may be gone by now; its download's sha256 passed.
    const sha256 = await view.deltaFiles.whole(rel).then((p) => pool.hashFile(p)).then((r) => r.sha256, () => undefined);
    if (sha256 !== undefined && sha256 !== entry.sha256) {
      return new DeltaError(`delta file ${path} has sha256 ${sha256.slice(0, 16)}..., delta.json says ${entry.sha256.slice(0, 16)}...: it is corrupted; download it again`);
    }
  }
  const tensor = tempPath === undefined ? undefined : await firstDifferentTensor(tempPath, manifest);
  return new VerifyError(
    `${err.message}${tensor === undefined ? "" : ` (tensor "${tensor}" differs)`}, although every delta file and base tensor matched: ` +
      `${join(dir, MANIFEST_FILE)} disagrees with the delta it came with (altered, or from another delta); download the delta again`,
  );
}
