/**
 * The zip container torch.save writes (caffe2/serialize/inline_container.cc,
 * PyTorchStreamWriter, over miniz 2.1.0's writer in zip64 mode), laid out
 * before a byte is written so the file's size and every record's offset are
 * known in advance. Pure: bytes out, no I/O.
 *
 * Every record is stored (method 0), its local header dated 0 and carrying
 * sizes and CRC of 0, flags 0x0808 (a data descriptor follows the data; UTF-8
 * names), or 0x0800 for an empty record, which has no descriptor. The local
 * header's extra field ends with PyTorch's "FB" padding ('Z' bytes) so the
 * data starts on a 64-byte boundary. Past 4 GiB (a record of 0xFFFFFFFF bytes
 * or more, or a header at such an offset) miniz adds a zip64 extra field in
 * front of the padding (local: size and a compressed size of 0, then the
 * offset; central: both sizes and the offset, each only when it overflows) and
 * writes 8-byte sizes in the descriptor. The central directory (version
 * made-by and needed 0, no attributes) is followed by the zip64 end record,
 * its locator and the classic end record, always.
 */

/** PyTorch's kFieldAlignment. */
export const RECORD_ALIGNMENT = 64;

const U32_MAX = 0xffffffff;
const LOCAL_HEADER = 30;
const CENTRAL_HEADER = 46;
const ZIP64_END = 56;
const ZIP64_LOCATOR = 20;
const END = 22;
const FLAG_DESCRIPTOR = 0x0008;
const FLAG_UTF8 = 0x0800;

export interface ZipRecordPlan {
  /** Full name in the archive (`archive/data/0`). */
  name: string;
  size: number;
  /** Where the local header starts. */
  headerOffset: number;
  /** Where the record's bytes start (a multiple of RECORD_ALIGNMENT). */
  dataOffset: number;
  /** Local header, name and extra field: the bytes from headerOffset to dataOffset. */
  localHeader: Uint8Array;
  /** The data descriptor's length after the data (0, 16 or 24). */
  descriptorSize: number;
}

export interface ZipPlan {
  records: ZipRecordPlan[];
  centralOffset: number;
  /** Central directory and the end records. */
  trailerSize: number;
  fileSize: number;
}

const utf8 = new TextEncoder();

function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % 2 ** 32, true);
  view.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

/** The zip64 extended-information field miniz writes: only the values that overflow. */
function zip64Extra(values: number[]): Uint8Array {
  if (values.length === 0) return new Uint8Array(0);
  const bytes = new Uint8Array(4 + 8 * values.length);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, 0x0001, true);
  view.setUint16(2, 8 * values.length, true);
  values.forEach((v, i) => writeU64(view, 4 + 8 * i, v));
  return bytes;
}

/** The local zip64 field: size and a compressed size of 0 (not known yet to miniz) when the size overflows, then the offset when it does. */
function localZip64Values(size: number, offset: number): number[] {
  return [...(size >= U32_MAX ? [size, 0] : []), ...(offset >= U32_MAX ? [offset] : [])];
}

/** PyTorch's getPadding: 'FB', the padding length, then that many 'Z's, so the data lands on the alignment. */
function fbPadding(cursor: number, nameLength: number, size: number, alignment: number): Uint8Array {
  let start = cursor + LOCAL_HEADER + nameLength + 4;
  if (size >= U32_MAX || cursor >= U32_MAX) {
    start += 4;
    if (size >= U32_MAX) start += 16;
    if (cursor >= U32_MAX) start += 8;
  }
  const padding = (alignment - (start % alignment)) % alignment;
  const bytes = new Uint8Array(4 + padding).fill(0x5a);
  bytes[0] = 0x46;
  bytes[1] = 0x42;
  bytes[2] = padding & 0xff;
  bytes[3] = padding >> 8;
  return bytes;
}

function flagsFor(size: number): number {
  return size > 0 ? FLAG_DESCRIPTOR | FLAG_UTF8 : FLAG_UTF8;
}

/** Places `records` (full names and sizes, in write order) as PyTorchStreamWriter writes them from offset 0. */
export function planZip(records: readonly { name: string; size: number }[], alignment = RECORD_ALIGNMENT): ZipPlan {
  const placed: ZipRecordPlan[] = [];
  let cursor = 0;
  let centralSize = 0;
  for (const { name, size } of records) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`record ${name} has an invalid size ${size}`);
    const nameBytes = utf8.encode(name);
    if (nameBytes.length > 0xffff) throw new RangeError(`record name ${name.slice(0, 40)}... is longer than a zip allows`);
    const zip64 = zip64Extra(localZip64Values(size, cursor));
    const padding = fbPadding(cursor, nameBytes.length, size, alignment);
    const header = new Uint8Array(LOCAL_HEADER + nameBytes.length + zip64.length + padding.length);
    const view = new DataView(header.buffer);
    view.setUint32(0, 0x04034b50, true);
    view.setUint16(6, flagsFor(size), true);
    view.setUint16(26, nameBytes.length, true);
    view.setUint16(28, zip64.length + padding.length, true);
    header.set(nameBytes, LOCAL_HEADER);
    header.set(zip64, LOCAL_HEADER + nameBytes.length);
    header.set(padding, LOCAL_HEADER + nameBytes.length + zip64.length);
    const dataOffset = cursor + header.length;
    const descriptorSize = size === 0 ? 0 : zip64.length > 0 ? 24 : 16;
    placed.push({ name, size, headerOffset: cursor, dataOffset, localHeader: header, descriptorSize });
    centralSize += CENTRAL_HEADER + nameBytes.length + zip64Extra(centralZip64Values(size, cursor)).length;
    cursor = dataOffset + size + descriptorSize;
  }
  const trailerSize = centralSize + ZIP64_END + ZIP64_LOCATOR + END;
  return { records: placed, centralOffset: cursor, trailerSize, fileSize: cursor + trailerSize };
}

function centralZip64Values(size: number, offset: number): number[] {
  if (size < U32_MAX && offset < U32_MAX) return [];
  return [...(size >= U32_MAX ? [size, size] : []), ...(offset >= U32_MAX ? [offset] : [])];
}

/** The data descriptor that follows a record's bytes (none for an empty record). */
export function dataDescriptor(record: ZipRecordPlan, crc32: number): Uint8Array {
  const bytes = new Uint8Array(record.descriptorSize);
  if (record.descriptorSize === 0) return bytes;
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 0x08074b50, true);
  view.setUint32(4, crc32 >>> 0, true);
  if (record.descriptorSize === 24) {
    writeU64(view, 8, record.size);
    writeU64(view, 16, record.size);
  } else {
    view.setUint32(8, record.size, true);
    view.setUint32(12, record.size, true);
  }
  return bytes;
}

/** The central directory and the end records, once every record's CRC-32 is known. */
export function zipTrailer(plan: ZipPlan, crc32s: readonly number[]): Uint8Array {
  if (crc32s.length !== plan.records.length) throw new RangeError(`${crc32s.length} CRC-32s for ${plan.records.length} records`);
  const bytes = new Uint8Array(plan.trailerSize);
  const view = new DataView(bytes.buffer);
  let at = 0;
  plan.records.forEach((record, i) => {
    const name = utf8.encode(record.name);
    const zip64 = zip64Extra(centralZip64Values(record.size, record.headerOffset));
    view.setUint32(at, 0x02014b50, true);
    view.setUint16(at + 8, flagsFor(record.size), true);
    view.setUint32(at + 16, (crc32s[i] as number) >>> 0, true);
    view.setUint32(at + 20, Math.min(record.size, U32_MAX), true);
    view.setUint32(at + 24, Math.min(record.size, U32_MAX), true);
    view.setUint16(at + 28, name.length, true);
    view.setUint16(at + 30, zip64.length, true);
    view.setUint32(at + 42, Math.min(record.headerOffset, U32_MAX), true);
    bytes.set(name, at + CENTRAL_HEADER);
    bytes.set(zip64, at + CENTRAL_HEADER + name.length);
    at += CENTRAL_HEADER + name.length + zip64.length;
  });
  const centralSize = at;
  const zip64End = plan.centralOffset + centralSize;
  view.setUint32(at, 0x06064b50, true);
  writeU64(view, at + 4, ZIP64_END - 12);
  view.setUint16(at + 12, 0x031e, true);
  view.setUint16(at + 14, 0x002d, true);
  writeU64(view, at + 24, plan.records.length);
  writeU64(view, at + 32, plan.records.length);
  writeU64(view, at + 40, centralSize);
  writeU64(view, at + 48, plan.centralOffset);
  at += ZIP64_END;
  view.setUint32(at, 0x07064b50, true);
  writeU64(view, at + 8, zip64End);
  view.setUint32(at + 16, 1, true);
  at += ZIP64_LOCATOR;
  view.setUint32(at, 0x06054b50, true);
  view.setUint16(at + 8, Math.min(plan.records.length, 0xffff), true);
  view.setUint16(at + 10, Math.min(plan.records.length, 0xffff), true);
  view.setUint32(at + 12, Math.min(centralSize, U32_MAX), true);
  view.setUint32(at + 16, Math.min(plan.centralOffset, U32_MAX), true);
  return bytes;
}
