import { DeltaError } from "../../errors.js";

/**
 * The number of pieces in a SentencePiece model (`tokenizer.model`): the
 * repeated field 1 (`pieces`) of its ModelProto, counted by walking the
 * protobuf's top-level fields without decoding them. That count is what
 * `sp_model.get_piece_size()` returns, and LLaMA's tokenizer length before
 * added tokens.
 */
export function sentencePieceCount(bytes: Uint8Array, where: string): number {
  let pos = 0;
  let pieces = 0;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= bytes.length) throw new DeltaError(`${where} is not a SentencePiece model (it ends inside a field)`);
      const b = bytes[pos++]!;
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(value)) break;
        return value;
      }
      scale *= 128;
    }
    throw new DeltaError(`${where} is not a SentencePiece model (a malformed varint at byte ${pos})`);
  };
  while (pos < bytes.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw new DeltaError(`${where} is not a SentencePiece model (field number 0 at byte ${pos})`);
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const length = varint();
      if (length > bytes.length - pos) throw new DeltaError(`${where} is not a SentencePiece model (a field runs past its end)`);
      if (field === 1) pieces++;
      pos += length;
    } else {
      throw new DeltaError(`${where} is not a SentencePiece model (wire type ${wire} at byte ${pos})`);
    }
    if (pos > bytes.length) throw new DeltaError(`${where} is not a SentencePiece model (a field runs past its end)`);
  }
  if (pieces === 0) throw new DeltaError(`${where} is not a SentencePiece model (it has no pieces)`);
  return pieces;
}
