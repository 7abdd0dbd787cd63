/**
 * A reader of SentencePiece's `tokenizer.model`: the protobuf ModelProto
 * (sentencepiece_model.proto), only the parts a GGUF vocabulary needs: each
 * piece's text, score and type, and the trainer's model type. Unknown fields
 * are skipped, as protobuf readers do. Pure: bytes in.
 */
import { ModelError } from "../errors.js";

/** ModelProto.SentencePiece.Type. */
export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, BYTE: 6, UNUSED: 5 } as const;

export interface SentencePiece {
  piece: string;
  score: number;
  /** A PieceType value (NORMAL when absent, the proto's default). */
  type: number;
}

export interface SentencePieceModel {
  pieces: SentencePiece[];
  /** TrainerSpec.model_type: 1 unigram (the proto's default), 2 bpe, 3 word, 4 char. */
  modelType: number;
}

/** More pieces than any real vocabulary (LLaMA's has 32,000; the largest SentencePiece models about 256,000). */
const MAX_PIECES = 4_000_000;

class ProtoReader {
  pos: number;
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array, private readonly label: string, start = 0, readonly end = bytes.length) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(problem: string): never {
    throw new ModelError(`${this.label} is not a SentencePiece model: ${problem} at byte ${this.pos}`);
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail("a varint runs past its message");
      const b = this.bytes[this.pos++]!;
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return result;
      scale *= 128;
    }
    return this.fail("a varint longer than 10 bytes");
  }

  /** [start, end) of a length-delimited field's payload. */
  lengthDelimited(): [number, number] {
    const length = this.varint();
    const start = this.pos;
    if (length > this.end - start) this.fail("a field runs past its message");
    this.pos = start + length;
    return [start, start + length];
  }

  float32(): number {
    if (this.end - this.pos < 4) this.fail("a float runs past its message");
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        if (this.end - this.pos < 8) this.fail("a fixed64 runs past its message");
        this.pos += 8;
        return;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        if (this.end - this.pos < 4) this.fail("a fixed32 runs past its message");
        this.pos += 4;
        return;
      default:
        this.fail(`wire type ${wireType} (groups are not used by sentencepiece_model.proto)`);
    }
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function readPiece(bytes: Uint8Array, label: string, start: number, end: number): SentencePiece {
  const r = new ProtoReader(bytes, label, start, end);
  let piece = "";
  let score = 0;
  let type: number = PieceType.NORMAL;
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1 && wire === 2) {
      const [s, e] = r.lengthDelimited();
      try {
        piece = utf8.decode(bytes.subarray(s, e));
      } catch {
        r.fail("a piece that is not UTF-8");
      }
    } else if (field === 2 && wire === 5) {
      score = r.float32();
    } else if (field === 3 && wire === 0) {
      type = r.varint();
    } else {
      r.skip(wire);
    }
  }
  return { piece, score, type };
}

function readTrainerModelType(bytes: Uint8Array, label: string, start: number, end: number): number {
  const r = new ProtoReader(bytes, label, start, end);
  let modelType = 1;
  while (!r.done) {
    const tag = r.varint();
    if (tag === (3 << 3)) modelType = r.varint();
    else r.skip(tag & 7);
  }
  return modelType;
}

/** Parses `tokenizer.model` (named `label` in messages). */
export function readSentencePieceModel(bytes: Uint8Array, label: string): SentencePieceModel {
  const r = new ProtoReader(bytes, label);
  const pieces: SentencePiece[] = [];
  let modelType = 1;
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1 && wire === 2) {
      if (pieces.length >= MAX_PIECES) r.fail(`more than ${MAX_PIECES} pieces`);
      const [s, e] = r.lengthDelimited();
      pieces.push(readPiece(bytes, label, s, e));
    } else if (field === 2 && wire === 2) {
      const [s, e] = r.lengthDelimited();
      modelType = readTrainerModelType(bytes, label, s, e);
    } else {
      r.skip(wire);
    }
  }
  if (pieces.length === 0) throw new ModelError(`${label} is not a SentencePiece model: it has no pieces`);
  return { pieces, modelType };
}
