import { UsageError } from "../../errors.js";
import { DEFAULT_DOWNLOAD_CONNECTIONS, MAX_DOWNLOAD_CONNECTIONS, MIN_DOWNLOAD_RANGE_BYTES } from "../../limits.js";
import { DEFAULT_RETRY, type RetryPolicy } from "./retry.js";

/**
 * How downloads run, for any host: checked once, with defaults filled in,
 * before a request is made (a bad --connections fails at once, not after the
 * listing).
 */

/** Defaults of the transfer settings below (the CLI maps flags and HF_* variables onto them). */
export const DOWNLOAD_DEFAULTS = {
  connections: DEFAULT_DOWNLOAD_CONNECTIONS,
  rangeBytes: 32 * 1024 * 1024,
  downloadTimeoutMs: 10_000,
  etagTimeoutMs: 10_000,
} as const;

/** The settings as a caller gives them, each optional (see DownloadOptions for their meaning). */
export interface TransferSettingsGiven {
  connections?: number;
  rangeBytes?: number;
  downloadTimeoutMs?: number;
  etagTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
}

export interface TransferSettingsResolved {
  connections: number;
  rangeBytes: number;
  downloadTimeoutMs: number;
  etagTimeoutMs: number;
  retry: RetryPolicy;
}

/** Every setting checked (a UsageError names the first out of range) and defaulted. */
export function transferSettings(options: TransferSettingsGiven): TransferSettingsResolved {
  const int = (name: string, value: number | undefined, fallback: number, min: number, max: number): number => {
    if (value === undefined) return fallback;
    if (!Number.isSafeInteger(value) || value < min || value > max) throw new UsageError(`${name} must be an integer from ${min} to ${max}, not ${value}`);
    return value;
  };
  const retry = { ...DEFAULT_RETRY, ...options.retry };
  return {
    connections: int("connections", options.connections, DOWNLOAD_DEFAULTS.connections, 1, MAX_DOWNLOAD_CONNECTIONS),
    rangeBytes: int("rangeBytes", options.rangeBytes, DOWNLOAD_DEFAULTS.rangeBytes, MIN_DOWNLOAD_RANGE_BYTES, Number.MAX_SAFE_INTEGER),
    downloadTimeoutMs: int("downloadTimeoutMs", options.downloadTimeoutMs, DOWNLOAD_DEFAULTS.downloadTimeoutMs, 1, 24 * 3600_000),
    etagTimeoutMs: int("etagTimeoutMs", options.etagTimeoutMs, DOWNLOAD_DEFAULTS.etagTimeoutMs, 1, 24 * 3600_000),
    retry: {
      attempts: int("retry.attempts", retry.attempts, DEFAULT_RETRY.attempts, 1, 100),
      baseDelayMs: int("retry.baseDelayMs", retry.baseDelayMs, DEFAULT_RETRY.baseDelayMs, 0, 3600_000),
      maxDelayMs: int("retry.maxDelayMs", retry.maxDelayMs, DEFAULT_RETRY.maxDelayMs, 0, 3600_000),
    },
  };
}
