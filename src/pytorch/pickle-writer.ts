/**
 * The data.pkl that torch.save writes for a flat state dict, byte for byte:
 * Python's C pickler at protocol 2 (torch.save's default) driven by
 * torch.serialization's persistent_id, for a dict or OrderedDict of
 * contiguous tensors that each own their storage.
 *
 * What the C pickler emits, and so what this writes:
 * - PROTO 2, no framing (frames start at protocol 4), STOP at the end.
 * - Every object it saves is memoized in save order (BINPUT below 256,
 *   LONG_BINPUT from 256 on) and saved again as BINGET / LONG_BINGET: the
 *   globals (`torch._utils _rebuild_tensor_v2`, each storage class,
 *   `collections OrderedDict`) and the constant strings 'storage' and 'cpu'
 *   are saved once; names, storage keys, tuples and reduced objects are new
 *   objects each time. The empty tuple is never memoized.
 * - Strings as BINUNICODE (UTF-8); ints as BININT1 / BININT2 / BININT, or
 *   LONG1 past 32 bits; tuples of 1-3 items as TUPLE1-3, longer ones as
 *   MARK ... TUPLE.
 * - A tensor as `_rebuild_tensor_v2(storage, 0, size, stride, False,
 *   OrderedDict())`, the storage as a persistent id
 *   ('storage', <dtype>Storage, key, 'cpu', numel) and BINPERSID, keys
 *   "0", "1", ... in save order.
 * - A dict's items in batches of 1,000 (MARK ... SETITEMS), a lone item as
 *   SETITEM, and (batch_dict_exact) an empty MARK SETITEMS after a last batch
 *   of exactly 1,000. An OrderedDict is `OrderedDict()` reduced, its items
 *   from an iterator (batch_dict): the same batches, but a last lone item is
 *   a SETITEM and no empty batch follows.
 */
import { ModelError } from "../errors.js";
import type { DType } from "../dtypes.js";

/** The container torch.save was given: transformers' shards are plain dicts; model.state_dict() is an OrderedDict (without its `_metadata` here). */
export type StateDictContainer = "dict" | "OrderedDict";

export interface PickledTensor {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

/** torch 1.13's storage class for each dtype it can save (no unsigned 16/32/64-bit or float8 types there). */
const STORAGE_CLASS: Partial<Record<DType, string>> = {
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  F32: "FloatStorage",
  F64: "DoubleStorage",
  C64: "ComplexFloatStorage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

/** The storage class torch.save names for `dtype`, or undefined when torch 1.13 has none. */
export function storageClassFor(dtype: DType): string | undefined {
  return STORAGE_CLASS[dtype];
}

/** Python's dict/OrderedDict pickling batch size (pickle.py _BATCHSIZE, _pickle.c BATCHSIZE). */
const BATCH_SIZE = 1000;

const OP = {
  PROTO: 0x80, STOP: 0x2e, MARK: 0x28, EMPTY_DICT: 0x7d, EMPTY_TUPLE: 0x29,
  BINPUT: 0x71, LONG_BINPUT: 0x72, BINGET: 0x68, LONG_BINGET: 0x6a,
  BINUNICODE: 0x58, GLOBAL: 0x63, BININT1: 0x4b, BININT2: 0x4d, BININT: 0x4a, LONG1: 0x8a,
  TUPLE: 0x74, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87, NEWFALSE: 0x89,
  REDUCE: 0x52, BINPERSID: 0x51, SETITEM: 0x73, SETITEMS: 0x75,
} as const;

/** An append-only byte buffer that grows by doubling. */
class Bytes {
  #buffer = new Uint8Array(4096);
  #length = 0;

  byte(value: number): void {
    this.#reserve(1);
    this.#buffer[this.#length++] = value;
  }

  bytes(values: Uint8Array): void {
    this.#reserve(values.length);
    this.#buffer.set(values, this.#length);
    this.#length += values.length;
  }

  uint(value: number, width: 1 | 2 | 4): void {
    this.#reserve(width);
    for (let i = 0; i < width; i++) this.#buffer[this.#length++] = Math.floor(value / 2 ** (8 * i)) & 0xff;
  }

  result(): Uint8Array {
    return this.#buffer.slice(0, this.#length);
  }

  #reserve(n: number): void {
    if (this.#length + n <= this.#buffer.length) return;
    let size = this.#buffer.length * 2;
    while (size < this.#length + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = grown;
  }
}

const utf8 = new TextEncoder();

class Pickler {
  readonly out = new Bytes();
  #memoSize = 0;
  /** Memo indexes of the objects saved once and fetched after (globals, constant strings). */
  readonly #shared = new Map<string, number>();

  put(): void {
    const index = this.#memoSize++;
    if (index < 256) {
      this.out.byte(OP.BINPUT);
      this.out.byte(index);
    } else {
      this.out.byte(OP.LONG_BINPUT);
      this.out.uint(index, 4);
    }
  }

  /** Saves a shared object: the first time with `save` and a memo entry, then by BINGET. */
  shared(key: string, save: () => void): void {
    const index = this.#shared.get(key);
    if (index === undefined) {
      save();
      this.#shared.set(key, this.#memoSize);
      this.put();
    } else if (index < 256) {
      this.out.byte(OP.BINGET);
      this.out.byte(index);
    } else {
      this.out.byte(OP.LONG_BINGET);
      this.out.uint(index, 4);
    }
  }

  global(module: string, name: string): void {
    this.shared(`global:${module}\n${name}`, () => {
      this.out.byte(OP.GLOBAL);
      this.out.bytes(utf8.encode(`${module}\n${name}\n`));
    });
  }

  /** A string object saved once (a new object each time: names, storage keys). */
  string(value: string): void {
    const bytes = utf8.encode(value);
    this.out.byte(OP.BINUNICODE);
    this.out.uint(bytes.length, 4);
    this.out.bytes(bytes);
    this.put();
  }

  /** A string constant of torch's code (one object, memoized once). */
  constant(value: string): void {
    this.shared(`str:${value}`, () => {
      const bytes = utf8.encode(value);
      this.out.byte(OP.BINUNICODE);
      this.out.uint(bytes.length, 4);
      this.out.bytes(bytes);
    });
  }

  int(value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`cannot pickle ${value} as a size`);
    if (value <= 0xff) {
      this.out.byte(OP.BININT1);
      this.out.byte(value);
    } else if (value <= 0xffff) {
      this.out.byte(OP.BININT2);
      this.out.uint(value, 2);
    } else if (value <= 0x7fffffff) {
      this.out.byte(OP.BININT);
      this.out.uint(value, 4);
    } else {
      // LONG1: little-endian two's complement in (bit length / 8) + 1 bytes, as encode_long sizes it.
      let big = BigInt(value);
      const count = Math.floor(big.toString(2).length / 8) + 1;
      this.out.byte(OP.LONG1);
      this.out.byte(count);
      for (let i = 0; i < count; i++) {
        this.out.byte(Number(big & 0xffn));
        big >>= 8n;
      }
    }
  }

  /** A tuple of ints (a tensor's size or stride): EMPTY_TUPLE, TUPLE1-3, or MARK ... TUPLE; memoized unless empty. */
  intTuple(values: readonly number[]): void {
    if (values.length === 0) {
      this.out.byte(OP.EMPTY_TUPLE);
      return;
    }
    if (values.length > 3) this.out.byte(OP.MARK);
    for (const v of values) this.int(v);
    this.out.byte(values.length === 1 ? OP.TUPLE1 : values.length === 2 ? OP.TUPLE2 : values.length === 3 ? OP.TUPLE3 : OP.TUPLE);
    this.put();
  }

  /** `collections.OrderedDict()`: the global, an empty argument tuple, REDUCE, memoized. */
  emptyOrderedDict(): void {
    this.global("collections", "OrderedDict");
    this.out.byte(OP.EMPTY_TUPLE);
    this.out.byte(OP.REDUCE);
    this.put();
  }
}

/** Row-major strides of a contiguous tensor, as torch reports them (a dimension of size 0 or 1 keeps the running product). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let step = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = step;
    step *= Math.max(shape[i] as number, 1);
  }
  return strides;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

/**
 * data.pkl for `tensors` in this order, storage keys "0", "1", ... in the
 * same order. `file` names the checkpoint in errors.
 */
export function pickleStateDict(tensors: readonly PickledTensor[], container: StateDictContainer, file: string): Uint8Array {
  const p = new Pickler();
  p.out.byte(OP.PROTO);
  p.out.byte(2);
  if (container === "dict") {
    p.out.byte(OP.EMPTY_DICT);
    p.put();
  } else {
    p.emptyOrderedDict();
  }

  const saveItem = (t: PickledTensor, key: number) => {
    const storageClass = storageClassFor(t.dtype);
    if (storageClass === undefined) throw new ModelError(`cannot write ${file} as a PyTorch checkpoint: tensor "${t.name}" is ${t.dtype}, a dtype torch 1.13 cannot store`);
    p.string(t.name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.out.byte(OP.MARK); // the argument tuple (6 items)
    p.out.byte(OP.MARK); // the persistent id (5 items)
    p.constant("storage");
    p.global("torch", storageClass);
    p.string(String(key));
    p.constant("cpu");
    p.int(numel(t.shape));
    p.out.byte(OP.TUPLE);
    p.put();
    p.out.byte(OP.BINPERSID);
    p.int(0); // storage offset
    p.intTuple(t.shape);
    p.intTuple(contiguousStrides(t.shape));
    p.out.byte(OP.NEWFALSE); // requires_grad
    p.emptyOrderedDict(); // backward hooks
    p.out.byte(OP.TUPLE);
    p.put();
    p.out.byte(OP.REDUCE);
    p.put();
  };

  if (tensors.length === 1) {
    saveItem(tensors[0] as PickledTensor, 0);
    p.out.byte(OP.SETITEM);
  } else if (tensors.length > 1) {
    let next = 0;
    for (;;) {
      const remaining = tensors.length - next;
      // An iterator's last lone item is a SETITEM; an exact dict has no such case past the first.
      if (container === "OrderedDict" && remaining === 1) {
        saveItem(tensors[next] as PickledTensor, next);
        p.out.byte(OP.SETITEM);
        break;
      }
      if (container === "OrderedDict" && remaining === 0) break;
      const batch = Math.min(BATCH_SIZE, remaining);
      p.out.byte(OP.MARK);
      for (let i = 0; i < batch; i++, next++) saveItem(tensors[next] as PickledTensor, next);
      p.out.byte(OP.SETITEMS);
      // The exact-dict loop goes round again after a full batch, even when nothing is left.
      if (batch < BATCH_SIZE) break;
    }
  }
  p.out.byte(OP.STOP);
  return p.out.result();
}
