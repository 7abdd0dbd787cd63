#!/usr/bin/env node
// npm run bench [-- --layers N] [-- --keep] [-- --xor-only] [-- --repeat N] [-- --conventions]
// npm run bench -- --hub [...]   (the Hub download bench: scripts/bench-hub.mjs)
// npm run bench -- --lora [...]  (a LoRA merge into a LLaMA-7B-shaped base: scripts/bench-lora.mjs)
// npm run bench -- --push [...]  (the publishing bench: scripts/bench-push.mjs)
// npm run bench -- --pytorch [...]  (PyTorch .bin output: scripts/bench-pytorch.mjs)
// npm run bench -- --gguf [...]  (GGUF output, F16 and Q8_0: scripts/bench-gguf.mjs)
// npm run bench -- --meta [...]  (Meta's consolidated.0N.pth as a base: scripts/bench-meta.mjs)
// npm run bench -- --koala [...]  (Koala's EasyLM diff onto a LLaMA-7B-shaped base: scripts/bench-koala.mjs)
//
// Builds a LLaMA-7B-shaped fp16 base and a fine-tune-like target (two
// 32001x4096 embeddings, full-size 4096/11008 layers; 2 layers by default,
// about 1.3 GB per model; --layers 32 for a full 7B) in a temporary directory,
// runs the built make-delta and apply-delta CLIs as child processes, and
// prints for each: wall time, GB/s of output, peak RSS, the I/O floor (cat
// of the same inputs plus writing the same output bytes, page cache warm for
// both), the CPU floor (the SHA-256 and kernel work the run must do, at the
// rates measured here, spread over every core), and the ratio to the larger. When python3 can import torch it also times a
// FastChat-style shard-by-shard apply in PyTorch on the same files. Then an
// Open-Assistant-style XOR payload (every target file XORed with the base's
// same-named file, made here) recovered by apply-delta, checked against a
// sha256sum list (--xor-only runs just that case). --repeat N runs make-delta,
// apply-delta and the XOR apply each N times, alternately with their I/O
// floors, and prints medians and ranges: on a shared machine one run says little. With --conventions, also applies a delta laid
// out by each published convention (FastChat v1.1 and v0, Alpaca's float32
// diff, LLaVA, Ziya) made from the same base, for time and peak RSS. Ends with
// the kernels' throughput. The temporary directory is deleted at the end.
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statfsSync, statSync, writeFileSync, writeSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { measureKernels } from "./kernel-throughput.mjs";
import { sha256, sha256PerCpuSecond } from "./file-digest.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = (file) => import(pathToFileURL(path.join(root, "dist", file)).href);
const { encodeHeader } = await dist("safetensors/header.js");
const { addInto, convertInto, xorInto } = await dist("kernels/index.js");

const args = process.argv.slice(2);
if (args.includes("--hub")) {
  const hub = spawnSync(process.execPath, [path.join(root, "scripts/bench-hub.mjs"), ...args.filter((arg) => arg !== "--hub")], { stdio: "inherit" });
  process.exit(hub.status ?? 1);
}
if (args.includes("--lora")) {
  const lora = spawnSync(process.execPath, [path.join(root, "scripts/bench-lora.mjs"), ...args.filter((arg) => arg !== "--lora")], { stdio: "inherit" });
  process.exit(lora.status ?? 1);
}
if (args.includes("--pytorch")) {
  const pytorch = spawnSync(process.execPath, [path.join(root, "scripts/bench-pytorch.mjs"), ...args.filter((arg) => arg !== "--pytorch")], { stdio: "inherit" });
  process.exit(pytorch.status ?? 1);
}
if (args.includes("--gguf")) {
  const gguf = spawnSync(process.execPath, [path.join(root, "scripts/bench-gguf.mjs"), ...args.filter((arg) => arg !== "--gguf")], { stdio: "inherit" });
  process.exit(gguf.status ?? 1);
}
if (args.includes("--meta")) {
  const meta = spawnSync(process.execPath, [path.join(root, "scripts/bench-meta.mjs"), ...args.filter((arg) => arg !== "--meta")], { stdio: "inherit" });
  process.exit(meta.status ?? 1);
}
if (args.includes("--koala")) {
  const koala = spawnSync(process.execPath, [path.join(root, "scripts/bench-koala.mjs"), ...args.filter((arg) => arg !== "--koala")], { stdio: "inherit" });
  process.exit(koala.status ?? 1);
}
if (args.includes("--push")) {
  const push = spawnSync(process.execPath, [path.join(root, "scripts/bench-push.mjs"), ...args.filter((arg) => arg !== "--push")], { stdio: "inherit" });
  process.exit(push.status ?? 1);
}
const layersAt = args.indexOf("--layers");
const layers = layersAt >= 0 ? Number(args[layersAt + 1]) : 2;
if (!Number.isInteger(layers) || layers < 0 || layers > 80) {
  console.error("usage: npm run bench [-- --layers N]   (N from 0 to 80)");
  process.exit(2);
}
const keep = args.includes("--keep");
const xorOnly = args.includes("--xor-only");
const conventions = args.includes("--conventions");
const repeatAt = args.indexOf("--repeat");
const repeat = repeatAt >= 0 ? Number(args[repeatAt + 1]) : 1;
if (!Number.isInteger(repeat) || repeat < 1 || repeat > 50) {
  console.error("usage: npm run bench [-- --repeat N]   (N from 1 to 50)");
  process.exit(2);
}

const GB = 1e9;
const CHUNK = 8 * 1024 * 1024;
const SHARD_BYTES = 1_000_000_000; // HF-style shards with an index, like real checkpoints

// ---------------------------------------------------------------------------
// Synthetic model

function llamaTensors(layerCount) {
  const hidden = 4096, intermediate = 11008, vocab = 32001;
  const tensors = [{ name: "model.embed_tokens.weight", shape: [vocab, hidden], kind: "weight" }];
  for (let i = 0; i < layerCount; i++) {
    const p = `model.layers.${i}.`;
    for (const proj of ["q_proj", "k_proj", "v_proj", "o_proj"]) tensors.push({ name: `${p}self_attn.${proj}.weight`, shape: [hidden, hidden], kind: "weight" });
    tensors.push({ name: `${p}mlp.gate_proj.weight`, shape: [intermediate, hidden], kind: "weight" });
    tensors.push({ name: `${p}mlp.up_proj.weight`, shape: [intermediate, hidden], kind: "weight" });
    tensors.push({ name: `${p}mlp.down_proj.weight`, shape: [hidden, intermediate], kind: "weight" });
    tensors.push({ name: `${p}input_layernorm.weight`, shape: [hidden], kind: "norm" });
    tensors.push({ name: `${p}post_attention_layernorm.weight`, shape: [hidden], kind: "norm" });
  }
  tensors.push({ name: "model.norm.weight", shape: [hidden], kind: "norm" });
  tensors.push({ name: "lm_head.weight", shape: [vocab, hidden], kind: "weight" });
  return tensors.map((t) => ({ ...t, dtype: "F16", bytes: t.shape.reduce((a, b) => a * b, 1) * 2 }));
}

/** Splits tensors (in model order) into shards of at most SHARD_BYTES, like save_pretrained. */
function shardTensors(tensors) {
  const shards = [];
  let current = [], size = 0;
  for (const t of tensors) {
    if (current.length > 0 && size + t.bytes > SHARD_BYTES) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(t);
    size += t.bytes;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

/** xorshift128+ style generator of 32-bit words: fast and deterministic. */
function makeRandom(seed) {
  let a = seed | 1, b = (seed * 2654435761) | 1;
  return () => {
    let t = a;
    const s = b;
    a = s;
    t ^= t << 23; t ^= t >>> 17; t ^= s ^ (s >>> 26);
    b = t;
    return (t + s) >>> 0;
  };
}

/** 65536 float32 values drawn from N(mean, sigma): a lookup table for fast sampling. */
function gaussianTable(mean, sigma, seed) {
  const next = makeRandom(seed);
  const table = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) {
    const u = (next() + 1) / 4294967297, v = next() / 4294967296;
    table[i] = mean + sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return table;
}

function fill(out, table, next) {
  for (let i = 0; i < out.length; i += 2) {
    const r = next();
    out[i] = table[r & 0xffff];
    out[i + 1] = table[r >>> 16];
  }
}

/**
 * Writes base and target directories, chunk by chunk. Like a real fine-tune,
 * both are float16 roundings of float32 weights: base = f16(w), target =
 * f16(w + change), so target - base is not always exact in float16 and
 * make-delta records fix-ups for a fraction of a percent of the elements.
 */
function writeModels(baseDir, targetDir, tensors) {
  const weights = gaussianTable(0, 0.02, 1), norms = gaussianTable(1, 0.05, 2);
  const changes = gaussianTable(0, 0.0005, 3);
  for (let i = 0; i < 65536; i += 8) changes[i] = 0; // some weights do not move
  const next = makeRandom(42);
  const elements = CHUNK / 2;
  const w = new Float32Array(elements), change = new Float32Array(elements), moved = new Float32Array(elements);
  const wBytes = new Uint8Array(w.buffer), changeBytes = new Uint8Array(change.buffer), movedBytes = new Uint8Array(moved.buffer);
  const base = new Uint8Array(CHUNK), target = new Uint8Array(CHUNK);
  const shards = shardTensors(tensors);
  const weightMap = {};
  let totalSize = 0;
  shards.forEach((shard, s) => {
    const file = shards.length === 1 ? "model.safetensors" : `model-${String(s + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
    const header = encodeHeader(shard, { format: "pt" });
    const fds = [openSync(path.join(baseDir, file), "w"), openSync(path.join(targetDir, file), "w")];
    for (const fd of fds) writeSync(fd, header.bytes);
    for (const placed of header.tensors) {
      const info = shard.find((t) => t.name === placed.name);
      weightMap[placed.name] = file;
      totalSize += info.bytes;
      for (let done = 0; done < info.bytes; done += CHUNK) {
        const length = Math.min(CHUNK, info.bytes - done), count = length / 2;
        fill(w, info.kind === "norm" ? norms : weights, next);
        fill(change, changes, next);
        addInto("F32", wBytes.subarray(0, count * 4), changeBytes.subarray(0, count * 4), movedBytes.subarray(0, count * 4));
        convertInto("F32", "F16", wBytes.subarray(0, count * 4), base.subarray(0, length));
        convertInto("F32", "F16", movedBytes.subarray(0, count * 4), target.subarray(0, length));
        writeSync(fds[0], base, 0, length);
        writeSync(fds[1], target, 0, length);
      }
    }
    for (const fd of fds) closeSync(fd);
  });
  const config = JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: layers,
    num_attention_heads: 32, vocab_size: 32001, torch_dtype: "float16", model_type: "llama" }, null, 2);
  for (const dir of [baseDir, targetDir]) {
    writeFileSync(path.join(dir, "config.json"), config);
    if (shards.length > 1) {
      writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
    }
  }
}

/**
 * An XOR payload as Open-Assistant's xor_codec.py makes one: each file of
 * the target XORed byte for byte with the base's same-named file (zero bytes
 * past the base's end), as long as the target's.
 */
function writeXorPayload(baseDir, targetDir, payloadDir) {
  mkdirSync(payloadDir);
  const t = Buffer.allocUnsafe(CHUNK), b = Buffer.allocUnsafe(CHUNK);
  for (const name of readdirSync(targetDir)) {
    const fds = [openSync(path.join(targetDir, name), "r"), openSync(path.join(baseDir, name), "r"), openSync(path.join(payloadDir, name), "w")];
    for (;;) {
      const n = readSync(fds[0], t, 0, CHUNK, null);
      if (n === 0) break;
      b.fill(0, readSync(fds[1], b, 0, n, null), n);
      xorInto(t.subarray(0, n), b.subarray(0, n), t.subarray(0, n));
      writeSync(fds[2], t, 0, n);
    }
    for (const fd of fds) closeSync(fd);
  }
}

/**
 * Deltas laid out as the LLaMA-era publishers laid theirs out (see
 * src/delta/conventions/), made from the bench's tensor list: the values are
 * small noise (these runs measure time and memory; the conventions' exactness
 * is tested against PyTorch in test/delta/conventions.test.ts).
 */
const PUBLISHED_CONVENTIONS = [
  { name: "fastchat", dtype: "F16", vocab: (v) => v },
  { name: "fastchat-v0", dtype: "F16", vocab: (v) => v + 1 },
  { name: "alpaca", dtype: "F32", vocab: (v) => v + 1 },
  { name: "llava", dtype: "F16", vocab: (v) => v + 3, extra: [{ name: "model.mm_projector.weight", shape: [4096, 1024] }, { name: "model.mm_projector.bias", shape: [4096] }] },
  // Ziya stores its grown embedding and lm_head whole (the base's rows as they are), the rest as differences.
  { name: "ziya", dtype: "F16", vocab: () => 39424, wholeEmbeddings: true },
];

/** Where a tensor's bytes are in the bench's base: its file and byte range. */
function baseTensorBytes(baseDir, name) {
  const indexPath = path.join(baseDir, "model.safetensors.index.json");
  const file = existsSync(indexPath) ? JSON.parse(readFileSync(indexPath, "utf8")).weight_map[name] : "model.safetensors";
  const fd = openSync(path.join(baseDir, file), "r");
  const lengthBytes = Buffer.alloc(8);
  readSync(fd, lengthBytes, 0, 8, 0);
  const headerLength = Number(lengthBytes.readBigUInt64LE(0));
  const header = Buffer.alloc(headerLength);
  readSync(fd, header, 0, headerLength, 8);
  const [begin, end] = JSON.parse(header.toString("utf8"))[name].data_offsets;
  return { fd, start: 8 + headerLength + begin, length: end - begin };
}

function writeConventionDelta(convention, tensors, baseDir, dir) {
  mkdirSync(dir);
  const size = convention.dtype === "F32" ? 4 : 2;
  const grown = tensors.map((t) => {
    const shape = t.name.endsWith("embed_tokens.weight") || t.name === "lm_head.weight" ? [convention.vocab(t.shape[0]), t.shape[1]] : t.shape;
    return { name: t.name, shape, dtype: convention.dtype, bytes: shape.reduce((a, b) => a * b, 1) * size };
  });
  const all = [...grown, ...(convention.extra ?? []).map((t) => ({ ...t, dtype: convention.dtype, bytes: t.shape.reduce((a, b) => a * b, 1) * size }))];
  const table = gaussianTable(0, 0.0005, 7);
  const next = makeRandom(7);
  const f32 = new Float32Array(CHUNK / 4);
  const f32Bytes = new Uint8Array(f32.buffer);
  const half = new Uint8Array(CHUNK / 2);
  const shards = shardTensors(all);
  const weightMap = {};
  let totalSize = 0;
  shards.forEach((shard, s) => {
    const file = shards.length === 1 ? "model.safetensors" : `model-${String(s + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
    const header = encodeHeader(shard, { format: "pt" });
    const fd = openSync(path.join(dir, file), "w");
    writeSync(fd, header.bytes);
    for (const placed of header.tensors) {
      const info = shard.find((t) => t.name === placed.name);
      weightMap[placed.name] = file;
      totalSize += info.bytes;
      let done = 0;
      if (convention.wholeEmbeddings && (placed.name.endsWith("embed_tokens.weight") || placed.name === "lm_head.weight")) {
        const whole = baseTensorBytes(baseDir, placed.name);
        for (let at = 0; at < whole.length; ) {
          const n = readSync(whole.fd, half, 0, Math.min(half.length, whole.length - at), whole.start + at);
          writeSync(fd, half, 0, n);
          at += n;
        }
        closeSync(whole.fd);
        done = whole.length;
      }
      while (done < info.bytes) {
        const elements = Math.min(f32.length, (info.bytes - done) / size);
        fill(f32, table, next);
        if (size === 4) writeSync(fd, f32Bytes, 0, elements * 4);
        else {
          convertInto("F32", "F16", f32Bytes.subarray(0, elements * 4), half.subarray(0, elements * 2));
          writeSync(fd, half, 0, elements * 2);
        }
        done += elements * size;
      }
    }
    closeSync(fd);
  });
  const vocab = convention.vocab(32001);
  const config = { architectures: ["LlamaForCausalLM"], hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: layers,
    num_attention_heads: 32, vocab_size: vocab, torch_dtype: convention.dtype === "F32" ? "float32" : "float16", model_type: "llama",
    ...(convention.name === "llava" ? { mm_hidden_size: 1024, mm_use_im_start_end: true, mm_vision_tower: "openai/clip-vit-large-patch14" } : {}) };
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(config, null, 2));
  if (vocab > 32001 && vocab - 32001 <= 3) {
    const added = ["[PAD]", "<im_patch>", "<im_start>", "<im_end>"].slice(0, vocab - 32001);
    writeFileSync(path.join(dir, "added_tokens.json"), JSON.stringify(Object.fromEntries(added.map((t, i) => [t, 32001 + i]))));
  }
  if (shards.length > 1) writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
}

// ---------------------------------------------------------------------------
// Measuring

const hasGnuTime = existsSync("/usr/bin/time");

/** Runs a command; returns wall seconds, peak RSS (bytes) and CPU-seconds (user + system, every thread) of the child. */
function run(command, commandArgs, { label, allowFailure = false } = {}) {
  let argv = [command, ...commandArgs];
  const statsFile = path.join(tmpdir(), `bench-time-${process.pid}.txt`);
  if (hasGnuTime) argv = ["/usr/bin/time", "-v", "-o", statsFile, ...argv];
  const start = performance.now();
  const result = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - start) / 1000;
  let rss, cpu;
  if (hasGnuTime && existsSync(statsFile)) {
    const stats = readFileSync(statsFile, "utf8");
    const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(stats);
    if (match) rss = Number(match[1]) * 1024;
    const user = /User time \(seconds\): ([\d.]+)/.exec(stats), system = /System time \(seconds\): ([\d.]+)/.exec(stats);
    if (user && system) cpu = Number(user[1]) + Number(system[1]);
    rmSync(statsFile, { force: true });
  }
  if (result.status !== 0 && !allowFailure) {
    throw new Error(`${label ?? command} failed (exit ${result.status}): ${result.stderr.toString().trim().split("\n").slice(-3).join(" | ")}`);
  }
  return { seconds, rss, cpu, status: result.status, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

function filesIn(dir, filter = () => true) {
  return readdirSync(dir).filter(filter).map((f) => path.join(dir, f)).filter((f) => statSync(f).isFile()).sort();
}
const isWeights = (f) => f.endsWith(".safetensors");
const totalBytes = (files) => files.reduce((sum, f) => sum + statSync(f).size, 0);

/** The I/O floor: cat the inputs to /dev/null, then write the outputs' bytes (copies, fsynced). */
function ioFloor(inputs, outputs, scratch) {
  const read = run("sh", ["-c", `cat ${inputs.map((f) => `'${f}'`).join(" ")} > /dev/null`], { label: "cat" }).seconds;
  mkdirSync(scratch, { recursive: true });
  let write = 0, cached = 0, direct = 0;
  for (const file of outputs) {
    const copy = path.join(scratch, path.basename(file));
    write += run("dd", [`if=${file}`, `of=${copy}`, "bs=16M", "conv=fsync", "status=none"], { label: "dd" }).seconds;
    rmSync(copy);
    // For reference: the same write left in the page cache (no fsync), as PyTorch leaves it.
    cached += run("dd", [`if=${file}`, `of=${copy}`, "bs=16M", "status=none"], { label: "dd" }).seconds;
    rmSync(copy);
    run("sync", [scratch]);
    // And past the page cache (O_DIRECT), as delta-weights writes where the file system allows: the floor stays the page-cache write.
    direct += run("dd", [`if=${file}`, `of=${copy}`, "bs=16M", "oflag=direct", "conv=fsync", "status=none"], { label: "dd" }).seconds;
    rmSync(copy);
  }
  rmSync(scratch, { recursive: true, force: true });
  return { read, write, cached, direct, total: read + write };
}

const repeatSummaries = [];

/**
 * A timed run and its I/O floor, `repeat` times, alternating (so that a change
 * in the machine's load falls on both). Before each run its output is removed,
 * every dirty page on the machine is written back (`sync`: otherwise the disk
 * would still be writing what an earlier step left, the generator's models
 * included, while the run is timed) and its inputs are read into the page cache.
 * The run whose ratio to its floor is the median one stands for the case.
 */
function repeated(name, outputDir, inputDirs, runOnce, floorOnce) {
  const runs = [];
  for (let r = 0; r < repeat; r++) {
    rmSync(outputDir, { recursive: true, force: true });
    run("sync", []);
    run("sh", ["-c", `cat ${inputDirs.map((d) => `'${d}'/*`).join(" ")} > /dev/null`]);
    const timed = runOnce();
    runs.push({ run: timed, floor: floorOnce() });
  }
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)];
  const spread = (values) => `median ${median(values).toFixed(2)}, ${Math.min(...values).toFixed(2)}-${Math.max(...values).toFixed(2)}`;
  const ratios = runs.map((x) => x.run.seconds / x.floor.total);
  if (repeat > 1) {
    repeatSummaries.push(`${name}, ${repeat} runs alternating with their I/O floors: wall ${spread(runs.map((x) => x.run.seconds))} s; CPU ${spread(runs.map((x) => x.run.cpu ?? NaN))} s; ` +
      `floor ${spread(runs.map((x) => x.floor.total))} s; ratio ${spread(ratios)}`);
  }
  return runs[ratios.indexOf(median(ratios))];
}

/**
 * The CPU floor of a run on this machine's cores: the SHA-256 it must compute
 * (`hashed` bytes) and the kernel it must run over `elements`, at the rates
 * measured here, perfectly spread over every core. Reads, writes and copies
 * are left out, so no run can come near it; where it exceeds the I/O floor,
 * the run is CPU-bound.
 */
function cpuFloor(work, rates) {
  if (work === undefined) return undefined;
  const kernel = rates.kernels.find((k) => k.kernel === work.kernel && k.dtype === work.dtype);
  const kernelSeconds = kernel === undefined ? 0 : work.elements / (kernel.gElementsPerSecond * 1e9);
  return { seconds: (work.hashed / rates.sha256 + kernelSeconds) / rates.cores, hashed: work.hashed, kernelSeconds };
}

const fmt = {
  s: (x) => `${x.toFixed(2)} s`,
  gbs: (bytes, s) => `${(bytes / GB / s).toFixed(2)} GB/s`,
  mb: (x) => (x === undefined ? "n/a" : `${Math.round(x / 1024 / 1024)} MB`),
  x: (x) => `${x.toFixed(2)}x`,
};

// ---------------------------------------------------------------------------

const work = mkdtempSync(path.join(tmpdir(), "delta-weights-bench-"));
const cleanup = () => {
  if (!keep) rmSync(work, { recursive: true, force: true });
};
process.on("SIGINT", () => { cleanup(); process.exit(130); });

try {
  const baseDir = path.join(work, "base"), targetDir = path.join(work, "target");
  const deltaDir = path.join(work, "delta"), recoveredDir = path.join(work, "recovered"), torchDir = path.join(work, "torch-recovered");
  mkdirSync(baseDir); mkdirSync(targetDir);
  const tensors = llamaTensors(layers);
  const modelBytes = tensors.reduce((sum, t) => sum + t.bytes, 0);
  // Base, target, delta, recovered target, and one more copy (I/O floor or PyTorch's output).
  const { bavail, bsize } = statfsSync(work);
  if (bavail * bsize < 5.2 * modelBytes) {
    throw new Error(`the bench needs about ${(5.2 * modelBytes / GB).toFixed(0)} GB free in ${tmpdir()}, there are ${(bavail * bsize / GB).toFixed(0)} GB (set TMPDIR elsewhere, or fewer --layers)`);
  }
  console.log(`delta-weights bench: LLaMA-7B-shaped F16 model, ${layers} layers, ${(modelBytes / GB).toFixed(2)} GB per model, in ${work}`);
  let start = performance.now();
  writeModels(baseDir, targetDir, tensors);
  console.log(`generated base and target in ${fmt.s((performance.now() - start) / 1000)}`);

  const baseFiles = filesIn(baseDir, isWeights), targetFiles = filesIn(targetDir, isWeights);

  const node = process.execPath;
  const rows = [];

  let make, makeFloor, apply, applyFloor, exact = true, torchRow;
  if (!xorOnly) {
    // make-delta
    ({ run: make, floor: makeFloor } = repeated("make-delta", deltaDir, [baseDir, targetDir], () =>
      run(node, [path.join(root, "bin/make-delta"), "--base", baseDir, "--target", targetDir, "--delta", deltaDir, "--no-progress", "--json"], { label: "make-delta" }),
    () => ioFloor([...baseFiles, ...targetFiles], filesIn(deltaDir), path.join(work, "floor"))));
    const deltaFiles = filesIn(deltaDir);
    // make-delta hashes the target twice (each tensor, each file), every base tensor and every delta file; subtracts every element.
    const makeWork = { hashed: 2 * totalBytes(targetFiles) + modelBytes + totalBytes(deltaFiles), kernel: "subIntoWithFixups", dtype: "F16", elements: modelBytes / 2 };
    rows.push({ name: "make-delta", run: make, out: totalBytes(deltaFiles), floor: makeFloor, work: makeWork });

    // apply-delta (full verification: delta files, base tensors, every output tensor and file)
    const deltaWeights = filesIn(deltaDir, isWeights);
    ({ run: apply, floor: applyFloor } = repeated("apply-delta", recoveredDir, [baseDir, deltaDir], () =>
      run(node, [path.join(root, "bin/apply-delta"), "--base", baseDir, "--delta", deltaDir, "--target", recoveredDir, "--no-progress", "--json"], { label: "apply-delta" }),
    () => ioFloor([...baseFiles, ...deltaWeights], filesIn(recoveredDir, isWeights), path.join(work, "floor"))));
    const recoveredFiles = filesIn(recoveredDir, isWeights);
    // apply-delta hashes every base tensor and every output file (outputs that match prove the delta intact); adds every element.
    const applyWork = { hashed: modelBytes + totalBytes(recoveredFiles), kernel: "add", dtype: "F16", elements: modelBytes / 2 };
    rows.push({ name: "apply-delta", run: apply, out: totalBytes(recoveredFiles), floor: applyFloor, work: applyWork });

    // Byte-exact: every target file, sha256 against the original target.
    for (const file of filesIn(targetDir)) {
      const other = path.join(recoveredDir, path.basename(file));
      if (!existsSync(other) || sha256(file) !== sha256(other)) {
        exact = false;
        console.log(`MISMATCH: ${path.basename(file)}`);
      }
    }

    // PyTorch, FastChat-style shard by shard (verifies nothing).
    const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    const hasTorch = spawnSync(python, ["-c", "import torch"], { stdio: "ignore" }).status === 0;
    if (hasTorch) {
      run("sh", ["-c", `cat '${baseDir}'/* '${deltaDir}'/* > /dev/null`]);
      const torchRun = run(python, [path.join(root, "scripts/torch-apply-bench.py"), baseDir, deltaDir, torchDir], { label: "pytorch apply" });
      // PyTorch (like FastChat) leaves its output in the page cache; delta-weights
      // fsyncs every file before renaming it. Also show PyTorch with its files fsynced.
      const torchFiles = filesIn(torchDir, isWeights);
      const torchSync = run("sync", torchFiles, { label: "sync" });
      torchRow = { name: "pytorch apply", run: torchRun, out: totalBytes(torchFiles), floor: applyFloor };
      rows.push(torchRow);
      rows.push({ name: "  + fsync", run: { seconds: torchRun.seconds + torchSync.seconds, rss: torchRun.rss }, out: torchRow.out, floor: applyFloor });
      torchRow.synced = torchRun.seconds + torchSync.seconds;
      rmSync(torchDir, { recursive: true, force: true });
    }
  }

  // An XOR payload (Open-Assistant / Pygmalion), checked against a sha256sum list of the target.
  const payloadDir = path.join(work, "xor-payload"), xorOutDir = path.join(work, "xor-recovered"), sums = path.join(work, "SHA256SUMS");
  writeXorPayload(baseDir, targetDir, payloadDir);
  writeFileSync(sums, filesIn(targetDir).map((f) => `${sha256(f)}  ${path.basename(f)}\n`).join(""));
  const { run: xor, floor: xorFloor } = repeated("xor apply", xorOutDir, [baseDir, payloadDir], () =>
    run(node, [path.join(root, "bin/apply-delta"), "--base", baseDir, "--delta", payloadDir, "--target", xorOutDir, "--checksums", sums, "--no-progress", "--json"], { label: "apply-delta (XOR payload)" }),
  () => ioFloor([...filesIn(baseDir), ...filesIn(payloadDir)], filesIn(xorOutDir), path.join(work, "floor")));
  const xorOutputs = filesIn(xorOutDir);
  // The XOR apply hashes every output file (the sums list names the target's files) and XORs every byte.
  const xorWork = { hashed: totalBytes(xorOutputs), kernel: "xor", dtype: "F16", elements: totalBytes(xorOutputs) / 2 };
  rows.push({ name: "xor apply", run: xor, out: totalBytes(xorOutputs), floor: xorFloor, work: xorWork });
  let xorVerified = "unknown";
  try {
    const doc = JSON.parse(xor.stdout);
    xorVerified = doc.convention === "xor" && doc.verified === true ? "verified" : `NOT verified (${doc.convention})`;
  } catch {
    // not JSON: the byte check below still holds
  }
  let xorExact = true;
  for (const file of filesIn(targetDir)) {
    const other = path.join(xorOutDir, path.basename(file));
    if (!existsSync(other) || sha256(file) !== sha256(other)) {
      xorExact = false;
      console.log(`MISMATCH (xor): ${path.basename(file)}`);
    }
  }
  rmSync(xorOutDir, { recursive: true, force: true });

  // The published conventions (legacy deltas: unverified without a list; time and memory only).
  if (conventions) {
    for (const convention of PUBLISHED_CONVENTIONS) {
      const conventionDelta = path.join(work, `delta-${convention.name}`), conventionOut = path.join(work, `out-${convention.name}`);
      writeConventionDelta(convention, tensors, baseDir, conventionDelta);
      run("sync", []);
      run("sh", ["-c", `cat '${baseDir}'/* '${conventionDelta}'/* > /dev/null`]);
      const conventionRun = run(node, [path.join(root, "bin/apply-delta"), "--base", baseDir, "--delta", conventionDelta, "--target", conventionOut, "--convention", convention.name, "--no-progress", "--json"], { label: `apply-delta (${convention.name})` });
      rows.push({ name: convention.name, run: conventionRun, out: totalBytes(filesIn(conventionOut, isWeights)) });
      rmSync(conventionOut, { recursive: true, force: true });
      rmSync(conventionDelta, { recursive: true, force: true });
    }
  }
  const kernels = await measureKernels();
  const rates = { sha256: sha256PerCpuSecond(), kernels, cores: availableParallelism() };
  console.log("");
  console.log(["", "wall", "output", "rate", "peak RSS", "CPU used", "I/O floor", "CPU floor", "vs floor"].map((h, i) => (i === 0 ? h.padEnd(14) : h.padStart(11))).join(""));
  for (const row of rows) {
    const cpu = cpuFloor(row.work, rates);
    // The ratio is to the larger floor: the run cannot beat either.
    const floor = row.floor === undefined ? undefined : Math.max(row.floor.total, cpu?.seconds ?? 0);
    console.log([
      row.name.padEnd(14),
      fmt.s(row.run.seconds).padStart(11),
      `${(row.out / GB).toFixed(2)} GB`.padStart(11),
      fmt.gbs(row.out, row.run.seconds).padStart(11),
      fmt.mb(row.run.rss).padStart(11),
      (row.run.cpu === undefined ? "n/a" : fmt.s(row.run.cpu)).padStart(11),
      (row.floor === undefined ? "-" : fmt.s(row.floor.total)).padStart(11),
      (cpu === undefined ? "-" : fmt.s(cpu.seconds)).padStart(11),
      (floor === undefined ? "-" : fmt.x(row.run.seconds / floor)).padStart(11),
    ].join(""));
  }
  console.log(`CPU used: user + system seconds of every thread of the run (divided by ${rates.cores} cores, the least wall time that work can take). CPU floor on ${rates.cores} cores: SHA-256 at ${(rates.sha256 / 1e6).toFixed(0)} MB/s per core (measured here) of every byte the run must hash, plus its kernel at the rate below; ` +
    rows.filter((row) => row.work !== undefined).map((row) => `${row.name} hashes ${(row.work.hashed / GB).toFixed(2)} GB + ${row.work.kernel} ${row.work.dtype} on ${(row.work.elements / 1e9).toFixed(2)} G elements (${fmt.s(cpuFloor(row.work, rates).kernelSeconds)})`).join("; "));
  if (!xorOnly) {
    console.log(`I/O floor: make = cat ${fmt.s(makeFloor.read)} + write ${fmt.s(makeFloor.write)}; apply = cat ${fmt.s(applyFloor.read)} + write ${fmt.s(applyFloor.write)} (page cache warm, outputs fsynced as delta-weights does)`);
    console.log(`  the same writes without fsync (left in the page cache): make ${fmt.s(makeFloor.cached)}, apply ${fmt.s(applyFloor.cached)}; past the page cache (O_DIRECT, fsynced): make ${fmt.s(makeFloor.direct)}, apply ${fmt.s(applyFloor.direct)}`);
    let verified = "unknown";
    try {
      verified = JSON.parse(apply.stdout).verified === true ? "verified" : "NOT verified";
    } catch {
      // an older or newer CLI without --json: the sha256 check below still holds
    }
    console.log(`apply-delta says: ${verified}; output byte-exact (sha256 of every file equals the target's): ${exact ? "yes" : "NO"}`);
    if (torchRow) {
      console.log(`apply-delta (verified, fsynced) / PyTorch FastChat-style apply (unverified): ${fmt.x(apply.seconds / torchRow.run.seconds)} of PyTorch's time; ${fmt.x(apply.seconds / torchRow.synced)} of PyTorch's with its outputs fsynced`);
    } else {
      console.log("PyTorch comparison skipped: python3 cannot import torch (apt-get install python3-torch)");
    }
  }
  console.log(`I/O floor: xor = cat ${fmt.s(xorFloor.read)} (base and payload) + write ${fmt.s(xorFloor.write)}; without fsync ${fmt.s(xorFloor.cached)}; O_DIRECT ${fmt.s(xorFloor.direct)}`);
  console.log(`xor apply says: ${xorVerified}; output byte-exact: ${xorExact ? "yes" : "NO"}`);
  for (const line of repeatSummaries) console.log(line);
  if (!hasGnuTime) console.log("peak RSS not measured: /usr/bin/time is missing (apt-get install time)");

  console.log("\nkernels, one core (G elements/s):");
  for (const row of kernels) {
    console.log(`  ${row.kernel.padEnd(24)}${row.dtype.padEnd(6)}${row.gElementsPerSecond.toFixed(2)}`);
  }
  const { kernelImplementation } = await dist("kernels/index.js");
  console.log(`  (${kernelImplementation} kernels; tiles copied in and out of WebAssembly memory are included)`);
  if (!exact || !xorExact) process.exitCode = 1;
} finally {
  cleanup();
}
