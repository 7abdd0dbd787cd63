#!/usr/bin/env node
// `npm start`: the main job on the bundled sample. Applies samples/delta to
// samples/base in a fresh samples-out/target and prints the verified summary.
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = join("samples-out", "target");
rmSync(join(root, target), { recursive: true, force: true });
const args = ["--base", "samples/base", "--delta", "samples/delta", "--target", target];
console.log(`$ apply-delta ${args.join(" ")}`);
const run = spawnSync(process.execPath, [join(root, "bin", "apply-delta"), ...args], { cwd: root, stdio: "inherit" });
process.exit(run.status ?? 1);
