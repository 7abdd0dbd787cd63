import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

/**
 * One GET of the data path, as the transfer needs it: status, headers, and
 * the body read chunk by chunk. Two implementations:
 *
 * - node:http(s) with a keep-alive agent, the default: the body's Buffers
 *   come straight from the socket. On the bench's 1.3 GB download this took
 *   about half the main-thread CPU of fetch (web streams add a promise, a
 *   transfer and garbage per chunk), and on two cores CPU is what limits
 *   throughput.
 * - a caller's `fetch` (the library's injectable I/O), used whenever one is
 *   given: proxies, instrumentation, tests.
 */
export interface RangeResponse {
  status: number;
  header(name: string): string | null;
  /** The next chunk of the body, or undefined at its end. */
  read(): Promise<Uint8Array | undefined>;
  /** Reads and drops a short body (a redirect, an error) so the connection can be reused. */
  discard(): Promise<void>;
  /** Abandons the rest of the body (the connection is closed). */
  cancel(): void;
}

export interface RangeClient {
  get(url: string, headers: Record<string, string>, signal: AbortSignal): Promise<RangeResponse>;
  /** Closes idle connections. */
  close(): void;
}

export function fetchClient(fetcher: typeof fetch): RangeClient {
  return {
    async get(url, headers, signal) {
      const res = await fetcher(url, { headers, redirect: "manual", signal });
      const reader = res.body?.getReader();
      return {
        status: res.status,
        header: (name) => res.headers.get(name),
        read: async () => {
          if (reader === undefined) return undefined;
          const { done, value } = await reader.read();
          return done ? undefined : value;
        },
        discard: async () => {
          await reader?.cancel().catch(() => undefined);
        },
        cancel: () => {
          void reader?.cancel().catch(() => undefined);
        },
      };
    },
    close: () => undefined,
  };
}

export function nodeHttpClient(connections: number): RangeClient {
  const options = { keepAlive: true, maxSockets: connections, scheduling: "lifo" as const };
  const agents = { http: new HttpAgent(options), https: new HttpsAgent(options) };
  return {
    get(url, headers, signal) {
      return new Promise((resolve, reject) => {
        const target = new URL(url);
        const secure = target.protocol === "https:";
        const send = secure ? httpsRequest : httpRequest;
        const req = send(target, { method: "GET", headers, agent: secure ? agents.https : agents.http, signal }, (res) => {
          const encoding = res.headers["content-encoding"];
          if (encoding !== undefined && encoding !== "identity" && res.statusCode !== undefined && res.statusCode < 300) {
            res.destroy();
            reject(new Error(`the server sent compressed bytes (Content-Encoding: ${encoding}) though asked not to`));
            return;
          }
          resolve(wrap(res));
        });
        req.on("error", reject);
        req.end();
      });
    },
    close() {
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}

function wrap(res: IncomingMessage): RangeResponse {
  // Made on the first read only: once iterating, the stream ignores resume().
  let chunks: AsyncIterator<Buffer> | undefined;
  return {
    status: res.statusCode ?? 0,
    header: (name) => {
      const value = res.headers[name.toLowerCase()];
      return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
    },
    read: async () => {
      chunks ??= res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      const { done, value } = await chunks.next();
      return done === true ? undefined : value;
    },
    discard: () =>
      new Promise<void>((resolve) => {
        if (res.readableEnded) {
          resolve();
          return;
        }
        res.on("end", resolve);
        res.on("error", () => resolve());
        res.on("close", resolve);
        res.resume();
      }),
    cancel: () => {
      res.destroy();
    },
  };
}
