/**
 * Opens a PyTorch checkpoint (the zip format of torch >= 1.6) without Python
 * and without running any of its pickle: the archive and state dict are
 * validated on open; tensor bytes are then served in bounded chunks, read
 * straight from the storages' zip entries (shared storages are never copied).
 */
import { read } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { PytorchError, ioError } from "../errors.js";
import { dtypeBytes } from "../dtypes.js";
import { CHUNK_BYTES } from "../limits.js";
import type { TensorInfo, WeightFile } from "../model/types.js";
import { readCheckpoint, type CheckpointTensor } from "./checkpoint.js";
import { readStrided } from "./strided-read.js";
import type { ReadAt } from "./zip.js";

export { readCheckpoint, type Checkpoint, type CheckpointTensor } from "./checkpoint.js";

export async function openPytorchFile(path: string): Promise<WeightFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw ioError("open", path, err);
  }
  const file = new PositionedFile(handle, path);
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new PytorchError(path, "is not a regular file");
    file.size = stat.size;
    const checkpoint = await readCheckpoint(file.read, stat.size, path);
    return new PytorchFileReader(path, file, checkpoint.tensors);
  } catch (err) {
    await file.close();
    throw err;
  }
}

/**
 * Exact positioned reads (a range past the end, of a file that shrank, is an
 * error, not a short read) with fs.read on the descriptor: a strided view
 * can need tens of thousands of small reads, and this costs about half of
 * FileHandle.read's overhead per call. Because raw descriptor reads are not
 * tracked by the FileHandle, close() waits for those in flight and later
 * reads are refused: a descriptor number reused after close must never be
 * read as if it were this file.
 */
class PositionedFile {
  size = 0;
  #closed = false;
  readonly #pending = new Set<Promise<number>>();

  constructor(
    private readonly handle: FileHandle,
    private readonly path: string,
  ) {}

  readonly read: ReadAt = async (position, length) => {
    if (position < 0 || length < 0 || position + length > this.size) {
      throw new PytorchError(this.path, `needs bytes [${position}, ${position + length}) but the file has ${this.size} (truncated?)`);
    }
    const buffer = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      if (this.#closed) throw new PytorchError(this.path, "was read after the file was closed");
      let bytesRead: number;
      const pending = readAt(this.handle.fd, buffer, done, length - done, position + done);
      this.#pending.add(pending);
      try {
        bytesRead = await pending;
      } catch (err) {
        throw ioError("read", this.path, err);
      } finally {
        this.#pending.delete(pending);
      }
      if (bytesRead === 0) throw new PytorchError(this.path, `ended at byte ${position + done} while reading (truncated?)`);
      done += bytesRead;
    }
    return buffer;
  };

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#pending);
    await this.handle.close().catch(() => undefined);
  }
}

function readAt(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, offset, length, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
  });
}

class PytorchFileReader implements WeightFile {
  readonly metadata = null;
  readonly tensors: readonly Omit<TensorInfo, "file">[];
  readonly #byName: Map<string, CheckpointTensor>;
  #closed = false;

  constructor(
    readonly path: string,
    private readonly file: PositionedFile,
    tensors: CheckpointTensor[],
  ) {
    this.#byName = new Map(tensors.map((t) => [t.name, t]));
    this.tensors = tensors.map(({ name, dtype, shape, byteLength }) => ({ name, dtype, shape, byteLength }));
  }

  async *readTensor(name: string, options: { start?: number; end?: number; chunkBytes?: number } = {}): AsyncIterable<Uint8Array> {
    const tensor = this.#byName.get(name);
    if (tensor === undefined) throw new PytorchError(this.path, "is not in this file", name);
    if (this.#closed) throw new PytorchError(this.path, "was read after the file was closed", name);
    const start = options.start ?? 0;
    const end = options.end ?? tensor.byteLength;
    const chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > tensor.byteLength) {
      throw new RangeError(`byte range [${start}, ${end}) is outside tensor "${name}" (${tensor.byteLength} bytes)`);
    }
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
    const { view } = tensor;
    yield* readStrided(
      this.file.read,
      {
        dataStart: view.storage.dataStart,
        itemSize: dtypeBytes(tensor.dtype),
        storageOffset: view.storageOffset,
        shape: view.shape,
        strides: view.strides,
      },
      start,
      end,
      chunkBytes,
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.file.close();
  }
}
