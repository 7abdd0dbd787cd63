/** What every command receives besides its own arguments: the global flags. */
export interface CliContext {
  json: boolean;
  quiet: boolean;
  /** Progress bars wanted: a TTY on stderr and no --no-progress / --quiet / --json. */
  progress: boolean;
  debug: boolean;
  threads?: number;
  token?: string;
  /** Print one line (a summary) unless --quiet or --json. */
  log(line: string): void;
  /** Print the --json result document. */
  printJson(value: unknown): void;
}
