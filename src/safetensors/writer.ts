/**
 * Streams a safetensors file into a byte sink (an AtomicFile, usually):
 * header first, then each tensor's bytes in header order, with every
 * tensor's byte count checked so a short or long stream can never produce a
 * file whose header lies.
 */
import { SafetensorsError } from "../errors.js";
import type { DType } from "../dtypes.js";
import type { ByteSink } from "../tensors.js";
import { encodeHeader, encodeHeaderVerbatim, parseHeaderJson, type HeaderTensor, type MetadataInput } from "./header.js";

export type { ByteSink } from "../tensors.js";

export class SafetensorsWriter {
  /** Tensors in the order their bytes must be written. */
  readonly tensors: readonly HeaderTensor[];
  readonly headerBytes: Uint8Array;
  /** Total file size once complete. */
  readonly fileSize: number;
  #next = 0;
  #headerWritten = false;

  private constructor(private readonly sink: ByteSink, private readonly label: string, headerBytes: Uint8Array, tensors: HeaderTensor[]) {
    this.headerBytes = headerBytes;
    this.tensors = tensors;
    const dataBytes = tensors.length === 0 ? 0 : (tensors[tensors.length - 1] as HeaderTensor).end;
    this.fileSize = headerBytes.length + dataBytes;
  }

  /** A file laid out as Hugging Face's serializer lays it out. */
  static create(
    sink: ByteSink,
    label: string,
    tensors: readonly { name: string; dtype: DType; shape: readonly number[] }[],
    metadata?: MetadataInput,
  ): SafetensorsWriter {
    const { bytes, tensors: placed } = encodeHeader(tensors, metadata);
    return new SafetensorsWriter(sink, label, bytes, placed);
  }

  /** A file with exactly this header text (a publisher's), validated first. */
  static verbatim(sink: ByteSink, label: string, headerText: string): SafetensorsWriter {
    const bytes = encodeHeaderVerbatim(headerText);
    const header = parseHeaderJson(label, bytes.subarray(8));
    return new SafetensorsWriter(sink, label, bytes, header.tensors);
  }

  /** Writes the header, then each tensor's chunks, in order. */
  async writeTensor(name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    if (!this.#headerWritten) {
      await this.sink.write(this.headerBytes);
      this.#headerWritten = true;
    }
    const expected = this.tensors[this.#next];
    if (expected === undefined) throw new SafetensorsError("write-out-of-order", this.label, "is one tensor too many for this header", name);
    if (expected.name !== name) {
      throw new SafetensorsError("write-out-of-order", this.label, `is written out of order: "${expected.name}" comes next`, name);
    }
    const length = expected.end - expected.begin;
    let written = 0;
    for await (const chunk of chunks) {
      written += chunk.length;
      if (written > length) throw new SafetensorsError("write-length-mismatch", this.label, `got more than its ${length} bytes`, name);
      await this.sink.write(chunk);
    }
    if (written !== length) throw new SafetensorsError("write-length-mismatch", this.label, `got ${written} bytes, expected ${length}`, name);
    this.#next++;
  }

  /** Checks that every tensor was written (and writes the header of an empty model). */
  async finish(): Promise<void> {
    if (!this.#headerWritten) {
      await this.sink.write(this.headerBytes);
      this.#headerWritten = true;
    }
    const missing = this.tensors[this.#next];
    if (missing !== undefined) throw new SafetensorsError("write-incomplete", this.label, "was never written", missing.name);
  }
}
