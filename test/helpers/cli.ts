import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "./realdata.js";

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** The signal that ended it (SIGTERM when `timeout` ran out). */
  signal?: NodeJS.Signals | null;
}

export interface CliOptions {
  /** Environment on top of the test's (HF_HUB_OFFLINE=1 and NO_COLOR=1 unless overridden; undefined removes a variable). */
  env?: Record<string, string | undefined>;
  /** Milliseconds before the run is killed (a hang is then status null, signal SIGTERM). */
  timeout?: number;
  /** Run as this user id (only root may). */
  uid?: number;
  gid?: number;
  /** Working directory (default: the repository). */
  cwd?: string;
}

/** Runs the built CLI (`npm test` builds dist/ first) as a user would. */
export function runCli(args: string[], bin = "delta-weights", options: CliOptions = {}): CliRun {
  const env: Record<string, string | undefined> = { ...process.env, HF_HUB_OFFLINE: "1", NO_COLOR: "1", ...options.env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key];
  const result = spawnSync(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    encoding: "utf8",
    env,
    timeout: options.timeout ?? 60_000,
    ...(options.uid === undefined ? {} : { uid: options.uid }),
    ...(options.gid === undefined ? {} : { gid: options.gid }),
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, signal: result.signal };
}

/** One `error: ...` line on stderr and no stack trace; returns the line. */
export function oneErrorLine(run: CliRun): string {
  const lines = run.stderr.trimEnd().split("\n");
  if (lines.length !== 1 || !lines[0]!.startsWith("error: ") || /\n\s+at /.test(run.stderr)) {
    throw new Error(`expected one error line, got status ${run.status} (signal ${run.signal ?? "none"}), stderr:\n${run.stderr}`);
  }
  return lines[0]!;
}

/**
 * Runs the built CLI without blocking this process (a loopback Hub in the
 * test must go on answering), with no HF_* or HUGGING* variable of the
 * test's own environment: only `env`'s.
 */
export function runCliAsync(bin: string, args: string[], env: Record<string, string | undefined>, nodeArgs: string[] = []): Promise<CliRun> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("HF_") && !k.startsWith("HUGGING")) clean[k] = v;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [...nodeArgs, join(REPO_ROOT, "bin", bin), ...args], { cwd: REPO_ROOT, env: { ...clean, NO_COLOR: "1" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
    child.on("error", fail);
    child.on("close", (status, signal) => done({ status, stdout, stderr, signal }));
  });
}
