// The benches' timed child process, shared so every bench measures wall time and peak RSS the same way.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";

/** Whether peak RSS can be measured (GNU time, Debian package `time`). */
export const hasGnuTime = existsSync("/usr/bin/time");
let runs = 0;

/** Runs a command; returns wall seconds, peak RSS (bytes) of the child where GNU time is there, and its stdout. */
export function runTimed(command, commandArgs, label = command) {
  let argv = [command, ...commandArgs];
  const statsFile = path.join(tmpdir(), `bench-time-${process.pid}-${runs++}.txt`);
  if (hasGnuTime) argv = ["/usr/bin/time", "-v", "-o", statsFile, ...argv];
  const start = performance.now();
  const result = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - start) / 1000;
  let rss;
  if (hasGnuTime && existsSync(statsFile)) {
    const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(readFileSync(statsFile, "utf8"));
    if (match) rss = Number(match[1]) * 1024;
    rmSync(statsFile, { force: true });
  }
  if (result.status !== 0) throw new Error(`${label} failed (exit ${result.status}): ${result.stderr.toString().trim().split("\n").slice(-3).join(" | ")}`);
  return { seconds, rss, stdout: result.stdout.toString() };
}
