#!/usr/bin/env node
/**
 * Peak memory on the largest inputs our limits let through, and on the
 * hostile ones they stop (not part of `npm test`: RSS is measured, not
 * asserted, as bench.mjs does for speed). Each case runs the built CLI
 * under /usr/bin/time and prints its exit status, peak RSS and first line.
 * Every case must stay under 256 MB and exit 0 or 1 with one line.
 *
 *   npm run build && node scripts/hostile-memory.mjs
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SAMPLES = join(ROOT, "samples");
const SHA = "0".repeat(64);
const LIMIT_MB = 256;

if (!existsSync("/usr/bin/time")) {
  console.error("hostile-memory: needs /usr/bin/time (GNU time) to measure peak RSS");
  process.exit(2);
}

/** A safetensors file of this exact header text (padded to 8) and `dataBytes` zero bytes. */
async function writeSafetensors(path, headerText, dataBytes) {
  let header = Buffer.from(headerText, "utf8");
  header = Buffer.concat([header, Buffer.alloc((8 - (header.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, Buffer.concat([prefix, header, Buffer.alloc(dataBytes)]));
}

function manifest({ baseTensors = {}, targetTensors = {}, headers = {}, files = {}, dropped = [] }) {
  return {
    format: "delta-weights/1", codec: "add", tool: "hostile",
    base: { source: "b", tensors: baseTensors, dropped },
    target: { source: "t", files, tensors: targetTensors, headers },
    delta: { files, weights: Object.keys(headers) },
  };
}

/** Writes `value` as JSON (indented as make-delta writes delta.json, or compact), non-ASCII as \u escapes; returns its size. */
async function writeJson(path, value, indent = 0) {
  const text = JSON.stringify(value, null, indent).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  return Buffer.byteLength(text);
}

function run(bin, args) {
  const result = spawnSync("/usr/bin/time", ["-f", "%M", process.execPath, join(ROOT, "bin", bin), ...args], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" }, maxBuffer: 1 << 26 });
  // GNU time adds "Command exited with non-zero status N" before the figure.
  const lines = result.stderr.trimEnd().split("\n").filter((l) => !l.startsWith("Command exited with non-zero status"));
  const rssKb = Number(lines.pop());
  return { status: result.status, rssMb: Math.round(rssKb / 1024), message: lines.join("\n") };
}

const rows = [];
async function measure(name, bin, args) {
  const r = run(bin, args);
  const oneLine = r.status === 0 || (r.message.split("\n").length === 1 && r.message.startsWith("error: "));
  const ok = (r.status === 0 || r.status === 1) && oneLine && r.rssMb < LIMIT_MB;
  rows.push({ name, ...r, ok });
  console.log(`${ok ? "ok  " : "FAIL"} ${String(r.rssMb).padStart(4)} MB  exit ${r.status}  ${name}${r.status === 0 ? "" : `: ${r.message.split("\n")[0].slice(0, 140)}`}`);
}

const work = await mkdtemp(join(tmpdir(), "delta-weights-memory-"));
try {
  // delta.json: 55 MB (refused by size), and the densest and longest manifests under the cap
  const tensors = (n, withFile) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`model.layers.${i}.weight`, { dtype: "F16", shape: [4096, 4096], sha256: SHA, ...(withFile ? { file: "m" } : {}) }]));
  const d55 = await writeJson(join(work, "d55", "delta.json"), manifest({ baseTensors: tensors(135_000), targetTensors: tensors(135_000, true), headers: { m: "{}" }, files: { m: { size: 1, sha256: SHA } } }), 1);
  await measure(`delta.json of ${(d55 / 1e6).toFixed(1)} MB (270,000 entries)`, "apply-delta", ["--base", join(SAMPLES, "base"), "--delta", join(work, "d55"), "--target", join(work, "o1")]);
  const short = (n, withFile) => Object.fromEntries(Array.from({ length: n }, (_, i) => [i.toString(36), { dtype: "F16", shape: [4096, 4096], sha256: SHA, ...(withFile ? { file: "m" } : {}) }]));
  const bytes = await writeJson(join(work, "d16", "delta.json"), manifest({ baseTensors: short(65_000), targetTensors: short(65_000, true), headers: { m: "{}" }, files: { m: { size: 1, sha256: SHA } } }));
  await measure(`delta.json of ${(bytes / 1e6).toFixed(1)} MB, 130,000 entries`, "apply-delta", ["--base", join(SAMPLES, "base"), "--delta", join(work, "d16"), "--target", join(work, "o2")]);
  const escBytes = await writeJson(join(work, "desc", "delta.json"), manifest({ headers: { m: "\u00e9".repeat(2_750_000) }, files: { m: { size: 1, sha256: SHA } } }));
  await measure(`delta.json of ${(escBytes / 1e6).toFixed(1)} MB, one header of \\u00e9 escapes`, "apply-delta", ["--base", join(SAMPLES, "base"), "--delta", join(work, "desc"), "--target", join(work, "o3")]);
  await writeJson(join(work, "ddrop", "delta.json"), manifest({ dropped: Array.from({ length: 2_400_000 }, (_, i) => i.toString(36)) }));
  await measure("delta.json listing 2.4 million dropped names", "apply-delta", ["--base", join(SAMPLES, "base"), "--delta", join(work, "ddrop"), "--target", join(work, "o4")]);

  // indexes
  const index = (n, name, file = "model-00001-of-00002.safetensors") => ({ metadata: { total_size: 1 }, weight_map: Object.fromEntries(Array.from({ length: n }, (_, i) => [name(i), file])) });
  const i58 = await writeJson(join(work, "i58", "model.safetensors.index.json"), index(131_000, (i) => `model.layers.${i}.${"x".repeat(380)}`), 2);
  await measure(`index of ${(i58 / 1e6).toFixed(1)} MB`, "delta-weights", ["inspect", join(work, "i58")]);
  const i31 = await writeJson(join(work, "i31", "model.safetensors.index.json"), index(120_000, (i) => `model.layers.${i}.${"x".repeat(200)}`));
  await measure(`index of ${(i31 / 1e6).toFixed(1)} MB, 120,000 long names`, "delta-weights", ["inspect", join(work, "i31")]);
  await writeJson(join(work, "ishort", "model.safetensors.index.json"), index(2_500_000, (i) => i.toString(36), "a"));
  await measure("index of 2.5 million short names", "delta-weights", ["inspect", join(work, "ishort")]);

  // make-delta on pathological but valid targets, and apply of the largest delta it makes
  for (const role of ["base", "target"]) {
    const header = {};
    for (let i = 0; i < 8192; i++) header[`${String(i).padStart(5, "0")}${"\u00e9\u4e00".repeat(350)}`] = { dtype: "F16", shape: [4], data_offsets: [i * 8, i * 8 + 8] };
    await writeSafetensors(join(work, "names", role, "model.safetensors"), JSON.stringify(header), 8192 * 8);
    const escapes = JSON.stringify({ k: "\u00e9".repeat(4_000_000) }).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    await writeSafetensors(join(work, "escapes", role, "model.safetensors"), `{"__metadata__":${escapes},"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}`, 8);
    const metadata = Object.fromEntries(Array.from({ length: 4000 }, (_, i) => [`k${i}`, "v".repeat(6000)]));
    await writeSafetensors(join(work, "metadata", role, "model.safetensors"), JSON.stringify({ __metadata__: metadata, w: { dtype: "F16", shape: [4], data_offsets: [0, 8] } }), 8);
    const big = JSON.stringify({ k: "\u00e9".repeat(2_150_000) }).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    await writeSafetensors(join(work, "largest", role, "model.safetensors"), `{"__metadata__":${big},"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}`, 8);
  }
  for (const [name, what] of [["names", "8,192 tensors with 1.5 KB non-ASCII names"], ["escapes", "a 24 MB header of \\u00e9 escapes"], ["metadata", "24 MB of metadata"], ["largest", "a 13 MB header (a 15 MB delta.json)"]]) {
    await measure(`make-delta: ${what}`, "make-delta", ["--base", join(work, name, "base"), "--target", join(work, name, "target"), "--delta", join(work, name, "delta")]);
  }
  await measure("apply-delta of that 15 MB delta.json", "apply-delta", ["--base", join(work, "largest", "base"), "--delta", join(work, "largest", "delta"), "--target", join(work, "largest", "out")]);

  await writeFile(join(work, "newlines.txt"), "\n".repeat(33_000_000));
  await measure("a 33 MB checksum list of newlines", "apply-delta", ["--base", join(SAMPLES, "base"), "--delta", join(SAMPLES, "delta"), "--target", join(work, "o5"), "--checksums", join(work, "newlines.txt")]);
} finally {
  await rm(work, { recursive: true, force: true });
}
process.exitCode = rows.every((r) => r.ok) ? 0 : 1;
