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
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new PytorchError(path, "is not a regular file");
    const read = positionedReader(handle, path, stat.size);
    const checkpoint = await readCheckpoint(read, stat.size, path);
    return new PytorchFileReader(path, handle, read, checkpoint.tensors);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

/** Exact positioned reads; a range past the end (a file that shrank) is an error, not a short read. */
function positionedReader(handle: FileHandle, path: string, size: number): ReadAt {
  return async (position, length) => {
    if (position < 0 || length < 0 || position + length > size) {
      throw new PytorchError(path, `needs bytes [${position}, ${position + length}) but the file has ${size} (truncated?)`);
    }
    const buffer = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      let bytesRead: number;
      try {
        bytesRead = await readAt(handle.fd, buffer, done, length - done, position + done);
      } catch (err) {
        throw ioError("read", path, err);
      }
      if (bytesRead === 0) throw new PytorchError(path, `ended at byte ${position + done} while reading (truncated?)`);
      done += bytesRead;
    }
    return buffer;
  };
}

/** fs.read on the handle's descriptor: a strided view can need tens of
 * thousands of small reads, and this costs about half of FileHandle.read's
 * overhead per call. */
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
    private readonly handle: FileHandle,
    private readonly read: ReadAt,
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
      this.read,
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
    await this.handle.close().catch(() => undefined);
  }
}
