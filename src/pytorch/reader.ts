/**
 * Reads a PyTorch checkpoint (the zip format of torch >= 1.6) from a
 * RandomAccess, without Python and without running any of its pickle: the
 * archive and state dict are validated on open; tensor bytes are then served
 * in bounded chunks, read straight from the storages' zip entries (shared
 * storages are never copied). No file system here.
 */
import { PytorchError, TruncatedError } from "../errors.js";
import { dtypeBytes } from "../dtypes.js";
import { CHUNK_BYTES } from "../limits.js";
import { resolveRange, type RandomAccess, type ReadRange, type TensorInfo, type WeightFile } from "../tensors.js";
import { readCheckpoint, type CheckpointTensor } from "./checkpoint.js";
import { readStrided } from "./strided-read.js";

/** Validates the checkpoint in `source`; the reader owns `source` from here on (close() closes it). */
export async function readPytorch(source: RandomAccess): Promise<WeightFile> {
  const checkpoint = await readCheckpoint((position, length) => source.read(position, length), source.size, source.label);
  return new PytorchFileReader(source, checkpoint.tensors);
}

class PytorchFileReader implements WeightFile {
  readonly path: string;
  readonly metadata = null;
  readonly tensors: readonly Omit<TensorInfo, "file">[];
  readonly #byName: Map<string, CheckpointTensor>;
  #closed = false;

  constructor(
    private readonly source: RandomAccess,
    tensors: CheckpointTensor[],
  ) {
    this.path = source.label;
    this.#byName = new Map(tensors.map((t) => [t.name, t]));
    this.tensors = tensors.map(({ name, dtype, shape, byteLength }) => ({ name, dtype, shape, byteLength }));
  }

  async *readTensor(name: string, range: ReadRange = {}): AsyncIterable<Uint8Array> {
    const tensor = this.#byName.get(name);
    if (tensor === undefined) throw new PytorchError("tensor-not-in-file", this.path, "is not in this file", name);
    if (this.#closed) throw new PytorchError("read-after-close", this.path, "was read after the file was closed", name);
    const { start, end, chunkBytes } = resolveRange(name, tensor.byteLength, range, CHUNK_BYTES);
    const { view } = tensor;
    yield* readStrided(
      async (position, length) => {
        if (this.#closed) throw new PytorchError("read-after-close", this.path, "was read after the file was closed", name);
        try {
          return await this.source.read(position, length);
        } catch (err) {
          if (err instanceof TruncatedError) throw new PytorchError("truncated", this.path, `data ends at byte ${err.position}, before the tensor's end: the file was truncated`, name, { cause: err });
          throw err;
        }
      },
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
    await this.source.close();
  }
}
