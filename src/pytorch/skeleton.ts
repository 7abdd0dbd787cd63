/**
 * A checkpoint's skeleton: every byte of the file that is not a tensor's
 * data (zip headers, padding, data.pkl, descriptors with their CRC-32s, the
 * central directory), kept verbatim, and where each tensor's bytes go. The
 * tensors' bytes and this skeleton rebuild the file exactly, whichever torch
 * version, container or record set wrote it (an OrderedDict with
 * `_metadata`, torch 2.x's byteorder and serialization_id records): it
 * describes the publisher's file, it does not re-derive it.
 *
 * A file qualifies when each storage holds exactly one tensor's bytes: used
 * by one tensor, from offset 0, contiguously, the whole storage (as
 * save_pretrained writes shards), and stored uncompressed. Pure: reads
 * through `read`.
 */
import { DeltaWeightsError, PytorchError } from "../errors.js";
import { MAX_SKELETON_BYTES } from "../limits.js";
import { readCheckpoint } from "./checkpoint.js";
import { isContiguous } from "./strided-read.js";
import type { ReadAt } from "./zip.js";


export type SkeletonSegment = { bytes: Uint8Array } | { tensor: string; length: number };

export type SkeletonResult = { segments: SkeletonSegment[] } | { refused: string };

/** The skeleton of the checkpoint `read` serves, or why the file cannot be rebuilt from its tensors. */
export async function checkpointSkeleton(read: ReadAt, fileSize: number, file: string): Promise<SkeletonResult> {
  const checkpoint = await readCheckpoint(read, fileSize, file);
  const users = new Map<unknown, number>();
  for (const t of checkpoint.tensors) users.set(t.view.storage, (users.get(t.view.storage) ?? 0) + 1);
  const spans: { tensor: string; start: number; length: number }[] = [];
  for (const t of checkpoint.tensors) {
    const { storage, storageOffset, shape, strides } = t.view;
    if (users.get(storage)! > 1) return { refused: `tensor "${t.name}" shares its storage with another tensor` };
    if (storageOffset !== 0 || !isContiguous(shape, strides)) return { refused: `tensor "${t.name}" is a view (offset or strides), not its storage` };
    if (storage.entry.uncompressedSize !== t.byteLength) return { refused: `tensor "${t.name}" holds ${t.byteLength} of its storage's ${storage.entry.uncompressedSize} bytes` };
    if (storage.entry.method !== 0) return { refused: `tensor "${t.name}" is stored compressed` };
    spans.push({ tensor: t.name, start: storage.dataStart, length: t.byteLength });
  }
  spans.sort((a, b) => a.start - b.start);
  const segments: SkeletonSegment[] = [];
  let at = 0;
  let literal = 0;
  const gap = async (end: number) => {
    if (end < at) throw new PytorchError("data-overlap", file, "has tensor data that overlaps");
    if (end === at) return;
    literal += end - at;
    if (literal > MAX_SKELETON_BYTES) throw new SkeletonTooLarge();
    segments.push({ bytes: await read(at, end - at) });
    at = end;
  };
  try {
    for (const span of spans) {
      await gap(span.start);
      segments.push({ tensor: span.tensor, length: span.length });
      at = span.start + span.length;
    }
    await gap(fileSize);
  } catch (err) {
    if (err instanceof SkeletonTooLarge) return { refused: `has more than ${MAX_SKELETON_BYTES} bytes besides its tensors' data` };
    throw err;
  }
  return { segments };
}

class SkeletonTooLarge extends Error {}

/** Writes a skeleton's file: its literal bytes, and each tensor's bytes where the skeleton places them. */
export class SkeletonWriter {
  /** The tensors in the order the file holds their bytes. */
  readonly tensors: readonly { name: string; length: number }[];
  #segment = 0;

  constructor(
    private readonly sink: { write(bytes: Uint8Array): Promise<void> },
    private readonly label: string,
    private readonly segments: readonly SkeletonSegment[],
  ) {
    this.tensors = segments.flatMap((s) => ("tensor" in s ? [{ name: s.tensor, length: s.length }] : []));
  }

  async writeTensor(name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    await this.#literalsUpToTensor();
    const segment = this.segments[this.#segment];
    if (segment === undefined || !("tensor" in segment)) throw this.#error(`tensor "${name}" is one too many`);
    if (segment.tensor !== name) throw this.#error(`tensor "${name}" is written out of order: "${segment.tensor}" comes next`);
    let written = 0;
    for await (const chunk of chunks) {
      written += chunk.length;
      if (written > segment.length) throw this.#error(`tensor "${name}" got more than its ${segment.length} bytes`);
      await this.sink.write(chunk);
    }
    if (written !== segment.length) throw this.#error(`tensor "${name}" got ${written} bytes, expected ${segment.length}`);
    this.#segment++;
  }

  async finish(): Promise<void> {
    await this.#literalsUpToTensor();
    const segment = this.segments[this.#segment];
    if (segment !== undefined) throw this.#error(`tensor "${"tensor" in segment ? segment.tensor : "?"}" was never written`);
  }

  async #literalsUpToTensor(): Promise<void> {
    for (let s = this.segments[this.#segment]; s !== undefined && "bytes" in s; s = this.segments[++this.#segment]) {
      await this.sink.write(s.bytes);
    }
  }

  #error(problem: string): DeltaWeightsError {
    return new DeltaWeightsError("E_PYTORCH", `Failed to write ${this.label}: ${problem}`);
  }
}
