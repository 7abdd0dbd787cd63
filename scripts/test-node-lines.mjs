#!/usr/bin/env node
// `npm run test:node-lines [-- 22 24 26]`: the test suite under each current
// Node.js LTS line, one after another. Each line's newest release comes from
// the npm registry's `node` package (the official binaries, installed into a
// scratch prefix, not onto the machine); dist/ is built once, then vitest runs
// under that Node with it first on PATH, so every CLI a test spawns
// (process.execPath) runs on it too. Prints per line: the Node version, tests
// passed / failed / skipped, and the wall time; exits 1 if any line failed.
//
// Not part of `npm test`: CI runs that once on its own Node. The scratch
// prefixes stay between runs (NODE_LINES_DIR, default: the OS temp folder).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The LTS lines users run (Node 20 reached its end of life on 2026-04-30). */
const DEFAULT_LINES = ["22", "24", "26"];

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const scratch = process.env.NODE_LINES_DIR ?? join(tmpdir(), "delta-weights-node-lines");
const lines = process.argv.slice(2).filter((arg) => arg !== "--");
for (const line of lines) {
  if (!/^[1-9][0-9]*$/.test(line)) {
    console.error(`usage: npm run test:node-lines [-- LINE ...]   (LINE: a major version such as 24; got ${line})`);
    process.exit(2);
  }
}

/** The newest `node@LINE` on the registry, installed under scratch/LINE; the path of its binary. */
function installNode(line) {
  const prefix = join(scratch, line);
  mkdirSync(prefix, { recursive: true });
  if (!existsSync(join(prefix, "package.json"))) writeFileSync(join(prefix, "package.json"), '{ "private": true }\n');
  execFileSync(npm, ["install", "--no-audit", "--no-fund", "--loglevel=error", `node@${line}`], { cwd: prefix, stdio: ["ignore", "ignore", "inherit"] });
  const binary = join(prefix, "node_modules", ".bin", process.platform === "win32" ? "node.cmd" : "node");
  // The .bin entry is the package's launcher; the real binary is what it reports as its own path.
  return execFileSync(binary, ["-p", "process.execPath"], { encoding: "utf8" }).trim();
}

function runSuite(node) {
  const report = join(scratch, `vitest-${process.pid}.json`);
  rmSync(report, { force: true });
  const started = performance.now();
  const run = spawnSync(node, [join(root, "node_modules", "vitest", "vitest.mjs"), "run", "--reporter=dot", "--reporter=json", `--outputFile.json=${report}`], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, PATH: `${dirname(node)}${delimiter}${process.env.PATH ?? ""}` },
  });
  const seconds = (performance.now() - started) / 1000;
  const counts = existsSync(report) ? JSON.parse(readFileSync(report, "utf8")) : undefined;
  rmSync(report, { force: true });
  return {
    ok: run.status === 0,
    seconds,
    passed: counts?.numPassedTests,
    failed: counts?.numFailedTests,
    skipped: counts === undefined ? undefined : counts.numPendingTests + counts.numTodoTests,
  };
}

console.log("building dist/ once (the CLI the tests spawn runs it)");
execFileSync(npm, ["run", "--silent", "build"], { cwd: root, stdio: "inherit" });
const results = [];
for (const line of lines.length > 0 ? lines : DEFAULT_LINES) {
  const node = installNode(line);
  const version = execFileSync(node, ["--version"], { encoding: "utf8" }).trim();
  console.log(`\n== Node ${version} (${node})`);
  results.push({ version, ...runSuite(node) });
}
console.log("\nNode      result  passed  failed  skipped  wall time");
for (const r of results) {
  const count = (n) => String(n ?? "?").padStart(6);
  console.log(`${r.version.padEnd(9)} ${(r.ok ? "ok" : "FAILED").padEnd(6)}  ${count(r.passed)}  ${count(r.failed)}  ${count(r.skipped).padStart(7)}  ${r.seconds.toFixed(0).padStart(7)} s`);
}
process.exit(results.every((r) => r.ok) ? 0 : 1);
