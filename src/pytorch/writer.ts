/**
 * Streams a PyTorch checkpoint into a byte sink, byte-identical to what
 * torch.save (torch 1.13, the zip format) writes for a flat dict or
 * OrderedDict of contiguous tensors that each own their storage:
 *
 *   <archive>/data.pkl      the pickle (pickle-writer.ts)
 *   <archive>/data/<key>    each storage, keys "0", "1", ... in state-dict
 *                           order, written in the keys' string order
 *                           (data/10 before data/2), as `sorted(keys)` does
 *   <archive>/version       "3\n"
 *
 * then the central directory (zip-writer.ts). <archive> is the file name
 * up to its last dot, as PyTorchStreamWriter names it. Tensor bytes are
 * streamed chunk by chunk, each record's CRC-32 computed on the way (the
 * descriptor after the data carries it), so memory never holds a tensor.
 *
 * `byteorderRecord` adds the `byteorder` record ("little", after data.pkl)
 * that torch >= 2.1 writes. Later versions add more records (see README):
 * with this option the layout is 2.1's, not theirs.
 */
import { DeltaWeightsError, ModelError } from "../errors.js";
import { dtypeBytes, type DType } from "../dtypes.js";
import type { ByteSink } from "../tensors.js";
import { crc32 } from "./crc32.js";
import { pickleStateDict, type StateDictContainer } from "./pickle-writer.js";
import { dataDescriptor, planZip, zipTrailer, type ZipPlan } from "./zip-writer.js";

export interface PytorchWriteOptions {
  /** What torch.save was given: "dict" (transformers' shards; the default) or "OrderedDict". */
  container?: StateDictContainer;
  /** Write the `byteorder` record torch >= 2.1 adds. */
  byteorderRecord?: boolean;
  /** The archive's top folder (default: from the file name, as torch.save names it). */
  archiveName?: string;
}

export interface PlacedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** The tensor's bytes in the file: [begin, end). */
  begin: number;
  end: number;
}

/** The file's archive name as PyTorchStreamWriter derives it: the last path component up to its last dot. */
export function archiveNameFor(fileName: string): string {
  const base = fileName.slice(Math.max(fileName.lastIndexOf("/"), fileName.lastIndexOf("\\")) + 1);
  const dot = base.lastIndexOf(".");
  return dot < 0 ? base : base.slice(0, dot);
}

const VERSION_RECORD = new TextEncoder().encode("3\n");
const BYTEORDER_RECORD = new TextEncoder().encode("little");

export class PytorchWriter {
  /** Tensors in the order their bytes must be written (their storage keys' string order). */
  readonly tensors: readonly PlacedTensor[];
  readonly fileSize: number;
  /** Everything before the first tensor's bytes. */
  readonly headerBytes: Uint8Array;
  readonly #plan: ZipPlan;
  readonly #crcs: number[] = [];
  /** The small records written whole (data.pkl, byteorder, version), by record index. */
  readonly #smallRecords = new Map<number, Uint8Array>();
  /** Record index of each tensor, in `tensors` order. */
  readonly #tensorRecords: number[] = [];
  #nextRecord = 0;
  #next = 0;

  constructor(
    private readonly sink: ByteSink,
    private readonly label: string,
    tensors: readonly { name: string; dtype: DType; shape: readonly number[] }[],
    options: PytorchWriteOptions = {},
  ) {
    const archive = options.archiveName ?? archiveNameFor(label);
    if (archive.length === 0) throw new ModelError(`cannot write ${label} as a PyTorch checkpoint: torch.save derives the archive name from the file name up to its last dot, and that is empty`);
    const seen = new Set<string>();
    for (const t of tensors) {
      if (seen.has(t.name)) throw new ModelError(`cannot write ${label}: tensor "${t.name}" is listed twice`);
      seen.add(t.name);
    }
    const pickle = pickleStateDict(tensors, options.container ?? "dict", label);
    // Storage keys are "0", "1", ... in state-dict order; records follow sorted(keys), a string sort.
    const keys = tensors.map((_, i) => String(i)).sort();
    const records: { name: string; size: number }[] = [{ name: `${archive}/data.pkl`, size: pickle.length }];
    this.#smallRecords.set(0, pickle);
    if (options.byteorderRecord === true) {
      this.#smallRecords.set(records.length, BYTEORDER_RECORD);
      records.push({ name: `${archive}/byteorder`, size: BYTEORDER_RECORD.length });
    }
    const ordered: { name: string; dtype: DType; shape: number[] }[] = [];
    for (const key of keys) {
      const t = tensors[Number(key)]!;
      this.#tensorRecords.push(records.length);
      records.push({ name: `${archive}/data/${key}`, size: t.shape.reduce((n, d) => n * d, 1) * dtypeBytes(t.dtype) });
      ordered.push({ name: t.name, dtype: t.dtype, shape: [...t.shape] });
    }
    this.#smallRecords.set(records.length, VERSION_RECORD);
    records.push({ name: `${archive}/version`, size: VERSION_RECORD.length });

    this.#plan = planZip(records);
    this.fileSize = this.#plan.fileSize;
    this.tensors = ordered.map((t, i) => {
      const record = this.#plan.records[this.#tensorRecords[i]!]!;
      return { ...t, begin: record.dataOffset, end: record.dataOffset + record.size };
    });
    const firstTensorRecord = this.#tensorRecords[0] ?? records.length - 1;
    const prefix = this.#plan.records[firstTensorRecord]!.dataOffset;
    this.headerBytes = this.#prefixBytes(firstTensorRecord, prefix);
  }

  /** Writes the records before the first tensor (when not yet written), then the tensor's, from its chunks. */
  async writeTensor(name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    const expected = this.tensors[this.#next];
    if (expected === undefined) throw this.#error("is one tensor too many for this checkpoint", name);
    if (expected.name !== name) throw this.#error(`is written out of order: "${expected.name}" comes next`, name);
    const recordIndex = this.#tensorRecords[this.#next]!;
    await this.#writeSmallRecordsUpTo(recordIndex);
    const record = this.#plan.records[recordIndex]!;
    await this.sink.write(record.localHeader);
    let written = 0;
    let crc = 0;
    for await (const chunk of chunks) {
      written += chunk.length;
      if (written > record.size) throw this.#error(`got more than its ${record.size} bytes`, name);
      crc = crc32(chunk, crc);
      await this.sink.write(chunk);
    }
    if (written !== record.size) throw this.#error(`got ${written} bytes, expected ${record.size}`, name);
    if (record.descriptorSize > 0) await this.sink.write(dataDescriptor(record, crc));
    this.#crcs[recordIndex] = crc;
    this.#nextRecord = recordIndex + 1;
    this.#next++;
  }

  /** Checks every tensor was written, then writes the last records and the central directory. */
  async finish(): Promise<void> {
    const missing = this.tensors[this.#next];
    if (missing !== undefined) throw this.#error("was never written", missing.name);
    await this.#writeSmallRecordsUpTo(this.#plan.records.length);
    const crcs = this.#plan.records.map((_, i) => this.#crcs[i]!);
    await this.sink.write(zipTrailer(this.#plan, crcs));
  }

  /** The whole records [nextRecord, end) that are written from memory (none of them a tensor). */
  async #writeSmallRecordsUpTo(end: number): Promise<void> {
    for (; this.#nextRecord < end; this.#nextRecord++) {
      for (const bytes of this.#smallRecordBytes(this.#nextRecord)) await this.sink.write(bytes);
    }
  }

  #smallRecordBytes(index: number): Uint8Array[] {
    const data = this.#smallRecords.get(index);
    if (data === undefined) throw new DeltaWeightsError("E_PYTORCH", `Failed to write ${this.label}: record ${this.#plan.records[index]!.name} has no bytes`);
    const record = this.#plan.records[index]!;
    const crc = crc32(data);
    this.#crcs[index] = crc;
    return [record.localHeader, data, dataDescriptor(record, crc)];
  }

  #prefixBytes(firstTensorRecord: number, length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    let at = 0;
    for (let i = 0; i < firstTensorRecord; i++) {
      for (const part of this.#smallRecordBytes(i)) {
        bytes.set(part, at);
        at += part.length;
      }
    }
    bytes.set(this.#plan.records[firstTensorRecord]!.localHeader, at);
    return bytes;
  }

  #error(problem: string, tensor: string): DeltaWeightsError {
    return new DeltaWeightsError("E_PYTORCH", `Failed to write ${this.label}: tensor "${tensor}" ${problem}`);
  }
}
