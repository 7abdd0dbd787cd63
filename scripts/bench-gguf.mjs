#!/usr/bin/env node
// npm run bench -- --gguf [--layers N] [--repeat N] [--keep]
//
// GGUF output speed and memory: a LLaMA-7B-shaped F16 model (32 layers by
// default, 13.5 GB) with the tiny fixture's tokenizer, converted by
// `delta-weights convert MODEL out.gguf --outtype f16` and `--outtype q8_0`.
// Each is compared with its I/O floor: cat of the model, then writing the
// same number of output bytes, fsynced (as the convert fsyncs its output);
// and with its CPU floor: the output's SHA-256 (and for Q8_0 the
// quantization) at the rates measured here, spread over every core. CPU
// used (user + system, every thread) is printed beside wall time: on a
// shared machine it says more about the run than wall time does.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync, statSync, writeSync, mkdirSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const args = process.argv.slice(2);
const layersAt = args.indexOf("--layers");
const layers = layersAt >= 0 ? Number(args[layersAt + 1]) : 32;
if (!Number.isInteger(layers) || layers < 1 || layers > 80) {
  console.error("usage: npm run bench -- --gguf [--layers N]   (N from 1 to 80)");
  process.exit(2);
}
const keep = args.includes("--keep");
const repeatAt = args.indexOf("--repeat");
const repeat = repeatAt >= 0 ? Number(args[repeatAt + 1]) : 1;
if (!Number.isInteger(repeat) || repeat < 1 || repeat > 9) {
  console.error("usage: npm run bench -- --gguf [--repeat N]   (N from 1 to 9)");
  process.exit(2);
}
const GB = 1e9;
const hidden = 4096, intermediate = 11008, vocab = 32000, heads = 32;

function tensors() {
  const list = [["model.embed_tokens.weight", [vocab, hidden]], ["model.norm.weight", [hidden]], ["lm_head.weight", [vocab, hidden]]];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`;
    for (const proj of ["q_proj", "k_proj", "v_proj", "o_proj"]) list.push([`${p}self_attn.${proj}.weight`, [hidden, hidden]]);
    list.push([`${p}mlp.gate_proj.weight`, [intermediate, hidden]], [`${p}mlp.up_proj.weight`, [intermediate, hidden]], [`${p}mlp.down_proj.weight`, [hidden, intermediate]]);
    list.push([`${p}input_layernorm.weight`, [hidden]], [`${p}post_attention_layernorm.weight`, [hidden]]);
  }
  return list.sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, shape]) => ({ name, shape, bytes: shape.reduce((x, y) => x * y, 1) * 2 }));
}

/** One F16 safetensors file of small random weights (|x| < 0.25, no NaN), written in 64 MB pieces. */
function writeModel(dir, list) {
  const header = {};
  let offset = 0;
  for (const t of list) {
    header[t.name] = { dtype: "F16", shape: t.shape, data_offsets: [offset, offset + t.bytes] };
    offset += t.bytes;
  }
  let text = JSON.stringify({ __metadata__: { format: "pt" }, ...header });
  text += " ".repeat((8 - (text.length % 8)) % 8);
  const fd = openSync(path.join(dir, "model.safetensors"), "w");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  writeSync(fd, prefix);
  writeSync(fd, Buffer.from(text));
  const piece = new Uint16Array(32 * 1024 * 1024);
  let s = 0x2545f491;
  for (let i = 0; i < piece.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    piece[i] = (s & 0x83ff) | 0x2c00; // sign, mantissa random; exponent 2^-4
  }
  const bytes = new Uint8Array(piece.buffer);
  for (let left = offset; left > 0; left -= Math.min(left, bytes.length)) writeSync(fd, bytes, 0, Math.min(left, bytes.length));
  closeSync(fd);
  const fixture = path.join(root, "test", "fixtures", "gguf", "model");
  for (const f of ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]) copyFileSync(path.join(fixture, f), path.join(dir, f));
  const config = JSON.parse(readFileSync(path.join(fixture, "config.json"), "utf8"));
  Object.assign(config, { hidden_size: hidden, intermediate_size: intermediate, num_attention_heads: heads, num_key_value_heads: heads, num_hidden_layers: layers, vocab_size: vocab, max_position_embeddings: 2048 });
  return { config, size: offset };
}

function timed(argv) {
  const stats = path.join(tmpdir(), `bench-gguf-time-${process.pid}`);
  const hasTime = existsSync("/usr/bin/time");
  const full = hasTime ? ["/usr/bin/time", "-v", "-o", stats, ...argv] : argv;
  const start = performance.now();
  const result = spawnSync(full[0], full.slice(1), { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - start) / 1000;
  if (result.status !== 0) throw new Error(`${argv.join(" ")} failed: ${result.stderr}`);
  let rss, cpu, sys;
  if (hasTime) {
    const text = readFileSync(stats, "utf8");
    const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
    if (m) rss = Number(m[1]) * 1024;
    // CPU-seconds of every thread (user + system): under load, wall time says more about the machine than the run.
    const user = /User time \(seconds\): ([\d.]+)/.exec(text);
    const system = /System time \(seconds\): ([\d.]+)/.exec(text);
    if (user && system) cpu = Number(user[1]) + Number(system[1]);
    if (system) sys = Number(system[1]);
    rmSync(stats, { force: true });
  }
  return { seconds, rss, cpu, sys };
}

const cpuSeconds = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1e6; };

/** Work units per CPU-second of `step` (CPU time, so other work on the machine matters less). */
function ratePerCpuSecond(step, unitsPerStep) {
  step(); // warm up
  let units = 0;
  const start = cpuSeconds();
  do {
    step();
    units += unitsPerStep;
  } while (cpuSeconds() - start < 0.5);
  return units / (cpuSeconds() - start);
}

/** SHA-256 bytes and Q8_0 elements (from F16, as the built package quantizes) per CPU-second on one core. */
async function measureRates() {
  const buffer = Buffer.alloc(16 * 1024 * 1024, 0x5a);
  const sha256 = ratePerCpuSecond(() => createHash("sha256").update(buffer).digest(), buffer.length);
  const { quantizeQ8_0Into } = await import(pathToFileURL(path.join(root, "dist", "kernels", "index.js")).href);
  const halves = new Uint16Array(8 * 1024 * 1024).map((_, i) => 0x2c00 | ((i * 2654435761) >>> 21 & 0x83ff));
  const q8 = new Uint8Array((halves.length / 32) * 34);
  const q8_0 = quantizeQ8_0Into === undefined ? undefined : ratePerCpuSecond(() => quantizeQ8_0Into("F16", new Uint8Array(halves.buffer), q8), halves.length);
  return { sha256, q8_0, cores: availableParallelism() };
}

const work = mkdtempSync(path.join(tmpdir(), "delta-weights-bench-gguf-"));
try {
  const list = tensors();
  const modelBytes = list.reduce((n, t) => n + t.bytes, 0);
  const { bavail, bsize } = statfsSync(work);
  if (bavail * bsize < 2.3 * modelBytes) throw new Error(`the bench needs about ${(2.3 * modelBytes / GB).toFixed(0)} GB free in ${tmpdir()}`);
  const modelDir = path.join(work, "model");
  mkdirSync(modelDir);
  const { config } = writeModel(modelDir, list);
  const fd = openSync(path.join(modelDir, "config.json"), "w");
  writeSync(fd, JSON.stringify(config));
  closeSync(fd);
  console.log(`GGUF bench: LLaMA-7B-shaped F16 model, ${layers} layers, ${(modelBytes / GB).toFixed(2)} GB, in ${work}`);
  const rates = await measureRates();
  console.log(["", "wall", "CPU used", "output", "peak RSS", "I/O floor", "floor CPU", "CPU floor", "vs floor"].map((h, i) => (i === 0 ? h.padEnd(16) : h.padStart(11))).join(""));
  // The model's own bytes reach the disk before anything is timed: its writeback would otherwise land on the first run.
  spawnSync("sync", [path.join(modelDir, "model.safetensors")]);
  for (const outtype of ["f16", "q8_0"]) {
    const out = path.join(work, `model-${outtype}.gguf`);
    const runs = [], floors = [];
    let outBytes = 0;
    // Run and floor alternate, so that a change in the machine's load falls on both.
    for (let i = 0; i < repeat; i++) {
      spawnSync("sh", ["-c", `cat '${modelDir}'/model.safetensors > /dev/null`]);
      runs.push(timed([process.execPath, path.join(root, "bin", "delta-weights"), "convert", modelDir, out, "--outtype", outtype, "--no-progress", "--json"]));
      outBytes = statSync(out).size;
      rmSync(out);
      const floorFile = path.join(work, "floor");
      floors.push(timed(["sh", "-c", `cat '${modelDir}'/model.safetensors > /dev/null && head -c ${outBytes} '${modelDir}/model.safetensors' > '${floorFile}' && sync '${floorFile}'`]));
      rmSync(floorFile);
    }
    const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const run = { seconds: median(runs.map((r) => r.seconds)), cpu: runs.some((r) => r.cpu === undefined) ? undefined : median(runs.map((r) => r.cpu)),
      sys: runs.some((r) => r.sys === undefined) ? undefined : median(runs.map((r) => r.sys)), rss: runs.some((r) => r.rss === undefined) ? undefined : Math.max(...runs.map((r) => r.rss)) };
    const floor = { seconds: median(floors.map((r) => r.seconds)), cpu: floors.some((r) => r.cpu === undefined) ? undefined : median(floors.map((r) => r.cpu)) };
    if (repeat > 1) console.log(`  ${outtype}: runs ${runs.map((r) => r.seconds.toFixed(1)).join(", ")} s; floors ${floors.map((r) => r.seconds.toFixed(1)).join(", ")} s`);
    const cpuText = (s) => (s === undefined ? "n/a" : `${s.toFixed(2)} s`);
    // The SHA-256 of the output and, for Q8_0, the quantization of every element, spread over every core.
    const elements = modelBytes / 2;
    const cpuFloor = (outBytes / rates.sha256 + (outtype === "q8_0" && rates.q8_0 !== undefined ? elements / rates.q8_0 : 0)) / rates.cores;
    console.log([`convert ${outtype}`.padEnd(16), `${run.seconds.toFixed(2)} s`.padStart(11), cpuText(run.cpu).padStart(11), `${(outBytes / GB).toFixed(2)} GB`.padStart(11),
      (run.rss === undefined ? "n/a" : `${Math.round(run.rss / 1024 / 1024)} MB`).padStart(11), `${floor.seconds.toFixed(2)} s`.padStart(11), cpuText(floor.cpu).padStart(11),
      cpuText(cpuFloor).padStart(11), `${(run.seconds / Math.max(floor.seconds, cpuFloor)).toFixed(2)}x`.padStart(11)].join(""));
    // The kernel's share: copying the reads out of and the writes into the page cache. On a shared VM it swings most with the load.
    if (run.sys !== undefined && run.cpu !== undefined) console.log(`  ${outtype}: user ${(run.cpu - run.sys).toFixed(2)} s, system ${run.sys.toFixed(2)} s`);
  }
  console.log(`CPU used: user + system seconds of every thread (on ${rates.cores} cores); floor CPU: the same for the I/O floor's cat, head and sync. ` +
    `${repeat > 1 ? `Medians of ${repeat} runs and floors, alternating (peak RSS: the largest). ` : ""}CPU floor: the output's SHA-256 at ${(rates.sha256 / 1e6).toFixed(0)} MB/s per core, plus for Q8_0 the quantization at ${rates.q8_0 === undefined ? "n/a" : `${(rates.q8_0 / 1e6).toFixed(0)} M elements/s`} per core (both measured here), spread over ${rates.cores} cores. vs floor: wall time over the larger floor.`);
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true });
}
