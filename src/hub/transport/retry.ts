import { MAX_RETRY_AFTER_MS } from "../../limits.js";

/**
 * Which failures of a download are worth another try, and how long to wait.
 * Like huggingface_hub's http_backoff: exponential backoff from 1 s to 8 s,
 * 5 tries, and a 429's Retry-After honoured.
 */
export interface RetryPolicy {
  /** Tries of one byte range that bring no new byte, before giving up. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 1000, maxDelayMs: 8000 };

/** A failure that another try may not repeat; `reason` is a few words for messages. */
export class TransientError extends Error {
  constructor(readonly reason: string, readonly retryAfterMs?: number, options?: { cause?: unknown }) {
    super(reason, options);
    this.name = "TransientError";
  }
}

/** No byte arrived for the read timeout (HF_HUB_DOWNLOAD_TIMEOUT). */
export class ReadTimeoutError extends TransientError {
  constructor(ms: number) {
    super(`no data for ${formatSeconds(ms)}`);
  }
}

/** Statuses a server uses for "not now": retried. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

/** Wait before try `failures + 1`: doubling from the base, capped, with a little jitter so connections spread out. */
export function backoffMs(policy: RetryPolicy, failures: number): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, failures - 1));
  return Math.round(exp * (0.8 + 0.2 * Math.random()));
}

/**
 * `Retry-After` as milliseconds (delta-seconds or an HTTP date), or undefined
 * when absent or unreadable. Values past MAX_RETRY_AFTER_MS are returned as
 * they are: the caller refuses to wait that long.
 */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  if (header === null) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export function retryAfterTooLong(ms: number | undefined): boolean {
  return ms !== undefined && ms > MAX_RETRY_AFTER_MS;
}

const NETWORK_CODES = new Set([
  "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH", "ENETDOWN",
  "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_CLOSED",
]);

/**
 * If `err` (thrown by fetch or by reading a body) is a network failure, a few
 * words saying which; else undefined. fetch wraps the socket's error in a
 * TypeError ("fetch failed", or "terminated" mid-body) with the cause.
 */
export function networkFailure(err: unknown): string | undefined {
  if (err instanceof TransientError) return err.reason;
  const chain: unknown[] = [];
  for (let e: unknown = err; e !== undefined && e !== null && chain.length < 5; e = (e as { cause?: unknown }).cause) chain.push(e);
  for (const e of chain) {
    const code = (e as { code?: unknown }).code;
    // node:http says "aborted" (ECONNRESET) when the peer closes before the body's end.
    if (code === "ECONNRESET" && (e as Error).message === "aborted") return "connection closed";
    if (typeof code === "string" && NETWORK_CODES.has(code)) return describeCode(code);
  }
  const top = chain[0];
  if (top instanceof TypeError && /fetch failed|terminated|network|socket/i.test(top.message)) return "the connection failed";
  if (top instanceof Error && (top.name === "TimeoutError" || top.name === "ConnectTimeoutError")) return "timed out";
  return undefined;
}

function describeCode(code: string): string {
  switch (code) {
    case "ECONNRESET": return "connection reset";
    case "ECONNREFUSED": return "connection refused";
    case "EPIPE": case "UND_ERR_SOCKET": case "UND_ERR_CLOSED": case "ECONNABORTED": return "connection closed";
    case "ENOTFOUND": case "EAI_AGAIN": return "host not found";
    case "ETIMEDOUT": case "UND_ERR_CONNECT_TIMEOUT": case "UND_ERR_HEADERS_TIMEOUT": case "UND_ERR_BODY_TIMEOUT": return "timed out";
    default: return "network unreachable";
  }
}

export function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** Sleeps, or rejects with the signal's reason when it is aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
