/**
 * The streaming loops of the byte codecs (Open-Assistant / Pygmalion XOR
 * payloads, point-alpaca .enc files), and the rules both use to tell a
 * payload file from a plain one. Output bytes are made chunk by chunk into
 * the engine's AtomicFile: memory is a few chunk buffers, whatever the
 * file's size, and the buffers are reused, so nothing piles up for the
 * garbage collector.
 */
import type { FileHandle } from "node:fs/promises";
import * as zlib from "node:zlib";
import { DeltaError, TruncatedError } from "../../errors.js";
import type { AtomicFile } from "../../io/atomic-file.js";
import { xorInto } from "../../kernels/index.js";
import { readJsonFile } from "../../io/files.js";
import { openRegularFile, readExactly } from "../../io/random-access-file.js";
import { CHUNK_BYTES, MAX_INDEX_BYTES } from "../../limits.js";
import { ENC_FILE, isReleaseDocument } from "../../formats/weight-files.js";
import { locateEntryData, readZipDirectory } from "../../pytorch/zip.js";

/**
 * point-alpaca's encrypt.py reads plain file and key in lockstep, 10 MiB at a
 * time; the key stream is defined by those reads (see keyChunkFill).
 */
export const ENC_KEY_CHUNK = 10 * 1024 * 1024;

/** Bytes of a .enc file before the XORed body: the sha256 of the plain file. */
export const ENC_HEADER_BYTES = 32;

/** The plain name and the sha256 (lower case) an .enc file's name carries (the pattern is formats/weight-files.ts's), or undefined. */
export function parseEncName(fileName: string): { name: string; sha256: string } | undefined {
  const match = ENC_FILE.exec(fileName);
  return match === null ? undefined : { name: match[1]!, sha256: match[2]!.toLowerCase() };
}

/**
 * The folder of the delta that holds the release's files: its top level, or,
 * when the top level holds only documents, the one sub-folder that holds
 * files (Open-Assistant keeps its payload in `oasst-sft-6-llama-30b-xor/`,
 * Pygmalion in `xor_encoded_files/`). `files` are the delta's files,
 * "/"-separated; returns the folder ("" for the top level), the files
 * directly in it, and the delta's other files (documents, other folders).
 */
export function findPayloadFolder(files: readonly string[]): { folder: string; files: string[]; others: string[] } {
  const folderOf = (f: string) => f.slice(0, Math.max(0, f.lastIndexOf("/")));
  const nameOf = (f: string) => f.slice(f.lastIndexOf("/") + 1);
  const holding = new Set(files.filter((f) => !isReleaseDocument(nameOf(f))).map(folderOf));
  const folder = holding.has("") || holding.size === 0 ? "" : holding.size === 1 ? [...holding][0]! : undefined;
  if (folder === undefined) {
    throw new DeltaError(`its files are in several folders (${[...holding].sort().join(", ")}): pass the folder that holds the published files as --delta`);
  }
  return {
    folder,
    files: files.filter((f) => folderOf(f) === folder),
    others: files.filter((f) => folderOf(f) !== folder),
  };
}

/** What a payload file's first bytes say about it. */
export type PayloadKind = "plain" | "xor";

/** How many first bytes plainKind needs. */
export const KIND_PROBE_BYTES = 64;

/**
 * Whether a payload file already is plain of its kind (copied as is) or is
 * XORed with the base (OA/Pygmalion): a checkpoint that starts with a zip
 * or pickle signature, safetensors with a sane header, JSON that parses, a
 * sentencepiece model that parses are plain. XORing two files of one kind
 * cancels the bytes they share, so payloads start with zeros instead.
 * Files of other kinds are undecidable here: undefined.
 */
export function plainKind(fileName: string, head: Uint8Array, size: number, parsesAsJson: () => Promise<boolean>): Promise<PayloadKind | undefined> | PayloadKind | undefined {
  const lower = fileName.toLowerCase();
  if (lower.endsWith(".json")) return parsesAsJson().then((ok) => (ok ? "plain" : "xor"));
  if (/\.(bin|pt|pth|ckpt)$/.test(lower)) return isCheckpointHead(head) ? "plain" : "xor";
  if (lower.endsWith(".safetensors")) return isSafetensorsHead(head, size) ? "plain" : "xor";
  if (lower.endsWith(".model")) return isSentencePieceHead(head) ? "plain" : "xor";
  return undefined;
}

/** torch.save's zip (torch >= 1.6) or its older pickle format (PROTO opcode, protocols 2-5). */
function isCheckpointHead(head: Uint8Array): boolean {
  const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const pickle = head[0] === 0x80 && head[1] !== undefined && head[1] >= 2 && head[1] <= 5;
  return zip || pickle;
}

/** A little-endian u64 header length that fits the file, and a JSON object after it. */
function isSafetensorsHead(head: Uint8Array, size: number): boolean {
  if (head.length < 9) return false;
  const length = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  return length >= 2n && length <= BigInt(size - 8) && head[8] === 0x7b;
}

/**
 * A sentencepiece ModelProto: field 1 (pieces, length-delimited) whose first
 * message starts with field 1 (the piece, a short string of printable bytes).
 * XORed with another sentencepiece model, those bytes cancel to zeros.
 */
function isSentencePieceHead(head: Uint8Array): boolean {
  let at = 0;
  const varint = (): number | undefined => {
    let value = 0;
    for (let shift = 0; shift < 35 && at < head.length; shift += 7) {
      const byte = head[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return value;
    }
    return undefined;
  };
  if (head[at++] !== 0x0a || varint() === undefined || head[at++] !== 0x0a) return false;
  const length = varint();
  if (length === undefined || length === 0 || length > 64 || at + Math.min(length, 8) > head.length) return false;
  return head.subarray(at, at + Math.min(length, 8)).every((b) => b >= 0x20 && b !== 0x7f);
}

/**
 * A file opened for positioned reads into the caller's buffers. Opened
 * non-blocking and checked with fstat, so a FIFO where a payload or base
 * file should be is refused instead of blocking for ever.
 */
export class ByteFile {
  private constructor(private readonly handle: FileHandle, readonly path: string, readonly size: number) {}

  static async open(path: string): Promise<ByteFile> {
    const { handle, size } = await openRegularFile(path);
    return new ByteFile(handle, path, size);
  }

  /** Fills `buffer[0, length)` from `position`; the file ending first means it shrank while open. */
  readInto(buffer: Uint8Array, length: number, position: number): Promise<Uint8Array> {
    return readExactly(this.path, position, length, async (b, offset, count, at) => (await this.handle.read(b, offset, count, at)).bytesRead, buffer);
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}

/** Opens every path, closing the ones opened when a later one fails. */
async function openAll(paths: readonly string[]): Promise<ByteFile[]> {
  const opened: ByteFile[] = [];
  try {
    for (const path of paths) opened.push(await ByteFile.open(path));
    return opened;
  } catch (err) {
    await Promise.all(opened.map((f) => f.close()));
    throw err;
  }
}

/** Reports output bytes (progress). */
type Advance = (bytes: number) => void;

/**
 * Runs `read(k)` one chunk ahead of `use(k)`: the next chunk's reads overlap
 * this chunk's XOR, hashing and write. Two buffer sets alternate, so a read
 * never fills the buffers still being used.
 */
async function pipelined<T>(count: number, read: (k: number, set: 0 | 1) => Promise<T>, use: (chunk: T, k: number) => Promise<void>): Promise<void> {
  if (count === 0) return;
  let next: Promise<T> | undefined = read(0, 0);
  try {
    for (let k = 0; k < count; k++) {
      const chunk: T = await next!;
      next = k + 1 < count ? read(k + 1, ((k + 1) % 2) as 0 | 1) : undefined;
      next?.catch(() => undefined); // observed on the next turn, or settled below on failure
      await use(chunk, k);
    }
  } finally {
    await next?.catch(() => undefined);
  }
}

export interface XorFileOptions {
  /** Fed every byte of the base file, the bytes past the payload's length included (to check its published digest). */
  onBase?: (bytes: Uint8Array) => Promise<void>;
  advance: Advance;
}

/**
 * Open-Assistant's xor_codec.py, decoding: out[i] = payload[i] XOR base[i]
 * for i below the base's length, payload[i] past it; the output is as long
 * as the payload, base bytes past it are not used.
 */
export async function writeXorFile(sink: AtomicFile, payloadPath: string, basePath: string, options: XorFileOptions): Promise<void> {
  const [payload, base] = await openAll([payloadPath, basePath]) as [ByteFile, ByteFile];
  try {
    const sets = [0, 1].map(() => ({ payload: new Uint8Array(CHUNK_BYTES), base: new Uint8Array(CHUNK_BYTES) }));
    const count = Math.ceil(payload.size / CHUNK_BYTES);
    await pipelined(count, async (k, set) => {
      const position = k * CHUNK_BYTES;
      const length = Math.min(CHUNK_BYTES, payload.size - position);
      const overlap = Math.max(0, Math.min(length, base.size - position));
      const buffers = sets[set]!;
      const [p, b] = await Promise.all([payload.readInto(buffers.payload, length, position), base.readInto(buffers.base, overlap, position)]);
      return { p, b };
    }, async ({ p, b }) => {
      // Past the base's end the payload is the output (XOR with zero bytes).
      const mixed = p.subarray(0, b.length);
      xorInto(mixed, b, mixed);
      await Promise.all([sink.write(p), options.onBase?.(b)]);
      options.advance(p.length);
    });
    if (options.onBase !== undefined && base.size > payload.size) {
      // The base's own digest covers its whole file.
      const buffer = sets[0]!.base;
      for (let position = payload.size; position < base.size; position += CHUNK_BYTES) {
        await options.onBase(await base.readInto(buffer, Math.min(CHUNK_BYTES, base.size - position), position));
      }
    }
    if (sink.size !== payload.size) throw new TruncatedError(payloadPath, sink.size);
  } finally {
    await Promise.all([payload.close(), base.close()]);
  }
}

/**
 * Fills `out` with the key bytes for body bytes [offset, offset + out.length)
 * of an .enc file, all inside one 10 MiB chunk. point-alpaca reads the key
 * 10 MiB at a time alongside the plain file, rewinding to 0 when a read
 * returns nothing, and tiles each key read over its plain chunk. So plain
 * chunk c uses key segment c mod n (n = ceil(K / 10 MiB)), which is
 * key[s * 10 MiB, min((s + 1) * 10 MiB, K)), repeated: the short last
 * segment is tiled on its own, never completed from the key's start.
 */
async function keyChunkFill(key: ByteFile, offset: number, out: Uint8Array): Promise<void> {
  const chunk = Math.floor(offset / ENC_KEY_CHUNK);
  const within = offset - chunk * ENC_KEY_CHUNK;
  const segments = Math.ceil(key.size / ENC_KEY_CHUNK);
  const segmentStart = (chunk % segments) * ENC_KEY_CHUNK;
  const segmentLength = Math.min(ENC_KEY_CHUNK, key.size - segmentStart);
  const start = within % segmentLength;
  const length = out.length;
  // One period of the key as this range sees it, from `start`, wrapping once.
  const period = Math.min(segmentLength, length);
  const first = Math.min(segmentLength - start, period);
  await key.readInto(out, first, segmentStart + start);
  if (first < period) await key.readInto(out.subarray(first), period - first, segmentStart);
  // A segment shorter than the range repeats: double the filled part until it covers it.
  for (let filled = period; filled < length; filled *= 2) out.copyWithin(filled, 0, Math.min(filled, length - filled));
}

/**
 * point-alpaca's decrypt.py: the body of an .enc file (after its 32-byte
 * header) XORed with the key stream of `keyPath`, which restarts at key
 * offset 0 for every file.
 */
export async function writeDecryptedFile(sink: AtomicFile, encPath: string, keyPath: string, advance: Advance): Promise<void> {
  const [enc, key] = await openAll([encPath, keyPath]) as [ByteFile, ByteFile];
  try {
    if (enc.size < ENC_HEADER_BYTES) throw new TruncatedError(encPath, enc.size);
    if (key.size === 0) throw new DeltaError(`the key ${keyPath} is empty`);
    const plainSize = enc.size - ENC_HEADER_BYTES;
    // Chunks stop at every 10 MiB boundary of the body, where the key stream jumps.
    const ranges: [number, number][] = [];
    for (let at = 0; at < plainSize;) {
      const end = Math.min(plainSize, at + CHUNK_BYTES, (Math.floor(at / ENC_KEY_CHUNK) + 1) * ENC_KEY_CHUNK);
      ranges.push([at, end - at]);
      at = end;
    }
    const sets = [0, 1].map(() => ({ body: new Uint8Array(CHUNK_BYTES), key: new Uint8Array(CHUNK_BYTES) }));
    await pipelined(ranges.length, async (k, set) => {
      const [offset, length] = ranges[k]!;
      const buffers = sets[set]!;
      const keyBytes = buffers.key.subarray(0, length);
      const [body] = await Promise.all([enc.readInto(buffers.body, length, ENC_HEADER_BYTES + offset), keyChunkFill(key, offset, keyBytes)]);
      return { body, keyBytes };
    }, async ({ body, keyBytes }) => {
      xorInto(body, keyBytes, body);
      await sink.write(body);
      advance(body.length);
    });
    if (sink.size !== plainSize) throw new TruncatedError(encPath, ENC_HEADER_BYTES + sink.size);
  } finally {
    await Promise.all([enc.close(), key.close()]);
  }
}

/**
 * What is wrong with a recovered file that no list checks, as far as its own
 * structure tells: a checkpoint whose zip members fail the CRC-32s torch.save
 * wrote, JSON that does not parse. XOR with a base of another layout, or a
 * damaged payload byte, garbles these; undefined when they pass. Passing
 * proves little: CRC-32 is linear over XOR, so a base of the same layout with
 * other values gives an output whose every CRC-32 passes, and tokenizer files
 * are not covered. Only a published digest shows an output is right.
 */
export async function structuralProblem(path: string, name: string): Promise<string | undefined> {
  const lower = name.toLowerCase();
  if (lower.endsWith(".json")) {
    return readJsonFile(path, MAX_INDEX_BYTES, "a JSON file", "E_DELTA").then(() => undefined, () => "is not valid JSON");
  }
  if (!/\.(bin|pt|pth|ckpt)$/.test(lower)) return undefined;
  const file = await ByteFile.open(path);
  try {
    const read = (position: number, length: number) => file.readInto(new Uint8Array(length), length, position);
    const entries = await readZipDirectory(read, file.size, path).catch(() => undefined);
    if (entries === undefined) return "is not a zip archive (torch.save's format): its end record is garbled";
    const buffer = new Uint8Array(CHUNK_BYTES);
    for (const entry of entries) {
      const start = await locateEntryData(read, file.size, path, entry).catch(() => undefined);
      if (start === undefined) return `has a garbled zip header for member "${entry.name}"`;
      let crc = 0;
      for (let done = 0; done < entry.uncompressedSize;) {
        const length = Math.min(buffer.length, entry.uncompressedSize - done);
        crc = crc32(await file.readInto(buffer, length, start + done), crc);
        done += length;
      }
      if (crc !== entry.crc32 >>> 0) return `has a zip member "${entry.name}" whose bytes fail the CRC-32 torch.save recorded for them`;
    }
    return undefined;
  } finally {
    await file.close();
  }
}

/** zlib's CRC-32 (Node >= 20.15), else a table-driven one with the same result. */
const crc32: (data: Uint8Array, value: number) => number = typeof (zlib as { crc32?: unknown }).crc32 === "function"
  ? (data, value) => zlib.crc32(data, value) >>> 0
  : (() => {
    const table = new Uint32Array(256).map((_, n) => {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      return c >>> 0;
    });
    return (data: Uint8Array, value: number) => {
      let c = ~value >>> 0;
      for (const byte of data) c = table[(c ^ byte) & 0xff]! ^ (c >>> 8);
      return ~c >>> 0;
    };
  })();
