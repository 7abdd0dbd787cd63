/**
 * CRC-32 (the zip polynomial), continued from `value`: zlib's (Node >= 20.15,
 * native speed), else a table-driven one with the same result.
 */
import * as zlib from "node:zlib";

const table = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32Table(data: Uint8Array, value: number): number {
  let c = ~value >>> 0;
  for (const byte of data) c = (table[(c ^ byte) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

export const crc32: (data: Uint8Array, value?: number) => number = typeof (zlib as { crc32?: unknown }).crc32 === "function"
  ? (data, value = 0) => zlib.crc32(data, value) >>> 0
  : (data, value = 0) => crc32Table(data, value);
