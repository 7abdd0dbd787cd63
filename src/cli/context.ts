import type { SourceOptions } from "../api.js";
import { printable, terminalSafeJson } from "../text.js";
import type { HubSettings } from "./hub-options.js";

/** What every command receives besides its own arguments: the global flags and the environment, read once. */
export interface CliContext {
  json: boolean;
  quiet: boolean;
  /** Progress bars wanted: a TTY on stderr and no --no-progress / --quiet / --json. */
  progress: boolean;
  debug: boolean;
  threads?: number;
  /** --token and the HF_* variables, as huggingface_hub reads them. */
  hub: HubSettings;
  /** What every library call that takes a SRC needs to resolve repo ids. */
  sources: SourceOptions;
  /** Print one line (a summary) unless --quiet or --json; untrusted text in it is escaped. */
  log(line: string): void;
  /** Print the --json result document (with the notices that came up, under "events"). */
  printJson(value: unknown): void;
  /** A notice while working (a retried download, a corrupt cached file moved aside): one line on stderr unless --quiet or --json. */
  notice(line: string): void;
}

export interface GlobalFlags {
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
  debug?: boolean;
  threads?: number;
  token?: string;
  connections?: number;
}

export function makeContext(flags: GlobalFlags, hub: HubSettings, stdout: NodeJS.WritableStream = process.stdout): CliContext {
  const json = flags.json === true;
  const quiet = flags.quiet === true;
  const events: string[] = [];
  const notice = (line: string) => {
    events.push(line);
    if (!quiet && !json) process.stderr.write(`note: ${printable(line)}\n`);
  };
  return {
    json,
    quiet,
    progress: flags.progress !== false && !quiet && !json && process.stderr.isTTY === true,
    debug: flags.debug === true,
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    hub,
    sources: {
      ...(hub.token !== undefined ? { token: hub.token } : {}),
      ...(hub.hubUrl !== undefined ? { hubUrl: hub.hubUrl } : {}),
      cacheDir: hub.cacheDir,
      offline: hub.offline,
      transfer: {
        ...(flags.connections === undefined ? {} : { connections: flags.connections }),
        ...(hub.downloadTimeoutMs === undefined ? {} : { downloadTimeoutMs: hub.downloadTimeoutMs }),
        ...(hub.etagTimeoutMs === undefined ? {} : { etagTimeoutMs: hub.etagTimeoutMs }),
      },
      // Notices arrive on the progress stream; a command that draws bars passes its own (which prints them too).
      onProgress: (event) => { if (event.kind === "notice") notice(event.message); },
    },
    notice,
    log: (line) => { if (!quiet && !json) stdout.write(printable(line) + "\n"); },
    printJson: (value) => {
      const document = events.length > 0 && typeof value === "object" && value !== null ? { ...value, events } : value;
      stdout.write(terminalSafeJson(JSON.stringify(document, null, 2)) + "\n");
    },
  };
}
