/**
 * What a `torch.save(state_dict)` archive means: the zip's `<prefix>/data.pkl`
 * is unpickled with an allow-list of the globals a state dict needs, storages
 * are persistent ids naming `<prefix>/data/<key>` entries, and each tensor is a
 * view (storage offset, shape, strides) into one of them. No fs: the caller
 * hands a positioned read function.
 *
 * Allow-listed callables are interpreted here, never called:
 *   collections.OrderedDict()                     -> an empty dict
 *   torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) -> a view
 *   torch._utils._rebuild_parameter(tensor, requires_grad, hooks)                 -> the tensor
 *   torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state) -> the tensor
 *   torch.<Dtype>Storage                          -> only inside a storage persistent id
 */
import { PytorchError, type PytorchRule } from "../errors.js";
import { dtypeBytes, type DType } from "../dtypes.js";
import { MAX_PICKLE_BYTES, MAX_RANK, MAX_TENSORS_PER_FILE } from "../limits.js";
import { PickleFloat, PickleGlobal, PickleTuple, unpickle, type UnpickleHooks } from "./unpickler.js";
import { printable } from "../text.js";
import { locateEntryData, readZipDirectory, type ReadAt, type ZipEntry } from "./zip.js";

/** Throws the checkpoint's PytorchError for a broken rule (`tensor`: the tensor it concerns). */
type Fail = (rule: PytorchRule, problem: string, tensor?: string) => never;

/** torch storage class -> safetensors dtype name. */
const STORAGE_DTYPES: Record<string, DType> = {
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  FloatStorage: "F32",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
};

const ALLOWED_CALLABLES = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
]);

/** One `data/<key>` entry, shared by every tensor that views it. */
export class Storage {
  /** File position of the storage's first byte (set once the entry is located). */
  dataStart = -1;
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly numel: number,
    readonly entry: ZipEntry,
  ) {}
}

/** A tensor as torch rebuilds it: a strided view into a storage. */
export class TensorView {
  constructor(
    readonly storage: Storage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
  ) {}
}

export interface CheckpointTensor {
  name: string;
  dtype: DType;
  shape: number[];
  byteLength: number;
  view: TensorView;
}

export interface Checkpoint {
  /** The archive's top folder, e.g. "archive/" or "pytorch_model/". */
  prefix: string;
  /** Tensors in the state dict's order. */
  tensors: CheckpointTensor[];
}

/** torch.save's legacy (< 1.6) format starts with a pickled magic number. */
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

export async function readCheckpoint(read: ReadAt, fileSize: number, file: string): Promise<Checkpoint> {
  const fail: Fail = (rule, problem, tensor) => {
    throw new PytorchError(rule, file, printable(problem), tensor);
  };
  if (fileSize === 0) fail("checkpoint-empty", "is empty");
  const head = await read(0, Math.min(fileSize, LEGACY_MAGIC.length));
  if (head[0] === 0x80 && LEGACY_MAGIC.every((b, i) => head[i] === b)) {
    fail("checkpoint-legacy", "is in the legacy PyTorch format (torch < 1.6), which is not supported: re-save it with a newer torch, e.g. torch.save(torch.load(f, weights_only=True), f2)");
  }

  const entries = await readZipDirectory(read, fileSize, file);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const pickles = entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
  if (pickles.length === 0) fail("checkpoint-no-pickle", "is a zip archive without <folder>/data.pkl: not a torch.save checkpoint");
  if (pickles.length > 1) fail("checkpoint-ambiguous", `has ${pickles.length} data.pkl entries (${pickles.map((e) => e.name).join(", ")}): ambiguous`);
  const pickleEntry = pickles[0]!;
  const prefix = pickleEntry.name.slice(0, -"data.pkl".length);

  // torch >= 2.1 records the byte order of the storages; older ones wrote little-endian only.
  const byteorder = byName.get(`${prefix}byteorder`);
  if (byteorder !== undefined) {
    if (byteorder.uncompressedSize > 16) fail("byteorder-unsupported", `${byteorder.name} is ${byteorder.uncompressedSize} bytes; expected "little"`);
    const at = await locateEntryData(read, fileSize, file, byteorder);
    const order = new TextDecoder().decode(await read(at, byteorder.uncompressedSize)).trim();
    if (order === "big") fail("byteorder-unsupported", "stores tensors big-endian (byteorder \"big\"), which is not supported: re-save it on a little-endian machine");
    if (order !== "little") fail("byteorder-unsupported", `has an unknown byteorder "${order}"`);
  }

  if (pickleEntry.uncompressedSize > MAX_PICKLE_BYTES) {
    fail("pickle-too-large", `${pickleEntry.name} is ${pickleEntry.uncompressedSize} bytes, more than the limit of ${MAX_PICKLE_BYTES}`);
  }
  const pickleStart = await locateEntryData(read, fileSize, file, pickleEntry);
  const pickle = await read(pickleStart, pickleEntry.uncompressedSize);
  if (pickle.length === 0) fail("pickle-truncated", `${pickleEntry.name} is empty`);

  const storages = new Map<string, Storage>();
  const hooks: UnpickleHooks = {
    allowGlobal: (module, name) =>
      ALLOWED_CALLABLES.has(`${module}.${name}`) || (module === "torch" && Object.hasOwn(STORAGE_DTYPES, name)),
    persistentLoad: (pid) => loadStorage(pid, prefix, byName, storages, fail),
    reduce: (callable, args) => reduce(callable, args, fail),
    build: (target, state) => {
      // An OrderedDict from state_dict() carries `_metadata` (module versions)
      // as its state: irrelevant to the tensors, so it is dropped.
      if (!(target instanceof Map)) fail("call-malformed", `data.pkl applies BUILD to ${describe(target)}, which is not allowed (only a state dict's OrderedDict takes state)`);
      // What Python's BUILD accepts without __setstate__: None or a dict, or
      // a pair of those whose second (the slot state) is a dict.
      const [main, slots] = state instanceof PickleTuple && state.items.length === 2 ? state.items : [state, new Map()];
      if (!(main === null || main instanceof Map) || !(slots instanceof Map)) {
        fail("call-malformed", `data.pkl applies BUILD with ${describe(state)} as state; it must be None or a dict (or a pair of them, the second a dict)`);
      }
    },
  };
  const root = unpickle(pickle, file, hooks);

  const tensors = collectTensors(root, fail);
  // Locate each storage's bytes once: tensors sharing a storage share its entry.
  for (const storage of new Set(tensors.map((t) => t.view.storage))) {
    storage.dataStart = await locateEntryData(read, fileSize, file, storage.entry);
  }
  return { prefix, tensors };
}

/** ('storage', torch.<Dtype>Storage, key, location, numel) -> the Storage, one per key. */
function loadStorage(
  pid: unknown,
  prefix: string,
  entries: ReadonlyMap<string, ZipEntry>,
  storages: Map<string, Storage>,
  fail: Fail,
): Storage {
  if (!(pid instanceof PickleTuple) || pid.items.length !== 5 || pid.items[0] !== "storage") {
    return fail("storage-malformed", "data.pkl has a persistent id that is not a ('storage', type, key, location, numel) tuple");
  }
  const [, type, key, location, numel] = pid.items;
  if (!(type instanceof PickleGlobal) || type.module !== "torch" || !Object.hasOwn(STORAGE_DTYPES, type.name)) {
    return fail("storage-malformed", `data.pkl has a storage of type ${type instanceof PickleGlobal ? type.qualifiedName : typeof type}, which is not a supported torch storage`);
  }
  if (typeof key !== "string") return fail("storage-malformed", "data.pkl has a storage whose key is not a string");
  // torch.load refuses a location that is not a string (it restores by its name)
  if (typeof location !== "string") return fail("storage-malformed", `data.pkl storage "${key}" has the location ${describe(location)}, not a device name`);
  if (!isCount(numel)) return fail("storage-malformed", `data.pkl storage "${key}" has an element count that is ${describe(numel)}, not a non-negative integer`);
  const dtype = STORAGE_DTYPES[type.name]!;
  const existing = storages.get(key);
  if (existing !== undefined) {
    if (existing.dtype !== dtype || existing.numel !== numel) {
      return fail("storage-malformed", `data.pkl uses storage "${key}" both as ${existing.dtype} x ${existing.numel} and as ${dtype} x ${numel}`);
    }
    return existing;
  }
  const entry = entries.get(`${prefix}data/${key}`);
  if (entry === undefined) return fail("storage-missing", `data.pkl refers to storage "${key}" but the archive has no ${prefix}data/${key}`);
  const byteLength = numel * dtypeBytes(dtype);
  if (!Number.isSafeInteger(byteLength) || byteLength !== entry.uncompressedSize) {
    return fail("storage-size-mismatch", `storage "${key}" should hold ${numel} ${dtype} elements (${byteLength} bytes) but ${entry.name} is ${entry.uncompressedSize} bytes`);
  }
  const storage = new Storage(key, dtype, numel, entry);
  storages.set(key, storage);
  return storage;
}

function reduce(callable: PickleGlobal, args: readonly unknown[], fail: Fail): unknown {
  switch (callable.qualifiedName) {
    case "collections.OrderedDict":
      if (args.length !== 0) return fail("call-malformed", "data.pkl builds an OrderedDict from arguments, which torch.save does not write");
      return new Map();
    case "torch._utils._rebuild_tensor_v2": {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]):
      // torch 1.13 takes 6, torch >= 2.0 writes a 7th (a dict) for some tensors.
      // backward_hooks may be anything (torch only stores it); the rest is checked as torch does.
      if (args.length !== 6 && args.length !== 7) return fail("call-malformed", `data.pkl calls _rebuild_tensor_v2 with ${args.length} arguments; it takes 6 or 7`);
      if (typeof args[4] !== "boolean") return fail("call-malformed", `data.pkl calls _rebuild_tensor_v2 with requires_grad ${describe(args[4])}; it must be a bool`);
      if (args.length === 7 && !(args[6] instanceof Map)) return fail("call-malformed", `data.pkl calls _rebuild_tensor_v2 with metadata ${describe(args[6])}; it must be a dict`);
      return rebuildTensor(args[0], args[1], args[2], args[3], fail);
    }
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state": {
      // (data, requires_grad, backward_hooks[, state]): a Parameter is its data for us.
      const arity = callable.name === "_rebuild_parameter" ? 3 : 4;
      if (args.length !== arity) return fail("call-malformed", `data.pkl calls ${callable.name} with ${args.length} arguments; it takes ${arity}`);
      if (!(args[0] instanceof TensorView)) return fail("call-malformed", `data.pkl calls ${callable.name} on something that is not a tensor`);
      if (typeof args[1] !== "boolean") return fail("call-malformed", `data.pkl calls ${callable.name} with requires_grad ${describe(args[1])}; it must be a bool`);
      return args[0];
    }
    default:
      return fail("call-forbidden", `data.pkl calls ${callable.qualifiedName}, which is not allowed: nothing in a checkpoint is ever executed`);
  }
}

function rebuildTensor(storage: unknown, offset: unknown, size: unknown, stride: unknown, fail: Fail): TensorView {
  if (!(storage instanceof Storage)) return fail("tensor-malformed", "data.pkl rebuilds a tensor from something that is not a storage");
  if (!isCount(offset)) return fail("tensor-malformed", `data.pkl rebuilds a tensor whose storage offset is ${describe(offset)}, not a non-negative integer`);
  if (!(size instanceof PickleTuple) || !(stride instanceof PickleTuple)) return fail("tensor-malformed", "data.pkl rebuilds a tensor whose size or stride is not a tuple");
  if (size.items.length !== stride.items.length) return fail("tensor-malformed", "data.pkl rebuilds a tensor whose size and stride have different lengths");
  if (size.items.length > MAX_RANK) return fail("tensor-malformed", `data.pkl rebuilds a tensor of rank ${size.items.length}, more than the limit of ${MAX_RANK}`);
  for (const [what, items] of [["size", size.items], ["stride", stride.items]] as const) {
    const bad = items.findIndex((v) => !isCount(v));
    // torch takes ints only: a float (2.0) or a bool is refused by Tensor.set_
    if (bad >= 0) return fail("tensor-malformed", `data.pkl rebuilds a tensor whose ${what}[${bad}] is ${describe(items[bad])}, not a non-negative integer`);
  }
  return new TensorView(storage, offset, size.items as number[], stride.items as number[]);
}

/**
 * The state dict's tensors, in its order. Accepted: a flat dict of tensors
 * (what `torch.save(model.state_dict())` and transformers' shards hold), or a
 * dict whose only tensors sit in one nested dict under "state_dict" or
 * "model" (training checkpoints). Non-tensor values (ints, `_metadata`, ...)
 * are skipped: they carry no weights.
 */
function collectTensors(root: unknown, fail: Fail): CheckpointTensor[] {
  if (!(root instanceof Map)) return fail("not-a-state-dict", `holds ${describe(root)}, not a state dict (a dict of tensors)`);
  let dict = root as Map<unknown, unknown>;
  if (![...dict.values()].some((v) => v instanceof TensorView)) {
    for (const key of ["state_dict", "model"]) {
      const inner = dict.get(key);
      if (inner instanceof Map && [...inner.values()].some((v) => v instanceof TensorView)) {
        dict = inner as Map<unknown, unknown>;
        break;
      }
    }
  }
  const tensors: CheckpointTensor[] = [];
  for (const [key, value] of dict) {
    if (value instanceof Map && [...value.values()].some((v) => v instanceof TensorView)) {
      return fail("nested-state-dict", `nests tensors under "${String(key)}": only flat state dicts (or one under "state_dict" or "model") are supported`);
    }
    if (!(value instanceof TensorView)) continue;
    if (typeof key !== "string") return fail("not-a-state-dict", `has a tensor under the non-string key ${String(key)}`);
    if (tensors.length >= MAX_TENSORS_PER_FILE) {
      return fail("too-many-tensors", `holds more than ${MAX_TENSORS_PER_FILE} tensors, the limit for one file (real checkpoints hold under 2,000; a larger model is sharded)`);
    }
    tensors.push(describeTensor(key, value, fail));
  }
  return tensors;
}

function describeTensor(name: string, view: TensorView, fail: Fail): CheckpointTensor {
  const { storage, storageOffset, shape, strides } = view;
  let numel = 1;
  // The last storage element the view touches; every one must exist.
  let lastIndex = storageOffset;
  for (let i = 0; i < shape.length; i++) {
    numel *= shape[i]!;
    if (shape[i]! > 0) lastIndex += (shape[i]! - 1) * strides[i]!;
  }
  const byteLength = numel * dtypeBytes(storage.dtype);
  if (!Number.isSafeInteger(byteLength) || !Number.isSafeInteger(lastIndex)) return fail("tensor-malformed", "has a shape too large to address", name);
  if (numel > 0 && lastIndex >= storage.numel) {
    return fail("tensor-past-storage", `is a view past its storage: it needs element ${lastIndex} of storage "${storage.key}", which has ${storage.numel}`, name);
  }
  const overlap = numel > 0 ? overlappingDimension(shape, strides) : undefined;
  if (overlap !== undefined) {
    return fail("tensor-overlapping",
      `is a view whose elements overlap in storage (shape [${shape.join(", ")}], strides [${strides.join(", ")}]: ${overlap}); ` +
        "a state dict never holds one and safetensors refuses them: save tensor.clone() instead",
      name,
    );
  }
  return { name, dtype: storage.dtype, shape: [...shape], byteLength, view };
}

/**
 * Why two elements of a (non-empty) view may share a storage element, or
 * undefined when they cannot: taken by increasing stride, each dimension
 * longer than 1 must step past everything the smaller-stride ones reach.
 * Every view torch makes by slicing, narrowing, transposing or permuting a
 * tensor that owns its memory passes; an expanded view (stride 0), unfold or
 * an overlapping as_strided does not. Such a view read as its own tensor
 * repeats storage elements: a 4-byte storage "viewed" as 2^33 elements with
 * stride 0 would make convert write 34 GB.
 */
function overlappingDimension(shape: readonly number[], strides: readonly number[]): string | undefined {
  const dims = shape.map((_, d) => d).filter((d) => shape[d]! > 1).sort((a, b) => strides[a]! - strides[b]!);
  // the largest index offset the dimensions seen so far reach
  let reach = 0;
  for (const d of dims) {
    const stride = strides[d]!;
    if (stride === 0) return `dimension ${d}, of size ${shape[d]}, has stride 0`;
    if (stride <= reach) return `dimension ${d}'s stride ${stride} does not step past the ${reach + 1} elements the dimensions with smaller strides span`;
    reach += (shape[d]! - 1) * stride;
  }
  return undefined;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function describe(value: unknown): string {
  if (value instanceof TensorView) return "a single tensor";
  if (value instanceof Storage) return "a storage";
  if (value instanceof PickleGlobal) return value.qualifiedName;
  if (value instanceof PickleTuple) return "a tuple";
  if (value instanceof PickleFloat) return `the float ${Number.isInteger(value.value) ? value.value.toFixed(1) : value.value}`;
  if (value instanceof Map) return "a dict";
  if (Array.isArray(value)) return "a list";
  if (value === null) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value === "number" || typeof value === "bigint") return `the integer ${value}`;
  return `a ${typeof value}`;
}
