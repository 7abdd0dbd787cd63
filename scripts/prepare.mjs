#!/usr/bin/env node
// `npm run prepare`: builds dist/ from src/. npm runs it on `npm ci`,
// `npm install` and `npm pack`, and also on `npm install -g .` from a clone,
// where devDependencies are not installed: then the compiler is installed
// first (into this clone only, without touching package.json), so a global
// install from a clone works like one from the registry.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(root, "package.json"));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

function compiler() {
  try {
    return require.resolve("typescript/bin/tsc");
  } catch {
    return undefined;
  }
}

let tsc = compiler();
if (tsc === undefined) {
  console.error("prepare: installing the TypeScript compiler to build dist/ (devDependencies are not installed here)");
  // Not the outer command's settings (a global install passes --global and a prefix through npm_config_*).
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith("npm_config_")));
  execFileSync(npm, ["install", "--no-save", "--include=dev", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit", env });
  tsc = compiler();
  if (tsc === undefined) throw new Error("prepare: the TypeScript compiler could not be installed; run npm ci, then npm run build");
}
execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
