#!/usr/bin/env node
// Fails when an import in src/ runs up a layer or closes a cycle.
//
// The layers, bottom to top; a module may import its own layer and those
// below. This list is the architecture, written once: README's "How the code
// is laid out" explains it. (A small script rather than dependency-cruiser:
// the rule is one list, and a tool would add a configuration language and
// forty dependencies to say the same.)
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const LAYERS = [
  ["errors.ts", "limits.ts", "dtypes.ts", "progress.ts", "json.ts", "text.ts", "tensors.ts", "relative-path.ts", "version.ts"],
  ["kernels/", "io/"],
  ["safetensors/", "pytorch/", "easylm/", "gguf/", "tokenizer/"],
  ["formats/"],
  ["model/"],
  // hub/transport/ moves bytes (ranges, partial blobs, retries, the connection
  // budget, blob locks) for any host; hub/'s protocols (hub/huggingface/) and
  // its host-neutral parts (resolve-source, push, the backend interface) sit above it.
  // delta/ is a house of its own: the convention-blind engine, the seam a
  // convention plugs into, the wings (one per family of conventions), then
  // the door (apply-delta, the registry, output retargeting) over them all.
  ["hash/", "runtime.ts", "hub/transport/", "delta/engine/"],
  ["delta/conventions/types.ts", "delta/conventions/release-evidence.ts"],
  ["delta/own/", "delta/byte-codecs/", "delta/additive/", "delta/adapters/", "delta/easylm/"],
  ["delta/", "hub/"],
  ["api.ts"],
  ["cli/", "index.ts"],
];

// The wings of delta/ stand side by side: none imports another, except the
// shared pieces named here (a LoRA merge records what it wrote in delta.json's
// manifest format).
const WINGS = ["delta/own/", "delta/byte-codecs/", "delta/additive/", "delta/adapters/", "delta/easylm/"];
const SHARED_ACROSS_WINGS = ["delta/own/manifest.ts"];

// Folders that never import each other, whichever layer they sit in. delta/
// and hub/ are siblings rather than hub below delta: delta reads local paths
// and FileSets (io/) and needs no host; the hub uploads and downloads what it
// is given and knows no delta format. api.ts, the composition root, joins them
// (it decides what is a delta and builds the model card's data).
const APART = [["delta/", "hub/"]];

const root = resolve(dirname(new URL(import.meta.url).pathname), "..");
const src = join(root, "src");

function layerOf(file) {
  const rel = relative(src, file).split("\\").join("/");
  const index = LAYERS.findIndex((layer) => layer.some((entry) => (entry.endsWith("/") ? rel.startsWith(entry) : rel === entry)));
  if (index < 0) throw new Error(`src/${rel} is in no layer: add it to scripts/check-layers.mjs`);
  return index;
}

function wingOf(file) {
  const rel = relative(src, file).split("\\").join("/");
  return WINGS.find((wing) => rel.startsWith(wing));
}

function under(file, folder) {
  return relative(src, file).split("\\").join("/").startsWith(folder);
}

function sources(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith(".ts") && !path.endsWith(".d.ts") ? [path] : [];
  });
}

// Static imports and re-exports, type-only ones included (they still couple
// the layers), and dynamic import("...").
const IMPORT = /(?:^|\s)(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

const files = sources(src);
const graph = new Map();
const problems = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  const targets = [];
  for (const match of text.matchAll(IMPORT)) {
    const spec = match[1] ?? match[2];
    if (!spec.startsWith(".")) continue;
    const target = resolve(dirname(file), spec.replace(/\.js$/, ".ts"));
    targets.push(target);
    if (layerOf(target) > layerOf(file)) {
      problems.push(`src/${relative(src, file)} imports ${spec}, a higher layer`);
    }
    const fromWing = wingOf(file);
    const toWing = wingOf(target);
    if (fromWing !== undefined && toWing !== undefined && fromWing !== toWing && !SHARED_ACROSS_WINGS.includes(relative(src, target).split("\\").join("/"))) {
      problems.push(`src/${relative(src, file)} imports ${spec}: the ${fromWing} wing reaches into the ${toWing} wing (share it through delta/engine/ or delta/conventions/, or name it in SHARED_ACROSS_WINGS)`);
    }
    const apart = APART.find(([a, b]) => (under(file, a) && under(target, b)) || (under(file, b) && under(target, a)));
    if (apart !== undefined) problems.push(`src/${relative(src, file)} imports ${spec}: ${apart[0]} and ${apart[1]} never import each other`);
  }
  graph.set(file, targets);
}

// Cycles: a depth-first search that reports each back edge's loop once.
const state = new Map();
const stack = [];
function visit(file) {
  state.set(file, "open");
  stack.push(file);
  for (const next of graph.get(file) ?? []) {
    if (state.get(next) === "open") {
      const loop = stack.slice(stack.indexOf(next)).concat(next).map((f) => relative(src, f));
      problems.push(`import cycle: ${loop.join(" -> ")}`);
    } else if (!state.has(next) && graph.has(next)) {
      visit(next);
    }
  }
  stack.pop();
  state.set(file, "done");
}
for (const file of files) if (!state.has(file)) visit(file);

if (problems.length > 0) {
  for (const p of problems) console.error(p);
  process.exit(1);
}
console.log(`layers: ${files.length} modules, no upward import, no cycle`);
