/**
 * A restricted unpickler: it reads the opcodes `torch.save` emits (protocol 2,
 * plus the few protocol 3-5 opcodes a newer writer may use) and builds plain
 * values. It never imports or calls anything: GLOBAL only yields a
 * `PickleGlobal` name after the caller's allow-list accepts it, and REDUCE,
 * BUILD and persistent ids are handed to the caller's hooks, which interpret
 * the few allow-listed callables themselves. Opcodes that create arbitrary
 * objects (INST, OBJ, NEWOBJ, EXT*, ...) are refused.
 *
 * Memory is bounded by the pickle's size (checked by the caller) and by
 * MAX_PICKLE_STACK for the stack, marks and memo.
 */
import { PytorchError } from "../errors.js";
import { MAX_PICKLE_LONG_BYTES, MAX_PICKLE_STACK } from "../limits.js";

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
export function unpickle(bytes: Uint8Array, file: string, hooks: UnpickleHooks): unknown {
  const data = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let pos = 0;
  let opAt = 0;
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();

  const fail = (problem: string): never => {
    throw new PytorchError(file, `data.pkl ${problem} (at byte ${opAt})`);
  };
  const need = (n: number): number => {
    if (n > bytes.length - pos) fail("ends in the middle of an opcode (truncated pickle)");
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = (): number => data.getUint8(need(1));
  const u16 = (): number => data.getUint16(need(2), true);
  const u32 = (): number => data.getUint32(need(4), true);
  const u64 = (): number => {
    const value = data.getBigUint64(need(8), true);
    if (value > BigInt(bytes.length)) fail(`declares a length of ${value} bytes, past the end of the pickle`);
    return Number(value);
  };
  const text = (n: number): string => {
    const at = need(n);
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      return fail("has a string that is not UTF-8");
    }
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail("ends in the middle of a GLOBAL name (truncated pickle)");
    return text(end - pos + 1).slice(0, -1);
  };
  const push = (value: unknown): void => {
    if (stack.length >= MAX_PICKLE_STACK) fail(`stack grows past the limit of ${MAX_PICKLE_STACK} entries`);
    stack.push(value);
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail("pops from an empty stack");
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail("reads from an empty stack");
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const mark = marks.pop();
    if (mark === undefined) fail("uses a MARK that was never set");
    return stack.splice(mark!);
  };
  const put = (index: number): void => {
    if (!memo.has(index) && memo.size >= MAX_PICKLE_STACK) fail(`memo grows past the limit of ${MAX_PICKLE_STACK} entries`);
    memo.set(index, top());
  };
  const get = (index: number): void => {
    if (!memo.has(index)) fail(`reads memo entry ${index}, which was never stored`);
    push(memo.get(index));
  };
  const asList = (value: unknown, op: string): unknown[] => {
    if (!Array.isArray(value)) fail(`${op} on something that is not a list`);
    return value as unknown[];
  };
  const asDict = (value: unknown, op: string): Map<unknown, unknown> => {
    if (!(value instanceof Map)) fail(`${op} on something that is not a dict`);
    return value as Map<unknown, unknown>;
  };
  const setItems = (dict: Map<unknown, unknown>, items: unknown[]): void => {
    if (items.length % 2 !== 0) fail("SETITEMS with an odd number of items");
    for (let i = 0; i < items.length; i += 2) dict.set(dictKey(items[i]), items[i + 1]);
  };
  // Python compares keys by value; our Map compares objects by identity, so
  // only immutable scalars may be keys (all a state dict uses).
  const dictKey = (key: unknown): unknown => {
    const kind = typeof key;
    if (key === null || kind === "string" || kind === "number" || kind === "bigint" || kind === "boolean") return key;
    return fail("uses a dict key that is not a string or number");
  };
  const global = (module: string, name: string): void => {
    if (!hooks.allowGlobal(module, name)) {
      fail(`refers to ${module}.${name}, which is not allowed: only a state dict's tensors and storages may be loaded, nothing is ever executed`);
    }
    push(new PickleGlobal(module, name));
  };
  const signedLong = (n: number): number | bigint => {
    if (n > MAX_PICKLE_LONG_BYTES) fail(`has an integer of ${n} bytes, more than the limit of ${MAX_PICKLE_LONG_BYTES}`);
    const at = need(n);
    if (n === 0) return 0;
    let value = 0n;
    for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[at + i]!);
    if ((bytes[at + n - 1]! & 0x80) !== 0) value -= 1n << BigInt(8 * n);
    return Number.isSafeInteger(Number(value)) && BigInt(Number(value)) === value ? Number(value) : value;
  };

  // Protocol 2 and later start with PROTO; torch.save always writes one.
  if (bytes[0] !== OP.PROTO) fail("is not a pickle of protocol 2 or later (no PROTO opcode at its start)");
  while (true) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case OP.PROTO: {
        const version = u8();
        if (version < 2 || version > 5) fail(`declares pickle protocol ${version}, which is not supported`);
        break;
      }
      case OP.FRAME: u64(); break;
      case OP.STOP: {
        const result = pop();
        if (stack.length !== 0 || marks.length !== 0) fail("stops with values left on the stack");
        if (pos !== bytes.length) fail(`has ${bytes.length - pos} bytes after STOP`);
        return result;
      }
      case OP.MARK:
        if (marks.length >= MAX_PICKLE_STACK) fail(`sets more than ${MAX_PICKLE_STACK} marks`);
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
        if (n < 0) fail("has an integer of negative length");
        push(signedLong(n));
        break;
      }
      case OP.BINFLOAT: push(data.getFloat64(need(8), false)); break;
      case OP.BINUNICODE: push(text(u32())); break;
      case OP.SHORT_BINUNICODE: push(text(u8())); break;
      case OP.BINUNICODE8: push(text(u64())); break;
      case OP.SHORT_BINBYTES: { const n = u8(); const at = need(n); push(bytes.slice(at, at + n)); break; }
      case OP.BINBYTES: { const n = u32(); const at = need(n); push(bytes.slice(at, at + n)); break; }
      case OP.BINBYTES8: { const n = u64(); const at = need(n); push(bytes.slice(at, at + n)); break; }

      case OP.EMPTY_DICT: push(new Map()); break;
      case OP.EMPTY_LIST: push([]); break;
      case OP.EMPTY_TUPLE: push(new PickleTuple([])); break;
      case OP.DICT: { const dict = new Map(); setItems(dict, popMark()); push(dict); break; }
      case OP.LIST: push(popMark()); break;
      case OP.TUPLE: push(new PickleTuple(popMark())); break;
      case OP.TUPLE1: { const a = pop(); push(new PickleTuple([a])); break; }
      case OP.TUPLE2: { const b = pop(); const a = pop(); push(new PickleTuple([a, b])); break; }
      case OP.TUPLE3: { const c = pop(); const b = pop(); const a = pop(); push(new PickleTuple([a, b, c])); break; }
      case OP.APPEND: { const item = pop(); asList(top(), "APPEND").push(item); break; }
      case OP.APPENDS: {
        const items = popMark();
        const list = asList(top(), "APPENDS");
        // one by one: spreading millions of arguments would overflow the call stack
        for (const item of items) list.push(item);
        break;
      }
      case OP.SETITEM: { const value = pop(); const key = pop(); asDict(top(), "SETITEM").set(dictKey(key), value); break; }
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
        if (typeof module !== "string" || typeof name !== "string") fail("STACK_GLOBAL on something that is not a name");
        global(module as string, name as string);
        break;
      }
      case OP.BINPERSID: push(hooks.persistentLoad(pop())); break;
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        if (!(callable instanceof PickleGlobal)) fail("REDUCE calls something that is not an allowed global");
        if (!(args instanceof PickleTuple)) fail(`REDUCE calls ${(callable as PickleGlobal).qualifiedName} with arguments that are not a tuple`);
        push(hooks.reduce(callable as PickleGlobal, (args as PickleTuple).items));
        break;
      }
      case OP.BUILD: { const state = pop(); hooks.build(top(), state); break; }

      default: {
        const name = REFUSED[op];
        fail(name === undefined
          ? `has an unknown opcode 0x${op.toString(16).padStart(2, "0")} (not a pickle, or corrupted)`
          : `uses opcode ${name}, which torch.save does not write and is not allowed`);
      }
    }
  }
}
