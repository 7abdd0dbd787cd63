#!/usr/bin/env node
// npm run bench -- --lora [--layers N] [--rank R] [--targets all|qv] [--repeat K]
//
// Merges a LoRA adapter into a LLaMA-7B-shaped base (hidden 4096, intermediate
// 11008, vocabulary 32000; N layers, default 2) with apply-delta, and prints
// wall time, CPU-seconds, peak RSS, the I/O floor (reading the base and
// adapter, writing the output, fsynced) and the CPU floor (the SHA-256 the
// run must compute and the kernel's multiply-adds, at the rates one core of
// this machine measures, over its cores), so the figure says which floor
// binds. With --repeat K, K merges alternate with K floors, and the medians
// (and ranges) are printed: on a shared machine one run says little. The
// adapter: rank R (default 64) on every linear layer
// (or q_proj and v_proj only, alpaca-lora's), float16, with whole embeddings of
// a 49,954-row vocabulary (Chinese-Alpaca's) saved as modules_to_save, so that
// the largest tensors are made from the adapter and memory is measured where
// it is highest.
import { spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";
import { pathToFileURL } from "node:url";
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { numberFlags } from "./bench-flags.mjs";
import { sha256PerCpuSecond } from "./file-digest.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const flag = numberFlags(args, "npm run bench -- --lora [--layers N] [--rank R] [--targets all|qv] [--repeat K]");
const layers = flag("--layers", 2);
const rank = flag("--rank", 64);
const repeat = flag("--repeat", 1);
const targetsAt = args.indexOf("--targets");
const targets = targetsAt >= 0 ? args[targetsAt + 1] : "all";
const HIDDEN = 4096, INTER = 11008, VOCAB = 32000, GROWN = 49954;
const LINEARS = { "self_attn.q_proj": [HIDDEN, HIDDEN], "self_attn.k_proj": [HIDDEN, HIDDEN], "self_attn.v_proj": [HIDDEN, HIDDEN], "self_attn.o_proj": [HIDDEN, HIDDEN], "mlp.gate_proj": [INTER, HIDDEN], "mlp.up_proj": [INTER, HIDDEN], "mlp.down_proj": [HIDDEN, INTER] };
const adapted = targets === "qv" ? ["self_attn.q_proj", "self_attn.v_proj"] : Object.keys(LINEARS);

const work = path.join(tmpdir(), `bench-lora-${process.pid}`);
const base = path.join(work, "base"), adapter = path.join(work, "adapter"), target = path.join(work, "target");

/** A safetensors file of random small float16 values, written a few MB at a time. */
function writeSafetensors(file, tensors) {
  const header = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const [name, shape] of [...tensors].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const bytes = shape.reduce((n, d) => n * d, 1) * 2;
    header[name] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let text = JSON.stringify(header);
  text += " ".repeat((8 - (text.length % 8)) % 8);
  const fd = openSync(file, "w");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  writeSync(fd, prefix);
  writeSync(fd, text);
  const block = Buffer.alloc(8 << 20);
  for (let i = 0; i < block.length; i += 2) block.writeUInt16LE(0x1000 + ((i * 2654435761) >>> 20) % 0x1400 + (i & 2 ? 0x8000 : 0), i);
  for (let left = offset; left > 0; left -= Math.min(left, block.length)) writeSync(fd, block, 0, Math.min(left, block.length));
  closeSync(fd);
}

function run(command, commandArgs) {
  const stats = path.join(work, "time.txt");
  const start = performance.now();
  const result = spawnSync("/usr/bin/time", ["-v", "-o", stats, command, ...commandArgs], { stdio: ["ignore", "pipe", "pipe"] });
  const seconds = (performance.now() - start) / 1000;
  const report = readFileSync(stats, "utf8");
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(report)?.[1] ?? 0) * 1024;
  // CPU-seconds as well as wall time: on a shared machine the wall time says more about the load.
  const cpu = Number(/User time \(seconds\): ([\d.]+)/.exec(report)?.[1] ?? 0) + Number(/System time \(seconds\): ([\d.]+)/.exec(report)?.[1] ?? 0);
  if (result.status !== 0) throw new Error(`${command} failed: ${result.stderr.toString().trim()}`);
  return { seconds, rss, cpu };
}

/**
 * The merge's kernel in multiply-adds per CPU-second of one core: the fused
 * step (product, scale, float16 W in and out) on blocks of 512 x 4096 at the
 * bench's rank, as the merge runs it.
 */
async function measureKernel(r) {
  const { LowRankBlocks } = await import(pathToFileURL(path.join(root, "dist/kernels/fast-low-rank.js")).href);
  const rows = 512, cols = 4096;
  const blocks = new LowRankBlocks("F16", rows, cols, [{ rank: r, aCols: cols, bRows: rows, transposed: false, scale: Math.fround(2), deltaDType: "F32" }], rows);
  let seed = 0x2545f491;
  const random = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return ((seed >>> 0) / 2 ** 32 - 0.5) * 0.04; };
  blocks.setFactor(0, "a", 0, Float32Array.from({ length: r * cols }, random));
  blocks.setFactor(0, "b", 0, Float32Array.from({ length: rows * r }, random));
  const w = new Uint8Array(rows * cols * 2);
  for (let i = 0; i < w.length; i += 2) w[i + 1] = 0x1c + (i & 0x1f); // float16 weights around 0.005
  const out = new Uint8Array(w.length);
  // Past the engine's tier-up (WebAssembly starts on a baseline compiler).
  for (const start = cpuSeconds(); cpuSeconds() - start < 0.3; ) blocks.merge(0, w, out);
  let runs = 0;
  const start = cpuSeconds();
  do {
    blocks.merge(0, w, out);
    runs++;
  } while (cpuSeconds() - start < 1);
  const rate = (runs * rows * cols * r) / (cpuSeconds() - start);
  blocks.close();
  return rate;
}

const cpuSeconds = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1e6; };

const files = (dir) => readdirSync(dir).map((f) => path.join(dir, f)).filter((f) => statSync(f).isFile());
const size = (list) => list.reduce((n, f) => n + statSync(f).size, 0);

try {
  mkdirSync(base, { recursive: true });
  mkdirSync(adapter, { recursive: true });
  const baseTensors = [["model.embed_tokens.weight", [VOCAB, HIDDEN]], ["lm_head.weight", [VOCAB, HIDDEN]], ["model.norm.weight", [HIDDEN]]];
  for (let i = 0; i < layers; i++) {
    for (const [mod, shape] of Object.entries(LINEARS)) baseTensors.push([`model.layers.${i}.${mod}.weight`, shape]);
    baseTensors.push([`model.layers.${i}.input_layernorm.weight`, [HIDDEN]], [`model.layers.${i}.post_attention_layernorm.weight`, [HIDDEN]]);
  }
  writeSafetensors(path.join(base, "model.safetensors"), baseTensors);
  writeFileSync(path.join(base, "config.json"), JSON.stringify({ model_type: "llama", hidden_size: HIDDEN, vocab_size: VOCAB }));
  const adapterTensors = [["base_model.model.model.embed_tokens.modules_to_save.weight", [GROWN, HIDDEN]], ["base_model.model.lm_head.modules_to_save.weight", [GROWN, HIDDEN]]];
  for (let i = 0; i < layers; i++) {
    for (const mod of adapted) {
      const [out, inp] = LINEARS[mod];
      adapterTensors.push([`base_model.model.model.layers.${i}.${mod}.lora_A.weight`, [rank, inp]], [`base_model.model.model.layers.${i}.${mod}.lora_B.weight`, [out, rank]]);
    }
  }
  writeSafetensors(path.join(adapter, "adapter_model.safetensors"), adapterTensors);
  writeFileSync(path.join(adapter, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: rank, lora_alpha: 2 * rank, target_modules: adapted.map((m) => m.split(".")[1]), modules_to_save: ["embed_tokens", "lm_head"] }));
  spawnSync("sync");

  const inputs = [...files(base), ...files(adapter)];
  const runs = [];
  for (let i = 0; i < repeat; i++) {
    rmSync(target, { recursive: true, force: true });
    const merge = run(process.execPath, [path.join(root, "bin/apply-delta"), "--base", base, "--delta", adapter, "--target", target, "--no-progress", "--quiet"]);
    const read = run("sh", ["-c", `cat ${inputs.map((f) => `'${f}'`).join(" ")} > /dev/null`]).seconds;
    let write = 0;
    for (const f of files(target)) {
      write += run("dd", [`if=${f}`, `of=${path.join(work, "copy")}`, "bs=16M", "conv=fsync", "status=none"]).seconds;
      rmSync(path.join(work, "copy"));
    }
    runs.push({ merge, floor: read + write });
  }
  const outputs = files(target);
  const weightBytes = size(outputs.filter((f) => f.endsWith(".safetensors")));
  const macs = layers * adapted.reduce((n, m) => n + LINEARS[m][0] * LINEARS[m][1] * rank, 0);
  const rates = { sha256: sha256PerCpuSecond(), kernel: await measureKernel(rank), cores: availableParallelism() };
  // Every weight byte is hashed twice: the file's sha256 (checked or recorded) and its tensor's (the record).
  const hashed = 2 * weightBytes;
  const cpuFloor = { hash: hashed / rates.sha256, kernel: macs / rates.kernel };
  const cpuFloorSeconds = (cpuFloor.hash + cpuFloor.kernel) / rates.cores;

  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)];
  const spread = (values, digits = 1) => (values.length === 1 ? values[0].toFixed(digits) : `${median(values).toFixed(digits)} (${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)})`);
  const wall = runs.map((r) => r.merge.seconds), cpu = runs.map((r) => r.merge.cpu), floors = runs.map((r) => r.floor);
  const ratios = runs.map((r) => r.merge.seconds / Math.max(r.floor, cpuFloorSeconds));
  const gb = (n) => (n / 1e9).toFixed(2);
  console.log(`LoRA merge: ${layers} LLaMA-7B layers, rank ${rank} on ${adapted.length} linear layers each, embeddings grown to ${GROWN} rows${repeat > 1 ? `; ${repeat} runs alternating with their I/O floors, medians (ranges)` : ""}`);
  console.log(`  inputs ${gb(size(inputs))} GB, output ${gb(size(outputs))} GB, ${(macs / 1e9).toFixed(1)} G multiply-adds`);
  console.log(`  apply-delta: ${spread(wall)} s, ${spread(cpu)} CPU-seconds (user + system, every thread), peak RSS ${(Math.max(...runs.map((r) => r.merge.rss)) / 1e6).toFixed(0)} MB, ${(macs / 1e9 / median(wall)).toFixed(2)} G multiply-adds/s`);
  console.log(`  I/O floor (cat inputs + dd outputs, fsynced): ${spread(floors)} s`);
  console.log(`  CPU floor on ${rates.cores} cores: ${cpuFloorSeconds.toFixed(1)} s = (SHA-256 of ${gb(hashed)} GB at ${(rates.sha256 / 1e6).toFixed(0)} MB/s per core: ${cpuFloor.hash.toFixed(1)} s + the kernel's ${(macs / 1e9).toFixed(1)} G multiply-adds at ${(rates.kernel / 1e9).toFixed(2)} G/s per core: ${cpuFloor.kernel.toFixed(1)} s) / ${rates.cores}; reading, writing and copying left out`);
  console.log(`  the ${median(floors) >= cpuFloorSeconds ? "I/O" : "CPU"} floor binds; wall / that floor: ${spread(ratios, 2)}x; CPU used / ${rates.cores} cores: ${(median(cpu) / rates.cores).toFixed(1)} s`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
