import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "./realdata.js";

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (`npm test` builds dist/ first) as a user would. */
export function runCli(args: string[], bin = "delta-weights"): CliRun {
  const result = spawnSync(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    env: { ...process.env, HF_HUB_OFFLINE: "1", NO_COLOR: "1" },
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
