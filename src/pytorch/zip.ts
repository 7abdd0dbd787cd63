/**
 * A zip central-directory reader for PyTorch checkpoints: no fs, no
 * decompression. torch.save writes every entry stored (method 0), with local
 * headers whose sizes are zero (a data descriptor follows the data) and whose
 * extra field pads the data to 64-byte alignment, so sizes and offsets come
 * from the central directory and the local header only tells where data starts.
 * ZIP64 records are honoured (torch writes them for files over 4 GB).
 *
 * Every offset and length read from the file is checked against the file size
 * before anything is allocated or read.
 */
import { PytorchError, type PytorchRule } from "../errors.js";
import { printable } from "../text.js";
import { MAX_ZIP_DIRECTORY_BYTES, MAX_ZIP_ENTRIES } from "../limits.js";

/** Reads exactly `length` bytes at `position` (the caller checks bounds first). */
export type ReadAt = (position: number, length: number) => Promise<Uint8Array>;

export interface ZipEntry {
  name: string;
  /** 0 = stored; anything else is compressed. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const ZIP64_EOCD_SIZE = 56;
const CENTRAL_SIGNATURE = 0x02014b50;
const CENTRAL_SIZE = 46;
const LOCAL_SIGNATURE = 0x04034b50;
const LOCAL_SIZE = 30;
const ZIP64_EXTRA_ID = 0x0001;
const MAX_COMMENT = 0xffff;
const FLAG_ENCRYPTED = 0x0001;
/** Encrypted (bit 0), strong encryption (bit 6), masked local headers (bit 13). */
const FLAGS_ENCRYPTION = 0x0001 | 0x0040 | 0x2000;

/**
 * Finds the end-of-central-directory record (and its ZIP64 counterpart) and
 * returns every entry of the central directory, in directory order.
 * Throws "not a zip archive" when there is no end record.
 */
export async function readZipDirectory(read: ReadAt, fileSize: number, file: string): Promise<ZipEntry[]> {
  const fail = (rule: PytorchRule, problem: string): never => {
    throw new PytorchError(rule, file, printable(problem));
  };
  if (fileSize < EOCD_SIZE) fail("zip-not-zip", "is not a zip archive (too short for an end-of-central-directory record)");

  // The end record sits in the last 22 + comment bytes; read that tail once.
  const tailLength = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE);
  const tailStart = fileSize - tailLength;
  const tail = await read(tailStart, tailLength);
  const tailView = view(tail);
  let eocd = -1;
  for (let at = tailLength - EOCD_SIZE; at >= 0; at--) {
    if (tailView.getUint32(at, true) !== EOCD_SIGNATURE) continue;
    // A real end record's comment reaches exactly to the end of the file.
    if (at + EOCD_SIZE + tailView.getUint16(at + 20, true) === tailLength) {
      eocd = at;
      break;
    }
  }
  if (eocd < 0) fail("zip-not-zip", "is not a zip archive (no end-of-central-directory record; truncated or not a torch >= 1.6 checkpoint)");

  const diskNumber = tailView.getUint16(eocd + 4, true);
  const directoryDisk = tailView.getUint16(eocd + 6, true);
  let entryCount: number = tailView.getUint16(eocd + 10, true);
  let directorySize: number = tailView.getUint32(eocd + 12, true);
  let directoryOffset: number = tailView.getUint32(eocd + 16, true);
  if (diskNumber !== 0 || directoryDisk !== 0) fail("zip-unsupported", "is a multi-disk zip archive, which is not supported");

  const locatorAt = eocd - ZIP64_LOCATOR_SIZE;
  if (locatorAt >= 0 && tailView.getUint32(locatorAt, true) === ZIP64_LOCATOR_SIGNATURE) {
    const recordOffset = u64(tailView, locatorAt + 8, file, "ZIP64 end-of-central-directory offset");
    const recordEnd = tailStart + locatorAt;
    if (recordOffset + ZIP64_EOCD_SIZE > recordEnd) fail("zip-malformed", `ZIP64 end-of-central-directory record at ${recordOffset} lies past its locator`);
    const record = view(await read(recordOffset, ZIP64_EOCD_SIZE));
    if (record.getUint32(0, true) !== ZIP64_EOCD_SIGNATURE) fail("zip-malformed", `no ZIP64 end-of-central-directory record at byte ${recordOffset}`);
    entryCount = u64(record, 32, file, "ZIP64 entry count");
    directorySize = u64(record, 40, file, "ZIP64 central directory size");
    directoryOffset = u64(record, 48, file, "ZIP64 central directory offset");
  } else if (entryCount === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff) {
    fail("zip-malformed", "needs ZIP64 records (its end record is saturated) but has no ZIP64 locator");
  }

  if (entryCount > MAX_ZIP_ENTRIES) fail("zip-too-large", `zip archive declares ${entryCount} entries, more than the limit of ${MAX_ZIP_ENTRIES}`);
  if (directorySize > MAX_ZIP_DIRECTORY_BYTES) fail("zip-too-large", `zip central directory of ${directorySize} bytes is larger than the limit of ${MAX_ZIP_DIRECTORY_BYTES}`);
  if (directoryOffset + directorySize > fileSize) fail("zip-past-end", `zip central directory [${directoryOffset}, ${directoryOffset + directorySize}) lies past the end of the file (${fileSize} bytes; truncated?)`);
  if (entryCount * CENTRAL_SIZE > directorySize) fail("zip-malformed", `zip central directory of ${directorySize} bytes cannot hold ${entryCount} entries`);

  const directory = await read(directoryOffset, directorySize);
  const dir = view(directory);
  const entries: ZipEntry[] = [];
  const names = new Set<string>();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let at = 0;
  for (let i = 0; i < entryCount; i++) {
    if (at + CENTRAL_SIZE > directorySize) fail("zip-malformed", `zip central directory entry ${i} runs past the directory`);
    if (dir.getUint32(at, true) !== CENTRAL_SIGNATURE) fail("zip-malformed", `zip central directory entry ${i} has a bad signature`);
    const flags = dir.getUint16(at + 8, true);
    const method = dir.getUint16(at + 10, true);
    const crc32 = dir.getUint32(at + 16, true);
    let compressedSize: number = dir.getUint32(at + 20, true);
    let uncompressedSize: number = dir.getUint32(at + 24, true);
    const nameLength = dir.getUint16(at + 28, true);
    const extraLength = dir.getUint16(at + 30, true);
    const commentLength = dir.getUint16(at + 32, true);
    const startDisk = dir.getUint16(at + 34, true);
    let localHeaderOffset: number = dir.getUint32(at + 42, true);
    const nameStart = at + CENTRAL_SIZE;
    const extraStart = nameStart + nameLength;
    const next = extraStart + extraLength + commentLength;
    if (next > directorySize) fail("zip-malformed", `zip central directory entry ${i} runs past the directory`);

    let name: string;
    try {
      name = decoder.decode(directory.subarray(nameStart, extraStart));
    } catch {
      return fail("zip-malformed", `zip entry ${i} has a name that is not UTF-8`);
    }
    // torch.save never encrypts; torch.load refuses any encrypted entry it
    // reads, and we refuse one anywhere rather than trust the rest.
    if ((flags & FLAGS_ENCRYPTION) !== 0) fail("zip-unsupported", `zip entry "${name}" is encrypted (flags 0x${flags.toString(16).padStart(4, "0")}), which torch.save never writes`);
    if (names.has(name)) fail("zip-duplicate-entry", `zip archive has two entries named "${name}"`);
    names.add(name);

    // ZIP64 extra field: the 64-bit values appear, in this order, only for
    // the fields saturated in the fixed part.
    const needs64 = uncompressedSize === 0xffffffff || compressedSize === 0xffffffff || localHeaderOffset === 0xffffffff || startDisk === 0xffff;
    if (needs64) {
      const zip64 = findExtra(dir, extraStart, extraLength, ZIP64_EXTRA_ID);
      if (zip64 === undefined) fail("zip-malformed", `zip entry "${name}" has saturated sizes but no ZIP64 extra field`);
      const [fieldStart, fieldLength] = zip64!;
      let p = fieldStart;
      const take = (what: string): number => {
        if (p + 8 > fieldStart + fieldLength) fail("zip-malformed", `zip entry "${name}" has a ZIP64 extra field too short for its ${what}`);
        const value = u64(dir, p, file, `ZIP64 ${what} of "${name}"`);
        p += 8;
        return value;
      };
      if (uncompressedSize === 0xffffffff) uncompressedSize = take("size");
      if (compressedSize === 0xffffffff) compressedSize = take("compressed size");
      if (localHeaderOffset === 0xffffffff) localHeaderOffset = take("offset");
    }
    if (startDisk !== 0 && startDisk !== 0xffff) fail("zip-unsupported", `zip entry "${name}" is on another disk`);
    if (localHeaderOffset + LOCAL_SIZE > fileSize) fail("zip-past-end", `zip entry "${name}" starts at byte ${localHeaderOffset}, past the end of the file (${fileSize} bytes; truncated?)`);
    if (compressedSize > fileSize) fail("zip-past-end", `zip entry "${name}" declares ${compressedSize} bytes, more than the whole file (${fileSize} bytes)`);

    entries.push({ name, method, flags, crc32, compressedSize, uncompressedSize, localHeaderOffset });
    at = next;
  }
  return entries;
}

/**
 * Where a stored entry's bytes begin: after its local header, whose extra
 * field may differ from the central one (torch pads it for alignment).
 * Also checks that the entry is stored, unencrypted, and lies inside the file.
 */
export async function locateEntryData(read: ReadAt, fileSize: number, file: string, entry: ZipEntry): Promise<number> {
  const fail = (rule: PytorchRule, problem: string): never => {
    throw new PytorchError(rule, file, printable(`zip entry "${entry.name}" ${problem}`));
  };
  if ((entry.flags & FLAG_ENCRYPTED) !== 0) fail("zip-unsupported", "is encrypted, which is not supported");
  if (entry.method !== 0) fail("zip-unsupported", `is compressed (method ${entry.method}); torch.save writes entries stored, so this checkpoint was re-zipped: re-save it with torch.save`);
  if (entry.compressedSize !== entry.uncompressedSize) fail("zip-malformed", `is stored but its sizes differ (${entry.compressedSize} vs ${entry.uncompressedSize})`);
  // One read for the fixed header and the name, which must be the central
  // one: a mismatch means the archive is not what its directory says.
  const expectedName = new TextEncoder().encode(entry.name);
  const headerLength = Math.min(LOCAL_SIZE + expectedName.length, fileSize - entry.localHeaderOffset);
  const bytes = await read(entry.localHeaderOffset, headerLength);
  const header = view(bytes);
  if (header.getUint32(0, true) !== LOCAL_SIGNATURE) fail("zip-malformed", `has no local header at byte ${entry.localHeaderOffset}`);
  const nameLength = header.getUint16(26, true);
  const extraLength = header.getUint16(28, true);
  const localName = bytes.subarray(LOCAL_SIZE);
  if (nameLength !== expectedName.length || localName.length !== nameLength || !localName.every((b, i) => b === expectedName[i])) {
    fail("zip-malformed", "has a local header whose name differs from the central directory's");
  }
  const dataStart = entry.localHeaderOffset + LOCAL_SIZE + nameLength + extraLength;
  if (dataStart + entry.uncompressedSize > fileSize) {
    fail("zip-past-end", `data [${dataStart}, ${dataStart + entry.uncompressedSize}) lies past the end of the file (${fileSize} bytes; truncated?)`);
  }
  return dataStart;
}

function findExtra(dir: DataView, start: number, length: number, id: number): [number, number] | undefined {
  let p = start;
  const end = start + length;
  while (p + 4 <= end) {
    const fieldId = dir.getUint16(p, true);
    const fieldLength = dir.getUint16(p + 2, true);
    if (p + 4 + fieldLength > end) return undefined;
    if (fieldId === id) return [p + 4, fieldLength];
    p += 4 + fieldLength;
  }
  return undefined;
}

/** A little-endian u64 as a number, refused when it cannot be exact. */
function u64(data: DataView, at: number, file: string, what: string): number {
  const value = data.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new PytorchError("zip-too-large", file, printable(`${what} ${value} is too large`));
  return Number(value);
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
