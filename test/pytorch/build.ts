/**
 * Builders for checkpoints made in memory, so each hostile test states its
 * attack in a few lines: a stored-zip writer (the layout torch.save writes,
 * minus alignment padding) and a pickle opcode assembler.
 */
import type { ReadAt } from "../../src/pytorch/zip.js";

export interface ZipInput {
  name: string;
  data: Uint8Array;
  /** Overrides for forging: the values written to the central directory. */
  method?: number;
  centralSize?: number;
  localName?: string;
  /** General-purpose flags, in the local and the central header. */
  flags?: number;
}

function crc32(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export function storedZip(entries: ZipInput[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  const enc = new TextEncoder();
  for (const e of entries) {
    const name = enc.encode(e.name);
    const localName = enc.encode(e.localName ?? e.name);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(6, e.flags ?? 0, true);
    local.setUint16(8, e.method ?? 0, true);
    local.setUint32(14, crc32(e.data), true);
    local.setUint32(18, e.data.length, true);
    local.setUint32(22, e.data.length, true);
    local.setUint16(26, localName.length, true);
    parts.push(new Uint8Array(local.buffer), localName, e.data);
    const size = e.centralSize ?? e.data.length;
    const c = new DataView(new ArrayBuffer(46));
    c.setUint32(0, 0x02014b50, true);
    c.setUint16(4, 20, true);
    c.setUint16(6, 20, true);
    c.setUint16(8, e.flags ?? 0, true);
    c.setUint16(10, e.method ?? 0, true);
    c.setUint32(16, crc32(e.data), true);
    c.setUint32(20, size, true);
    c.setUint32(24, size, true);
    c.setUint16(28, name.length, true);
    c.setUint32(42, offset, true);
    central.push(new Uint8Array(c.buffer), name);
    offset += 30 + localName.length + e.data.length;
  }
  const centralSize = central.reduce((n, p) => n + p.length, 0);
  // 65,535 entries or more need the ZIP64 end record, its locator, and a saturated end record
  const zip64: Uint8Array[] = [];
  if (entries.length >= 0xffff) {
    const record = new DataView(new ArrayBuffer(56));
    record.setUint32(0, 0x06064b50, true);
    record.setBigUint64(4, 44n, true);
    record.setUint16(12, 45, true);
    record.setUint16(14, 45, true);
    record.setBigUint64(24, BigInt(entries.length), true);
    record.setBigUint64(32, BigInt(entries.length), true);
    record.setBigUint64(40, BigInt(centralSize), true);
    record.setBigUint64(48, BigInt(offset), true);
    const locator = new DataView(new ArrayBuffer(20));
    locator.setUint32(0, 0x07064b50, true);
    locator.setBigUint64(8, BigInt(offset + centralSize), true);
    locator.setUint32(16, 1, true);
    zip64.push(new Uint8Array(record.buffer), new Uint8Array(locator.buffer));
  }
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, Math.min(entries.length, 0xffff), true);
  end.setUint16(10, Math.min(entries.length, 0xffff), true);
  end.setUint32(12, centralSize, true);
  end.setUint32(16, offset, true);
  return concatBytes([...parts, ...central, ...zip64, new Uint8Array(end.buffer)]);
}

export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A torch.save-shaped archive: archive/data.pkl plus archive/data/<key> storages. */
export function checkpointZip(pickle: Uint8Array, storages: Record<string, Uint8Array> = {}, prefix = "archive/"): Uint8Array {
  return storedZip([
    { name: `${prefix}data.pkl`, data: pickle },
    ...Object.entries(storages).map(([key, data]) => ({ name: `${prefix}data/${key}`, data })),
    { name: `${prefix}version`, data: new TextEncoder().encode("3\n") },
  ]);
}

/** Positioned reads from bytes in memory, recording each read's length. */
export function memoryReader(bytes: Uint8Array, reads: number[] = []): ReadAt {
  return async (position, length) => {
    if (position < 0 || position + length > bytes.length) throw new Error(`read [${position}, ${position + length}) outside ${bytes.length} bytes`);
    reads.push(length);
    return bytes.slice(position, position + length);
  };
}

/** Pickle opcodes, assembled: P.pickle(P.proto(2), P.emptyDict(), ..., P.stop()). */
export const P = {
  pickle: (...ops: (number[] | Uint8Array)[]): Uint8Array => concatBytes(ops.map((o) => Uint8Array.from(o))),
  proto: (v = 2) => [0x80, v],
  stop: () => [0x2e],
  mark: () => [0x28],
  none: () => [0x4e],
  emptyDict: () => [0x7d],
  emptyList: () => [0x5d],
  emptyTuple: () => [0x29],
  tuple: () => [0x74],
  tuple1: () => [0x85],
  tuple2: () => [0x86],
  tuple3: () => [0x87],
  setitem: () => [0x73],
  setitems: () => [0x75],
  append: () => [0x61],
  reduce: () => [0x52],
  build: () => [0x62],
  binpersid: () => [0x51],
  newFalse: () => [0x89],
  binput: (i: number) => [0x71, i],
  binget: (i: number) => [0x68, i],
  int: (n: number): number[] => {
    if (n >= 0 && n < 256) return [0x4b, n];
    if (n >= 2 ** 31 || n < -(2 ** 31)) return P.long1(BigInt(n));
    const b = new DataView(new ArrayBuffer(4));
    b.setInt32(0, n, true);
    return [0x4a, ...new Uint8Array(b.buffer)];
  },
  long1: (n: bigint): number[] => {
    const bytes: number[] = [];
    let v = n;
    do {
      bytes.push(Number(v & 0xffn));
      v >>= 8n;
    } while (!(v === 0n && (bytes[bytes.length - 1]! & 0x80) === 0) && !(v === -1n && (bytes[bytes.length - 1]! & 0x80) !== 0));
    return [0x8a, bytes.length, ...bytes];
  },
  str: (s: string): number[] => {
    const b = new TextEncoder().encode(s);
    return [0x58, b.length & 0xff, (b.length >> 8) & 0xff, (b.length >> 16) & 0xff, b.length >>> 24, ...b];
  },
  global: (module: string, name: string) => [0x63, ...new TextEncoder().encode(`${module}\n${name}\n`)],
};

/**
 * The pickle torch.save writes for {name: tensor} (the opcodes of a real
 * torch 1.13 data.pkl): _rebuild_tensor_v2(storage, offset, size, stride,
 * False, OrderedDict()), with storage ('storage', torch.<type>, key, 'cpu', numel).
 */
export function tensorDictPickle(
  tensors: { name: string; storageType: string; key: string; numel: number; offset: number; shape: number[]; strides: number[] }[],
): Uint8Array {
  const tuple = (items: number[][]) => [P.mark(), ...items, P.tuple()].flat();
  const ops: number[][] = [P.proto(2), P.emptyDict(), P.mark()];
  for (const t of tensors) {
    ops.push(
      P.str(t.name),
      P.global("torch._utils", "_rebuild_tensor_v2"),
      P.mark(),
      tuple([P.str("storage"), P.global("torch", t.storageType), P.str(t.key), P.str("cpu"), P.int(t.numel)]),
      P.binpersid(),
      P.int(t.offset),
      tuple(t.shape.map(P.int)),
      tuple(t.strides.map(P.int)),
      P.newFalse(),
      P.global("collections", "OrderedDict"),
      P.emptyTuple(),
      P.reduce(),
      P.tuple(),
      P.reduce(),
    );
  }
  ops.push(P.setitems(), P.stop());
  return P.pickle(...ops);
}

/**
 * The exact opcodes torch 1.13's torch.save (protocol 2, C pickler) writes
 * for an OrderedDict of tensors, each with its own storage: every object
 * memoized (BINPUT, LONG_BINPUT past 255), repeated globals and strings
 * fetched back (BINGET), SETITEMS in batches of 1000. Budget tests use it to
 * charge what a real checkpoint charges, memo and all.
 */
export function torchSaveStateDictPickle(
  tensors: { name: string; storageType: string; numel: number; shape: number[]; strides: number[] }[],
): Uint8Array {
  const out: number[] = [];
  const enc = new TextEncoder();
  let memoSize = 0;
  const memo = new Map<string, number>();
  const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24];
  const put = () => {
    const i = memoSize++;
    out.push(...(i < 256 ? [0x71, i] : [0x72, ...u32(i)]));
    return i;
  };
  const get = (i: number) => out.push(...(i < 256 ? [0x68, i] : [0x6a, ...u32(i)]));
  // the first use of a name writes it and memoizes it; later ones fetch it
  const once = (id: string, write: () => void) => {
    const at = memo.get(id);
    if (at !== undefined) return get(at);
    write();
    memo.set(id, put());
  };
  const str = (s: string) => {
    const b = enc.encode(s);
    out.push(0x58, ...u32(b.length), ...b);
  };
  const int = (n: number) => {
    if (n < 256) out.push(0x4b, n);
    else if (n < 65536) out.push(0x4d, n & 0xff, n >> 8);
    else if (n < 2 ** 31) out.push(0x4a, ...u32(n));
    else out.push(...P.long1(BigInt(n)));
  };
  const tuple = (items: number[]) => {
    if (items.length === 0) return out.push(0x29);
    if (items.length > 3) out.push(0x28);
    items.forEach(int);
    out.push(items.length > 3 ? 0x74 : [0x85, 0x86, 0x87][items.length - 1]!);
    put();
  };
  out.push(0x80, 2);
  once("OrderedDict", () => out.push(...P.global("collections", "OrderedDict")));
  out.push(0x29, 0x52);
  put();
  tensors.forEach((t, i) => {
    if (i % 1000 === 0) out.push(0x28);
    str(t.name);
    put();
    once("rebuild", () => out.push(...P.global("torch._utils", "_rebuild_tensor_v2")));
    out.push(0x28, 0x28);
    once("'storage'", () => str("storage"));
    once(t.storageType, () => out.push(...P.global("torch", t.storageType)));
    str(String(i));
    put();
    once("'cpu'", () => str("cpu"));
    int(t.numel);
    out.push(0x74);
    put();
    out.push(0x51);
    int(0);
    tuple(t.shape);
    tuple(t.strides);
    out.push(0x89);
    get(memo.get("OrderedDict")!);
    out.push(0x29, 0x52);
    put();
    out.push(0x74);
    put();
    out.push(0x52);
    put();
    if (i % 1000 === 999 || i === tensors.length - 1) out.push(0x75);
  });
  out.push(0x2e);
  return Uint8Array.from(out);
}
