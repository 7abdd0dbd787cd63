import { open, rm, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { DType } from "../../dtypes.js";
import { DeltaError, ioError } from "../../errors.js";
import { AtomicFile } from "../../io/atomic-file.js";
import { readSafetensors, type SafetensorsFile } from "../../safetensors/reader.js";
import type { RandomAccess } from "../../tensors.js";
import { SAFETENSORS_OUTPUT } from "../../formats/outputs/safetensors.js";
import { ExactReader } from "../engine/exact-reader.js";
import type { TensorOutputFix, TensorOutputHook } from "../engine/tensor-file.js";
import { applyXorFixups } from "../../kernels/index.js";

/**
 * delta-fixups.safetensors: for every element where round(base + delta) is
 * not the target, its flat index and the XOR between the rounded sum's bits
 * and the target's bits. Two tensors per affected tensor:
 *   `<name>.fixup_index`  U32 (U64 when the tensor has more than 2^32 elements)
 *   `<name>.fixup_xor`    unsigned integers of the tensor's element size
 * Indices ascend. Without the base the XORs reveal neither model.
 */

export const INDEX_SUFFIX = ".fixup_index";
export const XOR_SUFFIX = ".fixup_xor";

const XOR_DTYPE: Record<number, DType> = { 1: "U8", 2: "U16", 4: "U32", 8: "U64" };

export function fixupIndexDtype(numel: number): DType {
  return numel <= 2 ** 32 ? "U32" : "U64";
}

export function fixupXorDtype(elementBytes: number): DType {
  const dtype = XOR_DTYPE[elementBytes];
  if (dtype === undefined) throw new DeltaError(`no fix-up encoding for ${elementBytes}-byte elements`);
  return dtype;
}

interface SpilledTensor {
  name: string;
  indexDtype: DType;
  xorDtype: DType;
  elementBytes: number;
  count: number;
  indexOffset: number;
  xorOffset: number;
}

/**
 * Collects fix-ups while make-delta runs. Their number is known only at the
 * end, and a safetensors header comes first, so they are spilled to two
 * scratch files and assembled into the sidecar at the end: memory stays
 * bounded however many elements need fixing.
 */
export class FixupCollector {
  #indexFile: FileHandle;
  #xorFile: FileHandle;
  #indexBytes = 0;
  #xorBytes = 0;
  #tensors: SpilledTensor[] = [];
  #current: SpilledTensor | undefined;
  readonly #paths: [string, string];

  private constructor(paths: [string, string], indexFile: FileHandle, xorFile: FileHandle) {
    this.#paths = paths;
    this.#indexFile = indexFile;
    this.#xorFile = xorFile;
  }

  /** Scratch files in `dir`, named like the temporary files of outputs so a later run clears them. */
  static async create(dir: string): Promise<FixupCollector> {
    const paths: [string, string] = [AtomicFile.tempPathFor(join(dir, "fixup-index.spill")), AtomicFile.tempPathFor(join(dir, "fixup-xor.spill"))];
    try {
      const indexFile = await open(paths[0], "wx+");
      const xorFile = await open(paths[1], "wx+").catch(async (err: unknown) => {
        await indexFile.close();
        await rm(paths[0], { force: true });
        throw err;
      });
      return new FixupCollector(paths, indexFile, xorFile);
    } catch (err) {
      throw ioError("create scratch files in", dir, err);
    }
  }

  /** Total fix-ups recorded. */
  get count(): number {
    return this.#tensors.reduce((n, t) => n + t.count, 0);
  }

  beginTensor(name: string, numel: number, elementBytes: number): void {
    this.#current = {
      name, elementBytes, count: 0,
      indexDtype: fixupIndexDtype(numel), xorDtype: fixupXorDtype(elementBytes),
      indexOffset: this.#indexBytes, xorOffset: this.#xorBytes,
    };
  }

  /** Records mismatches found at chunk-relative `indices` of a window starting at `firstIndex`. */
  async add(firstIndex: number, indices: Uint32Array, xors: Uint8Array): Promise<void> {
    const t = this.#current;
    if (t === undefined) throw new Error("FixupCollector.add outside a tensor");
    const wide = t.indexDtype === "U64";
    const encoded = new Uint8Array(indices.length * (wide ? 8 : 4));
    const view = new DataView(encoded.buffer);
    for (let i = 0; i < indices.length; i++) {
      const index = firstIndex + indices[i]!;
      if (wide) view.setBigUint64(i * 8, BigInt(index), true);
      else view.setUint32(i * 4, index, true);
    }
    // Positions are claimed before awaiting: several adds may be in flight.
    const indexAt = this.#indexBytes;
    const xorAt = this.#xorBytes;
    this.#indexBytes += encoded.length;
    this.#xorBytes += xors.length;
    t.count += indices.length;
    await Promise.all([writeAll(this.#indexFile, encoded, indexAt), writeAll(this.#xorFile, xors, xorAt)]);
  }

  endTensor(): void {
    if (this.#current !== undefined && this.#current.count > 0) this.#tensors.push(this.#current);
    this.#current = undefined;
  }

  /** Writes the sidecar (when any fix-up exists) and removes the scratch files. Returns its sha256 and size. */
  async finish(path: string): Promise<{ sha256: string; size: number } | undefined> {
    try {
      if (this.#tensors.length === 0) return undefined;
      const byName = new Map<string, { handle: FileHandle; offset: number; bytes: number }>();
      const tensors: { name: string; dtype: DType; shape: number[] }[] = [];
      for (const t of this.#tensors) {
        const indexBytes = t.count * (t.indexDtype === "U64" ? 8 : 4);
        tensors.push({ name: t.name + INDEX_SUFFIX, dtype: t.indexDtype, shape: [t.count] });
        tensors.push({ name: t.name + XOR_SUFFIX, dtype: t.xorDtype, shape: [t.count] });
        byName.set(t.name + INDEX_SUFFIX, { handle: this.#indexFile, offset: t.indexOffset, bytes: indexBytes });
        byName.set(t.name + XOR_SUFFIX, { handle: this.#xorFile, offset: t.xorOffset, bytes: t.count * t.elementBytes });
      }
      const out = await AtomicFile.create(path);
      try {
        const writer = SAFETENSORS_OUTPUT.create(out, path, tensors);
        for (const t of writer.tensors) {
          const spill = byName.get(t.name)!;
          await writer.writeTensor(t.name, readSpill(spill.handle, spill.offset, spill.bytes));
        }
        await writer.finish();
        const size = out.size;
        return { sha256: await out.commit(), size };
      } catch (err) {
        await out.abort();
        throw err;
      }
    } finally {
      await this.discard();
    }
  }

  async discard(): Promise<void> {
    await this.#indexFile.close().catch(() => undefined);
    await this.#xorFile.close().catch(() => undefined);
    await Promise.all(this.#paths.map((path) => rm(path, { force: true })));
  }
}

async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

async function* readSpill(handle: FileHandle, offset: number, bytes: number, chunk = 8 << 20): AsyncGenerator<Uint8Array> {
  for (let done = 0; done < bytes; ) {
    const buf = new Uint8Array(Math.min(chunk, bytes - done));
    const { bytesRead } = await handle.read(buf, 0, buf.length, offset + done);
    if (bytesRead !== buf.length) throw new DeltaError("fix-up scratch file is shorter than written");
    done += bytesRead;
    yield buf;
  }
}

/** Reads the sidecar while apply-delta runs: fix-ups are applied window by window. */
export class FixupSource implements TensorOutputHook {
  private constructor(private readonly file: SafetensorsFile | undefined) {}

  /** The sidecar in `source` (owned from here on), or none. */
  static async open(source: RandomAccess | undefined): Promise<FixupSource> {
    return new FixupSource(source === undefined ? undefined : await readSafetensors(source));
  }

  /**
   * A window fixer for one tensor (undefined when it has no fix-ups). Checks
   * the sidecar's entries as it goes: ascending, in range, of the right dtype.
   */
  forTensor(name: string, numel: number, elementBytes: number): TensorFixer | undefined {
    const file = this.file;
    if (file === undefined) return undefined;
    const index = file.tensors.find((t) => t.name === name + INDEX_SUFFIX);
    const xor = file.tensors.find((t) => t.name === name + XOR_SUFFIX);
    if (index === undefined && xor === undefined) return undefined;
    const count = index?.shape[0];
    if (index === undefined || xor === undefined || index.shape.length !== 1 || xor.shape.length !== 1 ||
        count !== xor.shape[0] || index.dtype !== fixupIndexDtype(numel) || xor.dtype !== fixupXorDtype(elementBytes)) {
      throw new DeltaError(`${file.path}: the fix-ups of tensor "${name}" are malformed; download the delta again`);
    }
    return new TensorFixer(file, name, count as number, index.dtype === "U64" ? 8 : 4, elementBytes, numel);
  }

  async close(): Promise<void> {
    await this.file?.close();
  }
}

const FIXUP_BATCH = 1 << 16;

export class TensorFixer implements TensorOutputFix {
  #indexReader: ExactReader;
  #xorReader: ExactReader;
  #remaining: number;
  #batchIndices = new Uint32Array(0);
  #batchXors = new Uint8Array(0);
  #position = 0;
  #last = -1;

  constructor(
    private readonly file: SafetensorsFile,
    private readonly name: string,
    /** Fix-ups this tensor has. */
    readonly count: number,
    private readonly indexBytes: number,
    private readonly elementBytes: number,
    private readonly numel: number,
  ) {
    this.#remaining = count;
    this.#indexReader = new ExactReader(file.readTensor(name + INDEX_SUFFIX), `${file.path} "${name}${INDEX_SUFFIX}"`);
    this.#xorReader = new ExactReader(file.readTensor(name + XOR_SUFFIX), `${file.path} "${name}${XOR_SUFFIX}"`);
  }

  /** Applies the fix-ups that fall inside [firstIndex, firstIndex + out elements). */
  async fixWindow(firstIndex: number, out: Uint8Array): Promise<void> {
    const end = firstIndex + out.length / this.elementBytes;
    for (;;) {
      if (this.#position === this.#batchIndices.length && !(await this.#nextBatch())) return;
      const indices = this.#batchIndices;
      const xors = this.#batchXors;
      const size = this.elementBytes;
      const from = this.#position;
      let to = from;
      while (to < indices.length && indices[to]! < end) to++;
      if (to > from) {
        if (indices[from]! < firstIndex) this.#fail("are out of order");
        // Indices are checked ascending and inside [firstIndex, end): every write lands in `out`.
        applyXorFixups(size, out, indices.subarray(from, to), xors.subarray(from * size, to * size), firstIndex);
        this.#position = to;
      }
      if (to < indices.length) return;
    }
  }

  /** Every fix-up must have been used. */
  async finish(): Promise<void> {
    if (this.#remaining > 0 || this.#position < this.#batchIndices.length) this.#fail("point past the end of the tensor");
    await this.close();
  }

  async close(): Promise<void> {
    await this.#indexReader.close();
    await this.#xorReader.close();
  }

  async #nextBatch(): Promise<boolean> {
    if (this.#remaining === 0) return false;
    const n = Math.min(FIXUP_BATCH, this.#remaining);
    const rawIndex = await this.#indexReader.read(n * this.indexBytes);
    const xors = await this.#xorReader.read(n * this.elementBytes);
    const view = new DataView(rawIndex.buffer, rawIndex.byteOffset, rawIndex.byteLength);
    const indices = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      // Indices past 2^32 cannot be represented here; tensors that large use U64 and are refused below.
      const index = this.indexBytes === 8 ? Number(view.getBigUint64(i * 8, true)) : view.getUint32(i * 4, true);
      if (index <= this.#last) this.#fail("are not strictly ascending");
      if (index >= this.numel) this.#fail("point past the end of the tensor");
      if (index > 0xffffffff) this.#fail("need 64-bit indices, which this version cannot apply");
      this.#last = index;
      indices[i] = index;
    }
    this.#batchIndices = indices;
    this.#batchXors = new Uint8Array(xors);
    this.#position = 0;
    this.#remaining -= n;
    return true;
  }

  #fail(problem: string): never {
    throw new DeltaError(`${this.file.path}: the fix-ups of tensor "${this.name}" ${problem}; download the delta again`);
  }
}
