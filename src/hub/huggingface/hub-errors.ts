import { DeltaWeightsError, HubError } from "../../errors.js";

/** How to give a token, named in every auth failure. */
export const TOKEN_HOWTO = "--token, HF_TOKEN or $HF_HOME/token";

/**
 * A fetch that remembers the Hub's `X-Error-Code` of failed responses:
 * `@huggingface/hub` turns them into HubApiError with the status but drops
 * that header, which tells a missing repo from a gated one.
 */
export class HubFetch {
  readonly #base: typeof fetch;
  readonly #codes = new Map<string, string>();
  lastErrorCode: string | undefined;

  constructor(base: typeof fetch = globalThis.fetch) {
    this.#base = base;
  }

  readonly fetch: typeof fetch = async (input, init) => {
    const res = await this.#base(input, init);
    if (!res.ok) {
      const code = res.headers.get("X-Error-Code") ?? undefined;
      this.lastErrorCode = code;
      if (code !== undefined) this.#codes.set(res.url, code);
    }
    return res;
  };

  errorCodeFor(url: string | undefined): string | undefined {
    return (url !== undefined ? this.#codes.get(url) : undefined) ?? this.lastErrorCode;
  }
}

export interface FailureContext {
  /** "download" or "push", for "Failed to <action> <repo>". */
  action: "download" | "push";
  repo: string;
  revision?: string;
  file?: string;
  hubUrl: string;
  hasToken: boolean;
}

/** The parts of a HubApiError we use (the class is loaded lazily, so matched by shape). */
interface ApiErrorLike {
  statusCode: number;
  url?: string;
  message: string;
}

function isApiError(err: unknown): err is ApiErrorLike {
  return err instanceof Error && typeof (err as Partial<ApiErrorLike>).statusCode === "number";
}

/** An HTTP failure as a one-line HubError that says what to do. */
export function httpFailure(status: number, errorCode: string | undefined, ctx: FailureContext, cause?: unknown): HubError {
  const what = `Failed to ${ctx.action} ${ctx.repo}${ctx.revision !== undefined && ctx.revision !== "main" ? `@${ctx.revision}` : ""}`;
  const login = ctx.hasToken ? `check that your token (${TOKEN_HOWTO}) can read it` : `log in: pass a token with ${TOKEN_HOWTO}`;
  const line = (problem: string) => new HubError(`${what}: ${problem}`, { cause });
  if (errorCode === "GatedRepo") {
    return line(`the repo is gated (${status}): request access at ${ctx.hubUrl}/${ctx.repo}, then pass a token of that account with ${TOKEN_HOWTO}`);
  }
  if (errorCode === "RepoNotFound") {
    return line(`repository not found, or private (${status}): check the repo id, and ${login}`);
  }
  if (errorCode === "RevisionNotFound") {
    return line(`revision "${ctx.revision ?? "main"}" not found (${status}): check the branch, tag or commit id`);
  }
  if (errorCode === "EntryNotFound") {
    return line(`file ${ctx.file ?? "?"} not found in the repo (${status}): check the repo id and revision`);
  }
  if (status === 401) {
    return line(ctx.hasToken
      ? `the Hub refused the token (401): pass a valid token with ${TOKEN_HOWTO}`
      : `authentication required (401): ${login}`);
  }
  if (status === 403) {
    return line(ctx.action === "push"
      ? `the token may not write to this repo (403): use a token with write access (${TOKEN_HOWTO})`
      : `access denied (403): ${login}`);
  }
  if (status === 404) return line(`not found (404): check the repo id and revision`);
  if (status === 409) return line(`conflict (409): the branch moved or the repo is busy; try again`);
  if (status === 429) return line(`rate limited by the Hub (429): wait and try again`);
  if (status >= 500) return line(`the Hub failed (${status})${ctx.file !== undefined ? ` on ${ctx.file}` : ""}: try again later`);
  return line(`the Hub answered ${status}${ctx.file !== undefined ? ` on ${ctx.file}` : ""}`);
}

/** Any failure of a Hub operation (HubApiError, network error, ours) as one HubError line. */
export function hubFailure(err: unknown, ctx: FailureContext, fetcher?: HubFetch): DeltaWeightsError {
  if (err instanceof DeltaWeightsError) return err;
  if (isApiError(err)) {
    const file = ctx.file ?? /(?:uploading|upload of|part \S+ of) (\S+)/.exec(err.message)?.[1];
    return httpFailure(err.statusCode, fetcher?.errorCodeFor(err.url), { ...ctx, file }, err);
  }
  const message = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
  if (isNetworkFailure(err)) {
    return new HubUnreachableError(
      `Failed to ${ctx.action} ${ctx.repo}: cannot reach ${ctx.hubUrl} (${message}${cause}): check the network or HF_ENDPOINT` +
        (ctx.action === "download" ? ", or set HF_HUB_OFFLINE=1 to use the cache" : ""),
      { cause: err },
    );
  }
  return new HubError(`Failed to ${ctx.action} ${ctx.repo}: ${message.split("\n")[0]}`, { cause: err });
}

/** fetch() rejects with a TypeError when no HTTP answer came (refused, DNS, reset). */
export function isNetworkFailure(err: unknown): boolean {
  if (err instanceof Error && err.name === "TimeoutError") return true; // no answer within the etag timeout
  return err instanceof TypeError && /fetch failed|terminated|network/i.test(err.message);
}

/** The Hub could not be reached at all: callers may fall back to the cache. */
export class HubUnreachableError extends HubError {}
