import { constants, read, type Stats } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { DeltaWeightsError, TruncatedError, ioError } from "../errors.js";
import type { RandomAccess } from "../tensors.js";
import { chunkPool } from "./chunk-pool.js";

/**
 * Opens a regular file for positioned reads, as the RandomAccess the format
 * readers take.
 *
 * The file is opened non-blocking and checked with fstat before anything is
 * read: a FIFO (or device) where a weight file should be would otherwise
 * block open() or read() for ever.
 *
 * Reads go through fs.read on the descriptor: a strided PyTorch view can need
 * tens of thousands of small reads, and this costs about half of
 * FileHandle.read's overhead per call. Because raw descriptor reads are not
 * tracked by the FileHandle, close() waits for those in flight and later
 * reads are refused: a descriptor number reused after close must never be
 * read as if it were this file.
 */
export async function openRandomAccessFile(path: string): Promise<RandomAccess> {
  const { handle, size } = await openRegularFile(path);
  return new PositionedFile(handle, path, size);
}

/**
 * Opens `path` for reading, non-blocking, and checks with fstat that it is a
 * regular file (a FIFO or device would block open() or read() for ever).
 * `verb` names the action in a failed open's message; `refuse` makes the
 * error for what is not a regular file. On any failure the descriptor is closed.
 */
export async function openRegularFile(
  path: string,
  options: { verb?: string; refuse?: (info: Stats) => Error } = {},
): Promise<{ handle: FileHandle; size: number }> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw ioError(options.verb ?? "open", path, err);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      throw options.refuse?.(info)
        ?? new DeltaWeightsError("E_IO", `Failed to open ${path}: it is ${info.isDirectory() ? "a directory" : "not a regular file (a pipe or device?)"}`);
    }
    return { handle, size: info.size };
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

class PositionedFile implements RandomAccess {
  #closed = false;
  readonly #pending = new Set<Promise<number>>();

  constructor(
    private readonly handle: FileHandle,
    readonly label: string,
    readonly size: number,
  ) {}

  async read(position: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0 || position + length > this.size) {
      throw new DeltaWeightsError("E_IO", `Failed to read ${this.label}: bytes [${position}, ${position + length}) are past its end (${this.size} bytes; truncated?)`);
    }
    return readExactly(this.label, position, length, async (buffer, offset, count, at) => {
      if (this.#closed) throw new DeltaWeightsError("E_IO", `Failed to read ${this.label}: it was read after the file was closed`);
      const pending = readAt(this.handle.fd, buffer, offset, count, at);
      this.#pending.add(pending);
      try {
        return await pending;
      } finally {
        this.#pending.delete(pending);
      }
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#pending);
    await this.handle.close().catch(() => undefined);
  }
}

/**
 * Exactly `length` bytes at `position`, by as many reads as it takes: a
 * read of zero bytes before the end means the file was cut short.
 */
export async function readExactly(
  label: string,
  position: number,
  length: number,
  read: (buffer: Uint8Array, offset: number, length: number, position: number) => Promise<number>,
  into?: Uint8Array,
): Promise<Uint8Array> {
  // Into the caller's buffer when given one (its first `length` bytes), else
  // one from the chunk pool (not zero-filled: every byte is read into before
  // anyone sees it, a short read throws), which its last user may give back.
  const buffer = into === undefined ? chunkPool.take(length) : into.subarray(0, length);
  let done = 0;
  while (done < length) {
    let bytesRead: number;
    try {
      bytesRead = await read(buffer, done, length - done, position + done);
    } catch (err) {
      if (err instanceof DeltaWeightsError) throw err;
      throw ioError("read", label, err);
    }
    if (bytesRead === 0) throw new TruncatedError(label, position + done);
    done += bytesRead;
  }
  return buffer;
}

function readAt(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, offset, length, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
  });
}
