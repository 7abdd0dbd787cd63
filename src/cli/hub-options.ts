import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/**
 * The Hub settings of a command, from its flags and the environment, the way
 * Python's huggingface_hub reads them. Only the CLI reads the environment;
 * the library takes these values as options.
 */
export interface HubSettings {
  /** --token, else HF_TOKEN, else the file HF_TOKEN_PATH / $HF_HOME/token. */
  token?: string;
  /** HF_ENDPOINT (undefined: the library's default, https://huggingface.co). */
  hubUrl?: string;
  /** HF_HUB_CACHE, else $HF_HOME/hub. */
  cacheDir: string;
  /** HF_HUB_OFFLINE=1: cache only. */
  offline: boolean;
  /** HF_HUB_DOWNLOAD_TIMEOUT (seconds, as huggingface_hub reads it): a download request silent this long is retried. */
  downloadTimeoutMs?: number;
  /** HF_HUB_ETAG_TIMEOUT (seconds): how long a metadata call may take. */
  etagTimeoutMs?: number;
}

type Env = Record<string, string | undefined>;

const TRUTHY = new Set(["1", "ON", "YES", "TRUE"]);

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === "" ? undefined : trimmed;
}

function hfHome(env: Env, home: string): string {
  return nonEmpty(env.HF_HOME) ?? join(nonEmpty(env.XDG_CACHE_HOME) ?? join(home, ".cache"), "huggingface");
}

export function hubSettings(flags: { token?: string }, env: Env = process.env, home: string = homedir()): HubSettings {
  const hfHomeDir = hfHome(env, home);
  const tokenPath = nonEmpty(env.HF_TOKEN_PATH) ?? join(hfHomeDir, "token");
  const token = nonEmpty(flags.token) ?? nonEmpty(env.HF_TOKEN) ?? nonEmpty(env.HUGGING_FACE_HUB_TOKEN) ?? readTokenFile(tokenPath);
  const endpoint = nonEmpty(env.HF_ENDPOINT)?.replace(/\/+$/, "");
  return {
    ...(token !== undefined ? { token } : {}),
    ...(endpoint !== undefined ? { hubUrl: endpoint } : {}),
    cacheDir: nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE) ?? join(hfHomeDir, "hub"),
    offline: TRUTHY.has((env.HF_HUB_OFFLINE ?? "").trim().toUpperCase()),
    ...seconds("downloadTimeoutMs", env.HF_HUB_DOWNLOAD_TIMEOUT),
    ...seconds("etagTimeoutMs", env.HF_HUB_ETAG_TIMEOUT),
  };
}

/** A timeout variable in seconds (huggingface_hub accepts fractions) as milliseconds; unset or unusable: none. */
function seconds<K extends string>(key: K, value: string | undefined): { [P in K]?: number } {
  const text = nonEmpty(value);
  if (text === undefined || !/^[0-9]+(\.[0-9]+)?$/.test(text)) return {};
  const ms = Math.round(Number(text) * 1000);
  return ms >= 1 ? ({ [key]: ms } as { [P in K]?: number }) : {};
}

/** The token `huggingface-cli login` / `hf auth login` saved: one line. */
function readTokenFile(path: string): string | undefined {
  try {
    const text = readFileSync(path, "utf8");
    return text.length > 4096 ? undefined : nonEmpty(text.split(/\r?\n/)[0]);
  } catch {
    return undefined;
  }
}
