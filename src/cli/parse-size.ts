import { UsageError } from "../errors.js";

/** Decimal units as Hugging Face counts them ("5GB" = 5 * 10^9), binary ones as usual. */
const UNITS: Record<string, number> = {
  "": 1, b: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/**
 * Parses a size such as "5GB" (5 * 10^9 bytes, like huggingface_hub and
 * transformers), "5GiB" (5 * 2^30), "500MB", "1.5GB" or plain bytes "1048576".
 * Units are case-insensitive. Anything else is a usage error.
 */
export function parseSize(text: string, option = "--max-shard-size"): number {
  const match = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match === null ? undefined : UNITS[(match[2] as string).toLowerCase()];
  if (match === null || unit === undefined) {
    throw new UsageError(`${option}: "${text}" is not a size (examples: 5GB, 500MB, 2GiB, 1048576)`);
  }
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new UsageError(`${option}: "${text}" must be at least 1 byte and at most 2^53-1 bytes`);
  }
  return bytes;
}
