/**
 * A restricted unpickler: it reads the opcodes `torch.save` emits (protocol 2,
 * plus the few protocol 3-5 opcodes a newer writer may use) and builds plain
 * values. It never imports or calls anything: GLOBAL only yields a
 * `PickleGlobal` name after the caller's allow-list accepts it, and REDUCE,
 * BUILD and persistent ids are handed to the caller's hooks, which interpret
 * the few allow-listed callables themselves. Opcodes that create arbitrary
 * objects (INST, OBJ, NEWOBJ, EXT*, ...) are refused.
 *
 * Memory is bounded by the pickle's size (checked by the caller) and by an
 * allocation budget: every value, container, item, stack slot, mark and memo
 * entry the pickle makes us create is charged its estimated size in V8 (see
 * COST), cumulatively, and the load stops once MAX_PICKLE_ALLOCATION_BYTES is
 * spent. A pickle is a program: a few bytes of opcodes can build objects a
 * hundred times their size (EMPTY_DICT APPEND is two bytes for a 200-byte
 * Map), so the pickle's size alone bounds nothing.
 */
import { PytorchError, type PytorchRule } from "../errors.js";
import { MAX_PICKLE_ALLOCATION_BYTES, MAX_PICKLE_LONG_BYTES } from "../limits.js";
import { printable } from "../text.js";

/** A global name (module.name) the allow-list accepted. Not callable by itself. */
export class PickleGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python tuple (lists are plain arrays, dicts are Maps). */
export class PickleTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** A Python float, kept apart from ints (plain numbers): torch refuses a
 * float where it needs an int (a size of 2.0), and so must we. */
export class PickleFloat {
  constructor(readonly value: number) {}
}

export interface UnpickleOptions {
  /** Estimated bytes of objects the pickle may make us build (default MAX_PICKLE_ALLOCATION_BYTES). */
  maxAllocationBytes?: number;
}

/**
 * What each thing the unpickler builds costs, in bytes, as measured with node
 * 20 (heap over a million of each). Array and hash-table slots count three
 * times their 8 bytes: while they grow, the old backing store and the new one
 * (1.5x for arrays, 2x for hash tables) are alive together until the next GC.
 * In a CLI run a spent budget shows as at most about 1.25x its size in RSS
 * (the young generation's slack), whatever the pickle builds.
 */
const COST = {
  /** A stack slot, list or tuple item (a pointer, or a heap number for an int past 2^31). */
  slot: 24,
  mark: 24,
  /** An empty Map (a JSMap and its smallest hash table). */
  dict: 200,
  /** One key/value pair in a Map's hash table (dict items and memo entries). */
  dictItem: 80,
  memoEntry: 80,
  /** An array: the first push grows it to 17 slots. */
  list: 200,
  tuple: 64,
  /** A string's header; its characters are added (one or two bytes each). */
  string: 24,
  /** A Uint8Array view into the pickle (never a copy). */
  bytes: 96,
  bigint: 32,
  float: 48,
  global: 64,
  /** What a hook builds: a Storage, a TensorView, an OrderedDict's Map (the largest). */
  hookResult: 200,
} as const;

export interface UnpickleHooks {
  /** Whether GLOBAL module.name may be named at all. Anything refused here stops the load. */
  allowGlobal(module: string, name: string): boolean;
  /** BINPERSID: the object a persistent id stands for. */
  persistentLoad(pid: unknown): unknown;
  /** REDUCE: what calling an allow-listed global with these arguments means. */
  reduce(callable: PickleGlobal, args: readonly unknown[]): unknown;
  /** BUILD: apply `state` to `target` (or refuse). */
  build(target: unknown, state: unknown): void;
}

const OP = {
  MARK: 0x28, STOP: 0x2e, POP: 0x30, POP_MARK: 0x31, DUP: 0x32,
  BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, NONE: 0x4e, BINPERSID: 0x51, REDUCE: 0x52,
  BINFLOAT: 0x47, BINBYTES: 0x42, SHORT_BINBYTES: 0x43, BINUNICODE: 0x58,
  APPEND: 0x61, BUILD: 0x62, GLOBAL: 0x63, DICT: 0x64, APPENDS: 0x65, BINGET: 0x68,
  LONG_BINGET: 0x6a, LIST: 0x6c, BINPUT: 0x71, LONG_BINPUT: 0x72, SETITEM: 0x73,
  TUPLE: 0x74, SETITEMS: 0x75, EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, EMPTY_TUPLE: 0x29,
  PROTO: 0x80, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87, NEWTRUE: 0x88, NEWFALSE: 0x89,
  LONG1: 0x8a, LONG4: 0x8b, SHORT_BINUNICODE: 0x8c, BINUNICODE8: 0x8d, BINBYTES8: 0x8e,
  STACK_GLOBAL: 0x93, MEMOIZE: 0x94, FRAME: 0x95,
} as const;

/** Opcodes we know but refuse, named in the message. */
const REFUSED: Record<number, string> = {
  0x69: "INST", 0x6f: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
  0x50: "PERSID", 0x46: "FLOAT", 0x49: "INT", 0x4c: "LONG", 0x53: "STRING", 0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x67: "GET", 0x70: "PUT", 0x8f: "EMPTY_SET",
  0x90: "ADDITEMS", 0x91: "FROZENSET", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
};

/** Loads one pickle; returns the value STOP leaves on the stack. */
export function unpickle(bytes: Uint8Array, file: string, hooks: UnpickleHooks, options: UnpickleOptions = {}): unknown {
  const data = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const budget = options.maxAllocationBytes ?? MAX_PICKLE_ALLOCATION_BYTES;
  let spent = 0;
  let pos = 0;
  let opAt = 0;
  /** Where the current FRAME ends; none is open once pos reaches it. */
  let frameEnd = 0;
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();

  const fail = (rule: PytorchRule, problem: string): never => {
    throw new PytorchError(rule, file, printable(`data.pkl ${problem} (at byte ${opAt})`));
  };
  const charge = (cost: number): void => {
    spent += cost;
    if (spent > budget) {
      fail("pickle-too-large", `builds more objects than the limit of ${budget} bytes allows (a state dict needs about 3 KB a tensor): it is not a state dict, or holds far more tensors than one checkpoint file should`);
    }
  };
  const need = (n: number): number => {
    if (n > bytes.length - pos) fail("pickle-truncated", "ends in the middle of an opcode (truncated pickle)");
    if (pos < frameEnd && n > frameEnd - pos) fail("pickle-malformed", `has an opcode that runs past the end of its FRAME (at byte ${frameEnd}): the frame length is wrong`);
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = (): number => data.getUint8(need(1));
  const u16 = (): number => data.getUint16(need(2), true);
  const u32 = (): number => data.getUint32(need(4), true);
  const u64 = (): number => {
    const value = data.getBigUint64(need(8), true);
    if (value > BigInt(bytes.length)) fail("pickle-malformed", `declares a length of ${value} bytes, past the end of the pickle`);
    return Number(value);
  };
  const text = (n: number): string => {
    const at = need(n);
    let value: string;
    try {
      value = utf8.decode(bytes.subarray(at, at + n));
    } catch {
      return fail("pickle-malformed", "has a string that is not UTF-8");
    }
    // As many UTF-16 units as UTF-8 bytes means ASCII: one byte per character in V8.
    charge(COST.string + (value.length === n ? n : 2 * value.length));
    return value;
  };
  const byteString = (n: number): Uint8Array => {
    const at = need(n);
    // A view, never a copy: a large bytes value is not a tensor, and the
    // loader skips it, so it must cost nothing beyond the pickle itself.
    charge(COST.bytes);
    return bytes.subarray(at, at + n);
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail("pickle-truncated", "ends in the middle of a GLOBAL name (truncated pickle)");
    return text(end - pos + 1).slice(0, -1);
  };
  const push = (value: unknown): void => {
    charge(COST.slot);
    stack.push(value);
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail("pickle-malformed", "pops from an empty stack");
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail("pickle-malformed", "reads from an empty stack");
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const mark = marks.pop();
    if (mark === undefined) fail("pickle-malformed", "uses a MARK that was never set");
    // the items were charged as stack slots; whoever keeps them charges again
    return stack.splice(mark!);
  };
  const put = (index: number): void => {
    charge(COST.memoEntry);
    memo.set(index, top());
  };
  const tuple = (items: unknown[]): PickleTuple => {
    charge(COST.tuple + COST.slot * items.length);
    return new PickleTuple(items);
  };
  const newDict = (): Map<unknown, unknown> => {
    charge(COST.dict);
    return new Map();
  };
  const newList = (items: unknown[]): unknown[] => {
    charge(COST.list + COST.slot * items.length);
    return items;
  };
  const get = (index: number): void => {
    if (!memo.has(index)) fail("pickle-malformed", `reads memo entry ${index}, which was never stored`);
    push(memo.get(index));
  };
  const asList = (value: unknown, op: string): unknown[] => {
    if (!Array.isArray(value)) fail("pickle-malformed", `${op} on something that is not a list`);
    return value as unknown[];
  };
  const asDict = (value: unknown, op: string): Map<unknown, unknown> => {
    if (!(value instanceof Map)) fail("pickle-malformed", `${op} on something that is not a dict`);
    return value as Map<unknown, unknown>;
  };
  const setItem = (dict: Map<unknown, unknown>, key: unknown, value: unknown): void => {
    charge(COST.dictItem);
    dict.set(dictKey(key), value);
  };
  const setItems = (dict: Map<unknown, unknown>, items: unknown[]): void => {
    if (items.length % 2 !== 0) fail("pickle-malformed", "SETITEMS with an odd number of items");
    for (let i = 0; i < items.length; i += 2) setItem(dict, items[i], items[i + 1]);
  };
  // Python compares keys by value; our Map compares objects by identity, so
  // only immutable scalars may be keys (all a state dict uses).
  const dictKey = (key: unknown): unknown => {
    // 1.0 and 1 are the same key in Python
    if (key instanceof PickleFloat) return key.value;
    const kind = typeof key;
    if (key === null || kind === "string" || kind === "number" || kind === "bigint" || kind === "boolean") return key;
    return fail("pickle-malformed", "uses a dict key that is not a string or number");
  };
  const global = (module: string, name: string): void => {
    if (!hooks.allowGlobal(module, name)) {
      fail("pickle-forbidden-global", `refers to ${module}.${name}, which is not allowed: only a state dict's tensors and storages may be loaded, nothing is ever executed`);
    }
    charge(COST.global);
    push(new PickleGlobal(module, name));
  };
  const signedLong = (n: number): number | bigint => {
    if (n > MAX_PICKLE_LONG_BYTES) fail("pickle-too-large", `has an integer of ${n} bytes, more than the limit of ${MAX_PICKLE_LONG_BYTES}`);
    const at = need(n);
    if (n === 0) return 0;
    let value = 0n;
    for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[at + i]!);
    if ((bytes[at + n - 1]! & 0x80) !== 0) value -= 1n << BigInt(8 * n);
    if (Number.isSafeInteger(Number(value)) && BigInt(Number(value)) === value) return Number(value);
    charge(COST.bigint + n);
    return value;
  };

  // Protocol 2 and later start with PROTO; torch.save always writes one.
  if (bytes[0] !== OP.PROTO) fail("pickle-protocol", "is not a pickle of protocol 2 or later (no PROTO opcode at its start)");
  while (true) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case OP.PROTO: {
        const version = u8();
        if (version < 2 || version > 5) fail("pickle-protocol", `declares pickle protocol ${version}, which is not supported`);
        break;
      }
      case OP.FRAME: {
        // Frames as Python's pickle.py reads them: one starts only where the
        // previous one ended, and holds whole opcodes (opcodes after its end
        // are read unframed). torch.load refuses the same: a frame longer
        // than what follows, or one inside another, is "truncated" to it,
        // and one ending inside an opcode makes it misread that opcode.
        const length = data.getBigUint64(need(8), true);
        if (pos < frameEnd) fail("pickle-malformed", `starts a FRAME ${frameEnd - pos} bytes before the previous one ends`);
        if (length > BigInt(bytes.length - pos)) fail("pickle-malformed", `has a FRAME of ${length} bytes, but only ${bytes.length - pos} bytes follow`);
        frameEnd = pos + Number(length);
        break;
      }
      case OP.STOP: {
        const result = pop();
        if (stack.length !== 0 || marks.length !== 0) fail("pickle-malformed", "stops with values left on the stack");
        if (pos !== bytes.length) fail("pickle-malformed", `has ${bytes.length - pos} bytes after STOP`);
        return result;
      }
      case OP.MARK:
        charge(COST.mark);
        marks.push(stack.length);
        break;
      case OP.POP: pop(); break;
      case OP.POP_MARK: popMark(); break;
      case OP.DUP: push(top()); break;

      case OP.NONE: push(null); break;
      case OP.NEWTRUE: push(true); break;
      case OP.NEWFALSE: push(false); break;
      case OP.BININT: push(data.getInt32(need(4), true)); break;
      case OP.BININT1: push(u8()); break;
      case OP.BININT2: push(u16()); break;
      case OP.LONG1: push(signedLong(u8())); break;
      case OP.LONG4: {
        const n = data.getInt32(need(4), true);
        if (n < 0) fail("pickle-malformed", "has an integer of negative length");
        push(signedLong(n));
        break;
      }
      case OP.BINFLOAT: charge(COST.float); push(new PickleFloat(data.getFloat64(need(8), false))); break;
      case OP.BINUNICODE: push(text(u32())); break;
      case OP.SHORT_BINUNICODE: push(text(u8())); break;
      case OP.BINUNICODE8: push(text(u64())); break;
      case OP.SHORT_BINBYTES: push(byteString(u8())); break;
      case OP.BINBYTES: push(byteString(u32())); break;
      case OP.BINBYTES8: push(byteString(u64())); break;

      case OP.EMPTY_DICT: push(newDict()); break;
      case OP.EMPTY_LIST: push(newList([])); break;
      case OP.EMPTY_TUPLE: push(tuple([])); break;
      case OP.DICT: { const items = popMark(); const dict = newDict(); setItems(dict, items); push(dict); break; }
      case OP.LIST: push(newList(popMark())); break;
      case OP.TUPLE: push(tuple(popMark())); break;
      case OP.TUPLE1: { const a = pop(); push(tuple([a])); break; }
      case OP.TUPLE2: { const b = pop(); const a = pop(); push(tuple([a, b])); break; }
      case OP.TUPLE3: { const c = pop(); const b = pop(); const a = pop(); push(tuple([a, b, c])); break; }
      case OP.APPEND: { const item = pop(); const list = asList(top(), "APPEND"); charge(COST.slot); list.push(item); break; }
      case OP.APPENDS: {
        const items = popMark();
        const list = asList(top(), "APPENDS");
        charge(COST.slot * items.length);
        // one by one: spreading millions of arguments would overflow the call stack
        for (const item of items) list.push(item);
        break;
      }
      case OP.SETITEM: { const value = pop(); const key = pop(); setItem(asDict(top(), "SETITEM"), key, value); break; }
      case OP.SETITEMS: { const items = popMark(); setItems(asDict(top(), "SETITEMS"), items); break; }

      case OP.BINPUT: put(u8()); break;
      case OP.LONG_BINPUT: put(u32()); break;
      case OP.MEMOIZE: put(memo.size); break;
      case OP.BINGET: get(u8()); break;
      case OP.LONG_BINGET: get(u32()); break;

      case OP.GLOBAL: { const module = line(); const name = line(); global(module, name); break; }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") fail("pickle-malformed", "STACK_GLOBAL on something that is not a name");
        global(module as string, name as string);
        break;
      }
      case OP.BINPERSID: charge(COST.hookResult); push(hooks.persistentLoad(pop())); break;
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        if (!(callable instanceof PickleGlobal)) fail("pickle-forbidden-global", "REDUCE calls something that is not an allowed global");
        if (!(args instanceof PickleTuple)) fail("pickle-malformed", `REDUCE calls ${(callable as PickleGlobal).qualifiedName} with arguments that are not a tuple`);
        charge(COST.hookResult);
        push(hooks.reduce(callable as PickleGlobal, (args as PickleTuple).items));
        break;
      }
      case OP.BUILD: { const state = pop(); hooks.build(top(), state); break; }

      default: {
        const name = REFUSED[op];
        fail("pickle-malformed", name === undefined
          ? `has an unknown opcode 0x${op.toString(16).padStart(2, "0")} (not a pickle, or corrupted)`
          : `uses opcode ${name}, which torch.save does not write and is not allowed`);
      }
    }
  }
}
