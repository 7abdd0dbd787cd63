#!/usr/bin/env node
/**
 * A mutation fuzzer for the built CLI (not part of `npm test`: it runs for
 * minutes). It takes our valid fixtures (a safetensors model, PyTorch
 * checkpoints and their pickles, index files, a delta's delta.json and
 * fix-ups, a FastChat-style .bin delta), mutates one file (bit flips,
 * interesting bytes, truncations, extensions, splices, size and offset
 * fields, hostile JSON names and numbers), runs the command that reads it,
 * and checks the promise every input gets:
 *
 *   - exit 0 (valid) or 1 with exactly one `error: ...` line, no stack trace;
 *   - done within 10 s;
 *   - peak RSS under 256 MB (measured by /usr/bin/time, when present);
 *   - nothing written outside the case's output directory, and nothing read
 *     from outside its input (a canary file beside each case never reaches
 *     an output).
 *
 *   npm run build && node scripts/fuzz.mjs [--cases 3000] [--seed 1] [--jobs 2] [--keep DIR]
 *
 * Failing inputs are kept (under --keep, default $TMPDIR/delta-weights-fuzz-failures) with the
 * command that failed, so each can be replayed.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const TIMEOUT_MS = 10_000;
const MAX_RSS_KB = 256 * 1024;
const CANARY = "fuzz-canary-7f3a9c";
const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};
const CASES = Number(option("cases", "3000"));
const SEED = Number(option("seed", "1"));
const JOBS = Number(option("jobs", "2"));
const KEEP = resolve(option("keep", join(tmpdir(), "delta-weights-fuzz-failures")));

if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
  console.error("fuzz: build first (npm run build)");
  process.exit(2);
}

/** Deterministic xorshift32, its seed mixed first (nearby seeds would start alike). */
function rng(seed) {
  let x = mix32(seed) || 1;
  const next = () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (list) => list[Math.floor(next() * list.length)],
  };
}

/** murmur3's 32-bit finalizer. */
function mix32(value) {
  let h = value >>> 0;
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

// ---------------------------------------------------------------------------
// Mutations

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x2e, 0x2f];
const INTERESTING_U64 = [0n, 1n, 7n, 8n, 0xffn, 0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

function bitFlips(bytes, r) {
  const out = Uint8Array.from(bytes);
  const count = 1 + r.int(8);
  for (let i = 0; i < count && out.length > 0; i++) {
    const at = r.int(out.length);
    out[at] ^= 1 << r.int(8);
  }
  return out;
}

function interestingBytes(bytes, r) {
  const out = Uint8Array.from(bytes);
  const count = 1 + r.int(4);
  for (let i = 0; i < count && out.length > 0; i++) out[r.int(out.length)] = r.pick(INTERESTING_BYTES);
  return out;
}

function truncate(bytes, r) {
  return bytes.subarray(0, r.int(bytes.length));
}

function extend(bytes, r) {
  const extra = new Uint8Array(1 + r.int(4096));
  for (let i = 0; i < extra.length; i++) extra[i] = r.int(256);
  return Buffer.concat([bytes, extra]);
}

function splice(bytes, r) {
  if (bytes.length < 2) return bytes;
  const from = r.int(bytes.length);
  const length = 1 + r.int(Math.min(4096, bytes.length - from));
  const to = r.int(bytes.length);
  const chunk = bytes.subarray(from, from + length);
  return r.next() < 0.5
    ? Buffer.concat([bytes.subarray(0, to), chunk, bytes.subarray(to)])
    : Buffer.concat([bytes.subarray(0, to), chunk, bytes.subarray(Math.min(bytes.length, to + length))]);
}

/** Overwrites an 8-, 4- or 2-byte little-endian field with an interesting value: at `at`, or at a random aligned offset. */
function sizeField(bytes, r, at) {
  const out = Uint8Array.from(bytes);
  const width = r.pick([8, 4, 2]);
  const position = at ?? (r.int(Math.max(1, Math.floor(out.length / width))) * width);
  if (position + width > out.length) return out;
  const value = r.pick(INTERESTING_U64) + BigInt(r.pick([0, 0, -1, 1]));
  const masked = BigInt.asUintN(width * 8, value);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  if (width === 8) view.setBigUint64(position, masked, true);
  else if (width === 4) view.setUint32(position, Number(masked), true);
  else view.setUint16(position, Number(masked & 0xffffn), true);
  return out;
}

/** The zip's size and offset fields (local headers, central directory, end records): where a reader's arithmetic lives. */
function zipField(bytes, r) {
  const signatures = [0x04034b50, 0x02014b50, 0x06054b50, 0x06064b50, 0x07064b50];
  const offsets = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i + 4 <= bytes.length; i++) if (signatures.includes(view.getUint32(i, true))) offsets.push(i);
  if (offsets.length === 0) return sizeField(bytes, r);
  const record = r.pick(offsets);
  return sizeField(bytes, r, record + 4 + 2 * r.int(22));
}

/** The pickle (data.pkl) inside a torch zip: its bytes mutated in place (stored, and our reader checks no CRC). */
function pickleBytes(bytes, r) {
  const text = Buffer.from(bytes).toString("latin1");
  const name = text.indexOf("data.pkl");
  if (name === -1) return bitFlips(bytes, r);
  // the local header's name is followed by its extra field, then the data: flip within the next few KB
  const start = name + 8;
  const out = Uint8Array.from(bytes);
  const count = 1 + r.int(6);
  for (let i = 0; i < count; i++) {
    const at = start + r.int(Math.min(2048, out.length - start));
    out[at] = r.next() < 0.5 ? out[at] ^ (1 << r.int(8)) : r.int(256);
  }
  return out;
}

const HOSTILE_STRINGS = [
  "../secret.json", "../../secret.json", "/etc/passwd", "file:///etc/passwd", "..\\secret.json", "C:\\x",
  "__proto__", "constructor", "toString", "valueOf", "hasOwnProperty", "",
  "a\u001b[2Jb", "a\\u0000b", "x".repeat(100_000), "\\ud800", "model.safetensors", "config.json", "delta-fixups.safetensors",
];
const HOSTILE_NUMBERS = ["-1", "0", "1.5", "1e308", "9007199254740993", "18446744073709551616", "-0", "1e3", "4294967296", "99999999999"];

/** JSON text mutations: a string or a number replaced, a key duplicated, a value nested deep, a range deleted. */
function jsonMutation(bytes, r) {
  let text = Buffer.from(bytes).toString("utf8");
  const kind = r.int(6);
  if (kind === 0) {
    const strings = [...text.matchAll(/"(?:[^"\\]|\\.)*"/g)];
    if (strings.length > 0) {
      const m = r.pick(strings);
      text = text.slice(0, m.index) + JSON.stringify(r.pick(HOSTILE_STRINGS)).replaceAll("\\\\u", "\\u") + text.slice(m.index + m[0].length);
    }
  } else if (kind === 1) {
    const numbers = [...text.matchAll(/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g)];
    if (numbers.length > 0) {
      const m = r.pick(numbers);
      text = text.slice(0, m.index) + r.pick(HOSTILE_NUMBERS) + text.slice(m.index + m[0].length);
    }
  } else if (kind === 2) {
    const pairs = [...text.matchAll(/"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|-?\d+|\{\}|\[\])/g)];
    if (pairs.length > 0) {
      const m = r.pick(pairs);
      text = text.slice(0, m.index) + m[0] + "," + m[0] + text.slice(m.index + m[0].length);
    }
  } else if (kind === 3) {
    const at = r.int(text.length);
    const depth = r.pick([10, 70, 100_000]);
    text = text.slice(0, at) + "[".repeat(depth) + "]".repeat(depth) + text.slice(at);
  } else if (kind === 4) {
    const at = r.int(text.length);
    text = text.slice(0, at) + text.slice(at + 1 + r.int(64));
  } else {
    return bitFlips(bytes, r);
  }
  return new Uint8Array(Buffer.from(text, "utf8"));
}

/** A safetensors file whose header text gets a JSON mutation (hostile names and numbers, duplicate keys), its length prefix kept consistent. */
function headerJson(bytes, r) {
  if (bytes.length < 8) return bitFlips(bytes, r);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = Number(view.getBigUint64(0, true));
  if (length > bytes.length - 8) return bitFlips(bytes, r);
  const text = jsonMutation(bytes.subarray(8, 8 + length), r);
  const padded = Buffer.concat([text, new Uint8Array((8 - (text.length % 8)) % 8).fill(0x20)]);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded.length), true);
  return Buffer.concat([prefix, padded, bytes.subarray(8 + length)]);
}

const sizeFieldAnywhere = (b, r) => sizeField(b, r);
const headerLengthField = (b, r) => sizeField(b, r, 0);
const BINARY = [bitFlips, interestingBytes, truncate, extend, splice, sizeFieldAnywhere, headerLengthField];
const SAFETENSORS = [...BINARY, headerJson, headerJson, headerJson];

// ---------------------------------------------------------------------------
// Targets: a fixture directory, the file of it to mutate, how, and the command that reads it

const S = join(ROOT, "samples");
const F = join(ROOT, "test", "fixtures");

const TARGETS = [
  { name: "safetensors (inspect)", dir: join(S, "base"), file: "model.safetensors", mutate: SAFETENSORS, command: (c) => ["delta-weights", "inspect", join(c.input, "model.safetensors")] },
  { name: "safetensors base (apply)", dir: join(S, "base"), file: "model.safetensors", mutate: SAFETENSORS, command: (c) => ["apply-delta", "--base", c.input, "--delta", join(S, "delta"), "--target", c.out] },
  { name: "safetensors (convert)", dir: join(S, "base"), file: "model.safetensors", mutate: SAFETENSORS, command: (c) => ["delta-weights", "convert", c.input, c.out] },
  { name: "pytorch zip (inspect)", dir: join(F, "pytorch"), file: "llama-state-dict.bin", only: ["llama-state-dict.bin"], mutate: [...BINARY, zipField, zipField], command: (c) => ["delta-weights", "inspect", join(c.input, "llama-state-dict.bin")] },
  { name: "pytorch zip64 (convert)", dir: join(F, "pytorch"), file: "zip64.bin", only: ["zip64.bin"], mutate: [...BINARY, zipField], command: (c) => ["delta-weights", "convert", join(c.input, "zip64.bin"), join(c.out, "model.safetensors")] },
  { name: "pytorch views (inspect)", dir: join(F, "pytorch"), file: "views.bin", only: ["views.bin"], mutate: [pickleBytes, zipField], command: (c) => ["delta-weights", "inspect", join(c.input, "views.bin")] },
  { name: "pickle (inspect)", dir: join(F, "pytorch"), file: "llama-state-dict.bin", only: ["llama-state-dict.bin"], mutate: [pickleBytes], command: (c) => ["delta-weights", "inspect", join(c.input, "llama-state-dict.bin")] },
  { name: "safetensors index (inspect)", dir: join(F, "legacy", "f16", "base-safetensors"), file: "model.safetensors.index.json", mutate: [jsonMutation, jsonMutation, truncate, bitFlips], command: (c) => ["delta-weights", "inspect", c.input] },
  { name: "pytorch index (inspect)", dir: join(F, "legacy", "f16", "base-bin"), file: "pytorch_model.bin.index.json", mutate: [jsonMutation, jsonMutation, truncate], command: (c) => ["delta-weights", "inspect", c.input] },
  { name: "delta.json (apply)", dir: join(S, "delta"), file: "delta.json", mutate: [jsonMutation, jsonMutation, jsonMutation, truncate, bitFlips, splice], command: (c) => ["apply-delta", "--base", join(S, "base"), "--delta", c.input, "--target", c.out] },
  { name: "delta.json (verify)", dir: join(S, "delta"), file: "delta.json", mutate: [jsonMutation, bitFlips], command: (c) => ["delta-weights", "verify", c.recovered, "--manifest", c.input] },
  { name: "fix-ups (apply)", dir: join(S, "delta"), file: "delta-fixups.safetensors", mutate: SAFETENSORS, fixManifest: true, command: (c) => ["apply-delta", "--base", join(S, "base"), "--delta", c.input, "--target", c.out] },
  { name: "fastchat .bin delta (apply)", dir: join(F, "legacy", "f16", "delta-bin"), file: "pytorch_model-00002-of-00003.bin", mutate: [...BINARY, zipField, pickleBytes], command: (c) => ["apply-delta", "--base", join(F, "legacy", "f16", "base-bin"), "--delta", c.input, "--target", c.out] },
];

// ---------------------------------------------------------------------------

function runCase(argv, cwd) {
  return new Promise((resolveRun) => {
    const rssFile = join(cwd, "rss");
    const [bin, ...rest] = argv;
    const command = TIME === undefined
      ? [process.execPath, join(ROOT, "bin", bin), ...rest]
      : [TIME, "-f", "%M", "-o", rssFile, process.execPath, join(ROOT, "bin", bin), ...rest];
    const started = Date.now();
    const child = spawn(command[0], command.slice(1), { cwd, env: { ...process.env, HF_HUB_OFFLINE: "1", NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b) => { if (stdout.length < 1 << 20) stdout += b; });
    child.stderr.on("data", (b) => { if (stderr.length < 1 << 20) stderr += b; });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, TIMEOUT_MS);
    child.on("close", async (status, signal) => {
      clearTimeout(timer);
      let rssKb;
      if (TIME !== undefined) rssKb = Number((await readFile(rssFile, "utf8").catch(() => "")).trim().split("\n").pop());
      resolveRun({ status, signal, stdout, stderr, timedOut, ms: Date.now() - started, rssKb });
    });
  });
}

/** Every file under `dir` with size and mtime. */
async function snapshot(dir, skip = () => false) {
  const out = new Map();
  const walk = async (d) => {
    for (const name of await readdir(d).catch(() => [])) {
      const path = join(d, name);
      if (skip(path)) continue;
      const info = await stat(path).catch(() => undefined);
      if (info === undefined) continue;
      if (info.isDirectory()) await walk(path);
      else out.set(path, `${info.size}:${info.mtimeMs}`);
    }
  };
  await walk(dir);
  return out;
}

async function containsCanary(dir) {
  for (const [path] of await snapshot(dir)) {
    if ((await readFile(path).catch(() => Buffer.alloc(0))).includes(CANARY)) return path;
  }
  return undefined;
}

function problems(result) {
  const found = [];
  if (result.timedOut) found.push(`did not finish within ${TIMEOUT_MS / 1000} s`);
  else if (result.status !== 0 && result.status !== 1) found.push(`exit ${result.status}${result.signal ? ` (signal ${result.signal})` : ""}`);
  if (result.status === 1) {
    const lines = result.stderr.trimEnd().split("\n");
    if (lines.length !== 1 || !lines[0].startsWith("error: ")) found.push(`stderr is not one error line: ${JSON.stringify(result.stderr.slice(0, 400))}`);
    if (/\n\s+at /.test(result.stderr) || /unexpected failure/.test(result.stderr)) found.push(`an unexpected failure: ${JSON.stringify(result.stderr.slice(0, 400))}`);
  }
  if (result.rssKb !== undefined && result.rssKb > MAX_RSS_KB) found.push(`peak RSS ${Math.round(result.rssKb / 1024)} MB`);
  return found;
}

async function main() {
  const root = await mkdtemp(join(tmpdir(), "delta-weights-fuzz-"));
  // The canary beside every case: a mutated name such as "../secret.json" must never bring it into an output.
  await writeFile(join(root, "secret.json"), `{"secret": "${CANARY}"}\n`);
  await writeFile(join(root, "config.json"), `{"secret": "${CANARY}"}\n`);
  const pristine = await snapshot(ROOT, (p) => /\/(node_modules|dist|\.git)$/.test(p));
  // The samples' recovered target, for verify to check against mutated manifests.
  const recovered = join(root, "recovered");
  const made = await runCase(["apply-delta", "--base", join(S, "base"), "--delta", join(S, "delta"), "--target", recovered, "--quiet"], root);
  if (made.status !== 0) throw new Error(`fuzz: could not apply the samples: ${made.stderr}`);
  const stats = { cases: 0, exit0: 0, exit1: 0, failures: 0, maxRssKb: 0, maxMs: 0, byTarget: {} };
  const failures = [];
  let next = 0;

  const one = async (index) => {
    const target = TARGETS[index % TARGETS.length];
    const caseRng = rng(mix32(SEED) ^ Math.imul(index + 1, 0x9e3779b1));
    const caseDir = join(root, `case-${index}`);
    const input = join(caseDir, "input");
    const out = join(caseDir, "out");
    await mkdir(caseDir, { recursive: true });
    await cp(target.dir, input, { recursive: true, filter: (src) => target.only === undefined || src === target.dir || target.only.some((f) => src.endsWith(f)) });
    const original = await readFile(join(input, target.file));
    const mutator = caseRng.pick(target.mutate);
    let mutated = mutator(original, caseRng);
    if (caseRng.next() < 0.2) mutated = caseRng.pick(target.mutate)(mutated, caseRng); // sometimes two at once
    await writeFile(join(input, target.file), mutated);
    if (target.fixManifest && caseRng.next() < 0.5) {
      // the manifest agreeing with the mutated file's size and hash, so its parser is reached
      const manifestPath = join(input, "delta.json");
      const manifest = JSON.parse(await readFile(manifestPath, "utf8"));
      manifest.delta.files[target.file] = { size: mutated.length, sha256: createHash("sha256").update(mutated).digest("hex") };
      await writeFile(manifestPath, JSON.stringify(manifest, null, 1));
    }
    const argv = target.command({ input, out, recovered });
    const before = await snapshot(root, (p) => p.startsWith(caseDir));
    const result = await runCase(argv, caseDir);
    const found = problems(result);
    const after = await snapshot(root, (p) => p.startsWith(caseDir) || /\/case-\d+$/.test(p));
    for (const [path, state] of before) if (!/\/case-\d+\//.test(path) && after.get(path) !== state) found.push(`changed outside its directory: ${path}`);
    const leaked = await containsCanary(out);
    if (leaked !== undefined) found.push(`read from outside its input: ${leaked} holds the canary`);

    if (process.env.FUZZ_VERBOSE === "1") console.log(`case ${index} ${target.name} ${mutator.name}: exit ${result.status} ${result.stderr.trim().slice(0, 200)}`);
    stats.cases++;
    if (result.status === 0) stats.exit0++;
    if (result.status === 1) stats.exit1++;
    stats.maxRssKb = Math.max(stats.maxRssKb, result.rssKb ?? 0);
    stats.maxMs = Math.max(stats.maxMs, result.ms);
    const t = (stats.byTarget[target.name] ??= { cases: 0, exit0: 0, exit1: 0, failures: 0, maxRssKb: 0 });
    t.cases++;
    if (result.status === 0) t.exit0++;
    if (result.status === 1) t.exit1++;
    t.maxRssKb = Math.max(t.maxRssKb, result.rssKb ?? 0);
    if (found.length > 0) {
      stats.failures++;
      t.failures++;
      const kept = join(KEEP, `case-${SEED}-${index}`);
      await mkdir(KEEP, { recursive: true });
      await cp(input, join(kept, "input"), { recursive: true });
      await writeFile(join(kept, "failure.json"), JSON.stringify({ target: target.name, mutator: mutator.name, argv, problems: found, stderr: result.stderr.slice(0, 4000), status: result.status, rssKb: result.rssKb, ms: result.ms }, null, 2));
      failures.push({ index, target: target.name, found });
      console.log(`FAIL case ${index} (${target.name}, ${mutator.name}): ${found.join("; ")}`);
    }
    await rm(caseDir, { recursive: true, force: true });
    if (stats.cases % 250 === 0) console.log(`${stats.cases}/${CASES} cases, ${stats.failures} failing, max RSS ${Math.round(stats.maxRssKb / 1024)} MB, slowest ${stats.maxMs} ms`);
  };

  const worker = async () => {
    while (next < CASES) await one(next++);
  };
  await Promise.all(Array.from({ length: JOBS }, worker));

  const changed = [];
  const now = await snapshot(ROOT, (p) => /\/(node_modules|dist|\.git)$/.test(p));
  for (const [path, state] of pristine) if (now.get(path) !== state) changed.push(path);
  if (changed.length > 0) console.log(`FAIL: the repository's files changed: ${changed.slice(0, 5).join(", ")}`);
  await rm(root, { recursive: true, force: true });

  console.log(`\n${stats.cases} cases (seed ${SEED}): ${stats.exit0} exit 0, ${stats.exit1} exit 1, ${stats.failures} failing; max RSS ${Math.round(stats.maxRssKb / 1024)} MB${TIME === undefined ? " (not measured: no /usr/bin/time)" : ""}, slowest ${stats.maxMs} ms`);
  for (const [name, t] of Object.entries(stats.byTarget)) {
    console.log(`  ${name.padEnd(30)} ${String(t.cases).padStart(5)} cases  ${String(t.exit0).padStart(5)} exit 0  ${String(t.exit1).padStart(5)} exit 1  ${String(t.failures).padStart(3)} failing  max RSS ${Math.round(t.maxRssKb / 1024)} MB`);
  }
  process.exitCode = failures.length > 0 || changed.length > 0 ? 1 : 0;
}

await main();
