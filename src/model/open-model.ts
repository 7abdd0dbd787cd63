/**
 * One API over every way a model is stored: a .safetensors or .bin file, a
 * directory with one weight file, a sharded directory with an index, or a
 * directory of shards without one. The index, when there is one, must agree
 * with the weight files' own headers exactly, in both directions.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, posix, resolve, sep } from "node:path";
import { DeltaWeightsError, ModelError, ioError } from "../errors.js";
import { MAX_INDEX_BYTES, MAX_JSON_DEPTH } from "../limits.js";
import type { OnProgress } from "../progress.js";
import { JsonCursor, JsonSyntaxError } from "../safetensors/json.js";
import { openSafetensorsFile } from "../safetensors/reader.js";
import { listExtraFiles } from "./extra-files.js";
import { resolveSource, type ResolveOptions } from "./resolve-source.js";
import type { ModelSource, TensorInfo, WeightFile } from "./types.js";

export type OpenModelOptions = ResolveOptions & { onProgress?: OnProgress };

export const SAFETENSORS_INDEX = "model.safetensors.index.json";
export const SAFETENSORS_SINGLE = "model.safetensors";
export const PYTORCH_INDEX = "pytorch_model.bin.index.json";
export const PYTORCH_SINGLE = "pytorch_model.bin";

/** .bin files in model directories that are pickles but not weights. */
const NON_WEIGHT_BINS = new Set(["training_args.bin", "optimizer.bin", "scheduler.bin"]);

type Format = ModelSource["format"];

interface Layout {
  root: string;
  format: Format;
  weightFiles: string[];
  indexFile?: string;
  /** The index's weight_map (tensor -> file), when there is an index. */
  weightMap?: Map<string, string>;
  extraFiles: string[];
}

export async function openModel(src: string, options: OpenModelOptions = {}): Promise<ModelSource> {
  const resolved = await resolveSource(src, options);
  const layout = await findLayout(resolved.path);
  // The PyTorch reader (zip, unpickler) is loaded only for PyTorch models.
  const opener = layout.format === "safetensors" ? openSafetensorsFile : (await import("../pytorch/index.js")).openPytorchFile;
  const files = new Map<string, WeightFile>();
  try {
    for (const rel of layout.weightFiles) {
      const path = join(layout.root, rel);
      try {
        files.set(rel, await opener(path));
      } catch (err) {
        if (layout.indexFile !== undefined && (err as { cause?: NodeJS.ErrnoException }).cause?.code === "ENOENT") {
          throw new ModelError(`${join(layout.root, layout.indexFile)} lists ${rel}, but ${path} does not exist: the download is incomplete`, { cause: err });
        }
        throw err;
      }
    }
    return new ComposedModel(resolved.source, layout, files);
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
    const lower = name.toLowerCase();
    // Naming the index means the sharded model it describes.
    if (lower === SAFETENSORS_INDEX || lower === PYTORCH_INDEX) return findLayout(dirname(path));
    const format: Format | undefined =
      lower.endsWith(".safetensors") ? "safetensors"
      : lower.endsWith(".bin") || lower.endsWith(".pt") || lower.endsWith(".pth") ? "pytorch"
      : undefined;
    if (format === undefined) throw new ModelError(`${path} is neither a .safetensors nor a PyTorch .bin file`);
    // A single file named on its own carries no companions: its directory may hold anything.
    return { root: dirname(path), format, weightFiles: [name], extraFiles: [] };
  }
  if (!info.isDirectory()) throw new ModelError(`${path} is neither a file nor a directory`);

  const names = await listRegularFiles(path);
  const extraFiles = await listExtraFiles(path);
  // safetensors is preferred when a directory holds both formats (as transformers does).
  if (names.has(SAFETENSORS_INDEX)) {
    const weightMap = await readIndex(path, SAFETENSORS_INDEX);
    return { root: path, format: "safetensors", weightFiles: filesOf(weightMap), indexFile: SAFETENSORS_INDEX, weightMap, extraFiles };
  }
  if (names.has(SAFETENSORS_SINGLE)) return { root: path, format: "safetensors", weightFiles: [SAFETENSORS_SINGLE], extraFiles };
  const safetensors = [...names].filter((n) => n.toLowerCase().endsWith(".safetensors")).sort();
  if (safetensors.length > 0) return { root: path, format: "safetensors", weightFiles: safetensors, extraFiles };

  if (names.has(PYTORCH_INDEX)) {
    const weightMap = await readIndex(path, PYTORCH_INDEX);
    return { root: path, format: "pytorch", weightFiles: filesOf(weightMap), indexFile: PYTORCH_INDEX, weightMap, extraFiles };
  }
  if (names.has(PYTORCH_SINGLE)) return { root: path, format: "pytorch", weightFiles: [PYTORCH_SINGLE], extraFiles };
  const bins = [...names].filter((n) => n.toLowerCase().endsWith(".bin") && !NON_WEIGHT_BINS.has(n.toLowerCase())).sort();
  if (bins.length > 0) return { root: path, format: "pytorch", weightFiles: bins, extraFiles };

  throw new ModelError(`${path} holds no weight files (model.safetensors, *.safetensors, pytorch_model.bin or an index)`);
}

async function listRegularFiles(dir: string): Promise<Set<string>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw ioError("list", dir, err);
  }
  const files = new Set<string>();
  for (const name of names) {
    if (name.startsWith(".")) continue;
    const info = await stat(join(dir, name)).catch(() => undefined);
    if (info?.isFile() === true) files.add(name);
  }
  return files;
}

/** Shard files in name order (Hugging Face names sort in shard order). */
function filesOf(weightMap: Map<string, string>): string[] {
  return [...new Set(weightMap.values())].sort();
}

/** Reads and checks an index: size bounded, strict JSON, weight_map of tensor -> safe relative path. */
async function readIndex(root: string, indexName: string): Promise<Map<string, string>> {
  const path = join(root, indexName);
  let text: string;
  try {
    const info = await stat(path);
    if (info.size > MAX_INDEX_BYTES) throw new ModelError(`${path} is ${info.size} bytes, over the ${MAX_INDEX_BYTES}-byte limit for an index`);
    text = await readFile(path, "utf8");
  } catch (err) {
    if (err instanceof DeltaWeightsError) throw err;
    throw ioError("read", path, err);
  }
  try {
    return readWeightMap(path, root, new JsonCursor(text, MAX_JSON_DEPTH));
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new ModelError(`${path} is not valid JSON: ${err.message}`, { cause: err });
    throw err;
  }
}

/** The index's weight_map, read with its schema in hand: everything else is checked as JSON and skipped. */
function readWeightMap(path: string, root: string, cursor: JsonCursor): Map<string, string> {
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
      if (cursor.peekKind() !== "string") throw new ModelError(`${path}: weight_map entry "${tensor}" is not a file name`);
      const file = cursor.readString();
      checkShardPath(path, root, file);
      weightMap.set(tensor, file);
    }
  }
  cursor.expectEnd();
  if (weightMap === undefined) throw new ModelError(`${path} has no "weight_map" object`);
  return weightMap;
}

/** A shard path from an index must name a file inside the model directory. */
function checkShardPath(indexPath: string, root: string, file: string): void {
  const normalized = posix.normalize(file.replaceAll("\\", "/"));
  const escapes =
    file === "" || isAbsolute(file) || /^[A-Za-z]:/.test(file) || file.startsWith("/") ||
    normalized === ".." || normalized.startsWith("../") || normalized === "." ||
    !resolve(root, file).startsWith(resolve(root) + sep);
  if (escapes) throw new ModelError(`${indexPath} names the shard "${file}", which is outside the model directory: refused`);
}

class ComposedModel implements ModelSource {
  readonly source: string;
  readonly root: string;
  readonly format: Format;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly weightFiles: readonly string[];
  readonly indexFile?: string;
  readonly extraFiles: readonly string[];
  readonly metadata: ReadonlyMap<string, Record<string, string>>;
  readonly #files: Map<string, WeightFile>;

  constructor(source: string, layout: Layout, files: Map<string, WeightFile>) {
    this.source = source;
    this.root = layout.root;
    this.format = layout.format;
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

  readTensor(name: string, options?: { start?: number; end?: number; chunkBytes?: number }): AsyncIterable<Uint8Array> {
    const info = this.tensors.get(name);
    if (info === undefined) throw new ModelError(`${this.source} has no tensor "${name}"`);
    return (this.#files.get(info.file) as WeightFile).readTensor(name, options);
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
