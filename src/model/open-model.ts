/**
 * One API over every way a model is stored: a .safetensors or .bin file, a
 * directory with one weight file, a sharded directory with an index, or a
 * directory of shards without one. The index, when there is one, must agree
 * with the weight files' own headers exactly, in both directions.
 */
import { stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { ModelError, ioError } from "../errors.js";
import { INPUT_FORMATS, readWeightFile, type InputFormatName, type InputFormat } from "../formats/registry.js";
import { localFileSet, type FileSet } from "../io/file-set.js";
import { readSmallFile } from "../io/files.js";
import { JsonCursor, JsonSyntaxError } from "../json.js";
import { MAX_INDEX_BYTES, MAX_JSON_DEPTH, MAX_TENSORS_PER_MODEL } from "../limits.js";
import { isSafeRelativePath } from "../relative-path.js";
import type { ReadRange, TensorInfo, WeightFile } from "../tensors.js";
import { isExtraFile } from "./extra-files.js";
import { findMetaCheckpoint, openMetaCheckpoint } from "./meta-source.js";
import type { ModelSource } from "./types.js";

export interface OpenModelOptions {
  /** What the user named (a repo id for a Hub snapshot), for messages and delta.json; default: the path. */
  source?: string;
}

interface Layout {
  root: string;
  /** Where the files are (a directory, or a download still arriving). */
  files: FileSet;
  format: InputFormat<InputFormatName>;
  weightFiles: string[];
  indexFile?: string;
  /** The index's weight_map (tensor -> file), when there is an index. */
  weightMap?: Map<string, string>;
  extraFiles: string[];
}

/**
 * Opens the model at a local `path` (a weight file, or a model directory),
 * or in a FileSet (a directory's files, or a download still arriving: its
 * weight files are then read as their bytes come).
 */
export async function openModel(where: string | FileSet, options: OpenModelOptions = {}): Promise<ModelSource> {
  // Meta's original release is read as transformers' conversion of it.
  const meta = await findMetaCheckpoint(where);
  if (meta !== undefined) return openMetaCheckpoint(meta, options.source ?? (typeof where === "string" ? where : where.root));
  if (typeof where !== "string") return openLayout(await layoutOf(where), options.source ?? where.root);
  return openLayout(await findLayout(resolve(where)), options.source ?? where);
}

/** Opens exactly these weight files (a delta's shards, listed by its manifest) as one model. */
export async function openWeightFiles(files: FileSet, weightFiles: readonly string[], format: InputFormatName, source: string): Promise<ModelSource> {
  const inputFormat = INPUT_FORMATS.find((f) => f.name === format)!;
  return openLayout({ root: files.root, files, format: inputFormat, weightFiles: [...weightFiles], extraFiles: [] }, source);
}

async function openLayout(layout: Layout, source: string): Promise<ModelSource> {
  const files = new Map<string, WeightFile>();
  try {
    for (const rel of layout.weightFiles) {
      const file = join(layout.root, rel);
      try {
        files.set(rel, await readWeightFile(await layout.files.open(rel), layout.format));
      } catch (err) {
        if (layout.indexFile !== undefined && (err as { cause?: NodeJS.ErrnoException }).cause?.code === "ENOENT") {
          throw new ModelError(`${join(layout.root, layout.indexFile)} lists ${rel}, but ${file} does not exist: the download is incomplete`, { cause: err });
        }
        throw err;
      }
    }
    return new ComposedModel(source, layout, files);
  } catch (err) {
    await Promise.all([...files.values()].map((f) => f.close()));
    throw err;
  }
}

async function findLayout(path: string): Promise<Layout> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    throw ioError("open", path, err);
  }
  if (info.isFile()) {
    const name = basename(path);
    // Naming the index means the sharded model it describes.
    if (INPUT_FORMATS.some((f) => f.indexFile === name.toLowerCase())) return findLayout(dirname(path));
    const format = INPUT_FORMATS.find((f) => f.claimsFile(name));
    if (format === undefined) throw new ModelError(`${path} is neither a .safetensors nor a PyTorch .bin file`);
    // A single file named on its own carries no companions: its directory may hold anything.
    return { root: dirname(path), files: localFileSet(dirname(path)), format, weightFiles: [name], extraFiles: [] };
  }
  if (!info.isDirectory()) throw new ModelError(`${path} is neither a file nor a directory`);
  return layoutOf(localFileSet(path));
}

/** Which files of a model directory are its weights, its index and its companions (top level only). */
async function layoutOf(files: FileSet): Promise<Omit<Layout, "root"> & { root: string }> {
  const root = files.root;
  const names = new Set((await files.list()).filter((n) => !n.includes("/")));
  const extraFiles = [...names].filter(isExtraFile).sort();
  for (const format of INPUT_FORMATS) {
    if (names.has(format.indexFile)) {
      const weightMap = await readIndex(join(root, format.indexFile), await files.whole(format.indexFile));
      return { root, files, format, weightFiles: filesOf(weightMap), indexFile: format.indexFile, weightMap, extraFiles };
    }
    if (names.has(format.singleFile)) return { root, files, format, weightFiles: [format.singleFile], extraFiles };
    const weights = [...names].filter((n) => format.isWeightFile(n)).sort();
    if (weights.length > 0) return { root, files, format, weightFiles: weights, extraFiles };
  }
  throw new ModelError(`${root} holds no weight files (model.safetensors, *.safetensors, pytorch_model.bin or an index)`);
}

/** Shard files in name order (Hugging Face names sort in shard order). */
function filesOf(weightMap: Map<string, string>): string[] {
  return [...new Set(weightMap.values())].sort();
}

/** Reads and checks an index (named `path` in messages, read from `local`): size bounded, strict JSON, weight_map of tensor -> safe relative path. */
async function readIndex(path: string, local: string): Promise<Map<string, string>> {
  const text = await readSmallFile(local, MAX_INDEX_BYTES, "an index", "E_MODEL");
  try {
    return readWeightMap(path, new JsonCursor(text, MAX_JSON_DEPTH));
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new ModelError(`${path} is not valid JSON: ${err.message}`, { cause: err });
    throw err;
  }
}

/** The index's weight_map, read with its schema in hand: everything else is checked as JSON and skipped. */
function readWeightMap(path: string, cursor: JsonCursor): Map<string, string> {
  if (cursor.peekKind() !== "object") throw new ModelError(`${path} is not a JSON object`);
  let weightMap: Map<string, string> | undefined;
  for (const key of cursor.objectKeys(1)) {
    if (key !== "weight_map") {
      cursor.skipValue(1);
      continue;
    }
    if (weightMap !== undefined) throw new ModelError(`${path} has "weight_map" twice`);
    if (cursor.peekKind() !== "object") throw new ModelError(`${path} has no "weight_map" object`);
    weightMap = new Map();
    for (const tensor of cursor.objectKeys(2)) {
      if (weightMap.has(tensor)) throw new ModelError(`${path} lists tensor "${tensor}" twice in weight_map`);
      if (weightMap.size >= MAX_TENSORS_PER_MODEL) throw new ModelError(`${path} lists more than ${MAX_TENSORS_PER_MODEL} tensors, the limit for one model`);
      if (cursor.peekKind() !== "string") throw new ModelError(`${path}: weight_map entry "${tensor}" is not a file name`);
      const file = cursor.readString();
      checkShardPath(path, file);
      weightMap.set(tensor, file);
    }
  }
  cursor.expectEnd();
  if (weightMap === undefined) throw new ModelError(`${path} has no "weight_map" object`);
  return weightMap;
}

/** A shard path from an index must name a file inside the model directory. */
function checkShardPath(indexPath: string, file: string): void {
  if (!isSafeRelativePath(file)) throw new ModelError(`${indexPath} names the shard "${file}", which is outside the model directory: refused`);
}

class ComposedModel implements ModelSource {
  readonly source: string;
  readonly root: string;
  readonly files: FileSet;
  readonly format: InputFormatName;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly weightFiles: readonly string[];
  readonly indexFile?: string;
  readonly extraFiles: readonly string[];
  readonly metadata: ReadonlyMap<string, Record<string, string>>;
  readonly #files: Map<string, WeightFile>;

  constructor(source: string, layout: Layout, files: Map<string, WeightFile>) {
    this.source = source;
    this.root = layout.root;
    this.files = layout.files;
    this.format = layout.format.name;
    this.weightFiles = layout.weightFiles;
    if (layout.indexFile !== undefined) this.indexFile = layout.indexFile;
    this.extraFiles = layout.extraFiles;
    this.#files = files;

    const tensors = new Map<string, TensorInfo>();
    const metadata = new Map<string, Record<string, string>>();
    for (const [rel, file] of files) {
      if (file.metadata !== null) metadata.set(rel, file.metadata);
      for (const t of file.tensors) {
        const already = tensors.get(t.name);
        if (already !== undefined) {
          throw new ModelError(`tensor "${t.name}" is in both ${join(layout.root, already.file)} and ${join(layout.root, rel)}: a tensor must be in exactly one shard`);
        }
        tensors.set(t.name, { ...t, file: rel });
      }
    }
    if (layout.weightMap !== undefined) checkIndexAgrees(join(layout.root, layout.indexFile ?? ""), layout.weightMap, tensors);
    this.tensors = tensors;
    this.metadata = metadata;
  }

  readTensor(name: string, range?: ReadRange): AsyncIterable<Uint8Array> {
    const info = this.tensors.get(name);
    if (info === undefined) throw new ModelError(`${this.source} has no tensor "${name}"`);
    return (this.#files.get(info.file) as WeightFile).readTensor(name, range);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#files.values()].map((f) => f.close()));
  }
}

function checkIndexAgrees(indexPath: string, weightMap: Map<string, string>, tensors: Map<string, TensorInfo>): void {
  for (const [name, file] of weightMap) {
    const actual = tensors.get(name);
    if (actual === undefined) throw new ModelError(`${indexPath} puts tensor "${name}" in ${file}, but no shard holds it`);
    if (actual.file !== file) throw new ModelError(`${indexPath} puts tensor "${name}" in ${file}, but it is in ${actual.file}`);
  }
  for (const [name, info] of tensors) {
    if (!weightMap.has(name)) throw new ModelError(`${indexPath} does not list tensor "${name}", which is in ${info.file}`);
  }
}
