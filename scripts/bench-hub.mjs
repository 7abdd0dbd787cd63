#!/usr/bin/env node
// npm run bench -- --hub [--per-connection MB/s] [--total MB/s] [--connections N] [--range-mb N] [--rounds N] [--skip-single] [--skip-no-cache] [--only-base-local]
// (or node scripts/bench-hub.mjs ..., after `npm run build`)
//
// Measures recovering a model from the Hub against a loopback "Hub" that
// lives in this script (a child process). It serves two repos generated once
// under .bench/hub/: a LLaMA-7B-shaped base of about 1.3 GB (two 32001x4096
// F16 embeddings and two full 4096/11008 layers in two safetensors shards
// with an index, plus config and tokenizer files) and the delta make-delta
// makes of a fine-tune of it (about as large), through the endpoints our
// client calls: model info with the commit sha, the recursive tree listing
// with LFS sha256s and sizes, and resolve, which redirects LFS files to a
// "CDN" path answering Range requests with 206. Every connection is capped
// (40 MB/s by default) and so is the server as a whole (400 MB/s), like a CDN
// edge and a home link.
//
// Each run is a fresh process with an empty HF cache:
//   single connection:   both repos, one request per file, one file at a time
//                        (the behaviour before parallel downloads)
//   ours, download only: both repos at once, the library's defaults
//   time to verified:    apply-delta from the two repo ids: downloads, apply
//                        while downloading, every output checked
//   --no-cache-delta:    the same, keeping no copy of the delta (and the most of
//                        it on disk at once, sampled)
//   apply only:          apply-delta from the cached snapshots (no network)
//   base local:          apply-delta from a local base and the delta's repo id, the
//                        issue's row: time to a verified model against its floor, the
//                        larger of the delta's bytes at the total cap and the output
//                        written at the disk's fsynced rate; the client's and the
//                        loopback server's CPU-seconds (every thread), peak RSS.
//                        Then the same with --no-cache-delta (unless --skip-no-cache).
//                        --only-base-local runs only these rows.
// and prints wall time, MB/s, the fraction of the total cap and peak RSS,
// and the ratio of time to a verified model over the download alone, and over
// its disk floor (cache and target written at the disk's fsynced rate, measured
// first with dd): when the download fills the disk, the target cannot be
// written for free.
//
// Profiling the base-local rows: BENCH_HUB_CLIENT_NODE_ARGS (space-separated) is
// passed to the client's node (--cpu-prof, --perf-basic-prof-only-functions,
// --trace-gc); BENCH_HUB_TIMELINE=1 makes the client print to stderr, every
// 250 ms, the delta and output bytes on disk and each thread's CPU-seconds, and
// at its end each thread's total.
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { mkdirSync, existsSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync, openSync, writeSync, closeSync } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { numberFlags } from "./bench-flags.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const benchDir = path.join(root, ".bench", "hub");
const filesDir = path.join(benchDir, "files");
const MB = 1e6;
const BASE_REPO = "bench/llama-7b-shaped";
const DELTA_REPO = "bench/llama-7b-shaped-delta";
const COMMITS = { [BASE_REPO]: "0123456789abcdef0123456789abcdef01234567", [DELTA_REPO]: "89abcdef0123456789abcdef0123456789abcdef" };

const args = process.argv.slice(2);
const flag = numberFlags(args, "node scripts/bench-hub.mjs [--per-connection MB/s] [--total MB/s] [--connections N] [--range-mb N] [--rounds N] [--skip-single] [--skip-no-cache] [--only-base-local]");

// ---------------------------------------------------------------------------
// Orchestration

async function main() {
  const perConnection = flag("--per-connection", 40) * MB;
  const total = flag("--total", 400) * MB;
  const connections = args.includes("--connections") ? flag("--connections", 16) : undefined;
  const rangeBytes = args.includes("--range-mb") ? Math.round(flag("--range-mb", 32) * 1024 * 1024) : undefined;
  const rounds = flag("--rounds", 1);
  if (!existsSync(path.join(root, "dist", "api.js"))) {
    console.error("run `npm run build` first: the bench uses dist/");
    process.exit(2);
  }
  const repos = await ensureRepos();
  const bytes = [repos[BASE_REPO], repos[DELTA_REPO]].reduce((n, r) => n + Object.values(r.files).reduce((m, f) => m + f.size, 0), 0);
  const outputBytes = Object.values(repos[BASE_REPO].files).reduce((m, f) => m + f.size, 0);
  const deltaBytes = Object.values(repos[DELTA_REPO].files).reduce((m, f) => m + f.size, 0);
  // The cache of one run at a time and its output, beside the files.
  needFree(bytes * 1.1 + outputBytes * 1.1, "for the downloaded copy and the recovered model");

  // The disk can be the limit: a verified model means the cache (base and delta) and the
  // target written and fsynced, and a download alone already writes the cache.
  const diskRate = diskWriteRate();
  const cacheFloor = bytes / diskRate;
  const verifiedFloor = (bytes + outputBytes) / diskRate;
  console.log(`disk: ${(diskRate / 1e6).toFixed(0)} MB/s fsynced writes; floors: download ${cacheFloor.toFixed(2)} s (cache), verified model ${verifiedFloor.toFixed(2)} s (cache + target), ratio ${(verifiedFloor / Math.max(cacheFloor, bytes / total)).toFixed(2)}x at this cap`);
  const server = await startServer({ perConnection, total, repos });
  const transfer = { ...(connections !== undefined ? { connections } : {}), ...(rangeBytes !== undefined ? { rangeBytes } : {}) };
  try {
    console.log(`loopback Hub: ${BASE_REPO} and ${DELTA_REPO}, ${(bytes / 1e9).toFixed(2)} GB; cap ${perConnection / MB} MB/s per connection, ${total / MB} MB/s in total`);
    const line = (name, r) => console.log(
      `${name.padEnd(34)} ${r.seconds.toFixed(2).padStart(7)} s  ${((bytes / r.seconds) / MB).toFixed(0).padStart(4)} MB/s  ` +
        `${(((bytes / r.seconds) / total) * 100).toFixed(0).padStart(3)} % of the total cap  peak RSS ${(r.maxRSS / 1024).toFixed(0)} MB${cpu(r)}`);
    const cpu = (r) => (r.cpuSeconds === undefined ? "" : `  CPU ${r.cpuSeconds.toFixed(1)} s`);
    const baseLocalRow = async (noCacheDelta) => {
      const run = await runClient(server, { kind: "apply", transfer, baseDir: repos[BASE_REPO].dir, noCacheDelta, profile: true }, repos);
      const networkFloor = deltaBytes / total;
      const outputFloor = outputBytes / diskRate;
      const floor = Math.max(networkFloor, outputFloor);
      console.log(
        `base local, delta from the Hub${noCacheDelta ? " (--no-cache-delta)" : ""}: time to a verified model ${run.seconds.toFixed(2)} s; ` +
          `floor ${floor.toFixed(2)} s (delta ${(deltaBytes / 1e9).toFixed(2)} GB / ${total / MB} MB/s ${networkFloor.toFixed(2)} s, ` +
          `output ${(outputBytes / 1e9).toFixed(2)} GB fsynced at ${(diskRate / MB).toFixed(0)} MB/s ${outputFloor.toFixed(2)} s); ` +
          `${(run.seconds / floor).toFixed(2)}x (goal 1.3x); CPU-s client ${run.cpuSeconds?.toFixed(1) ?? "n/a"}, server ${run.serverCpuSeconds?.toFixed(1) ?? "n/a"}; ` +
          `peak RSS ${run.maxRSS === undefined ? "n/a" : `${(run.maxRSS / 1024).toFixed(0)} MB`}`,
      );
    };
    for (let round = 0; round < rounds; round++) {
      if (args.includes("--only-base-local")) {
        await warmBase(repos[BASE_REPO]);
        await baseLocalRow(false);
        if (!args.includes("--skip-no-cache")) await baseLocalRow(true);
        continue;
      }
      if (!args.includes("--skip-single")) line("single connection, download only", await runClient(server, { kind: "download", transfer: { connections: 1, rangeBytes: Number.MAX_SAFE_INTEGER }, sequential: true }));
      const download = await runClient(server, { kind: "download", transfer });
      line(`ours (${connections ?? "default"} connections), download`, download);
      const verified = await runClient(server, { kind: "apply", transfer, keepCache: true }, repos);
      line("ours, time to a verified model", verified);
      const applyOnly = await runClient(server, { kind: "apply", transfer, offline: true, reuseCache: true }, repos);
      console.log(`${"apply only (cached, offline)".padEnd(34)} ${applyOnly.seconds.toFixed(2).padStart(7)} s  ${" ".repeat(40)}peak RSS ${(applyOnly.maxRSS / 1024).toFixed(0)} MB${cpu(applyOnly)}`);
      console.log(`time to a verified model / download alone: ${(verified.seconds / download.seconds).toFixed(2)}x (target 1.15x); apply alone ${applyOnly.seconds.toFixed(2)} s`);
      console.log(`time to a verified model / its disk floor (${verifiedFloor.toFixed(2)} s): ${(verified.seconds / verifiedFloor).toFixed(2)}x`);
      if (!args.includes("--skip-no-cache")) {
        const streamed = await runClient(server, { kind: "apply", transfer, noCacheDelta: true }, repos);
        line("ours, --no-cache-delta, verified", streamed);
        console.log(`${"  delta on disk at most".padEnd(34)} ${(streamed.peakScratch / 1e6).toFixed(0).padStart(7)} MB of ${(deltaBytes / 1e6).toFixed(0)} MB (sampled every 50 ms)`);
      }
      await warmBase(repos[BASE_REPO]);
      await baseLocalRow(false);
      if (!args.includes("--skip-no-cache")) await baseLocalRow(true);
    }
  } finally {
    server.child.kill();
    rmSync(path.join(benchDir, "cache"), { recursive: true, force: true });
    rmSync(path.join(benchDir, "out"), { recursive: true, force: true });
  }
}

/** Bytes per second this disk takes, fsynced (1 GB through dd, as the local bench's I/O floor does). */
function diskWriteRate() {
  const file = path.join(benchDir, "disk-rate.tmp");
  const started = performance.now();
  const dd = spawnSync("dd", ["if=/dev/zero", `of=${file}`, "bs=16M", "count=64", "conv=fdatasync", "status=none"]);
  const seconds = (performance.now() - started) / 1000;
  rmSync(file, { force: true });
  if (dd.status !== 0) throw new Error(`dd failed: ${dd.stderr}`);
  return (64 * 16 * 1024 * 1024) / seconds;
}

function needFree(bytes, why) {
  mkdirSync(benchDir, { recursive: true });
  const fs = statfsSync(benchDir);
  const free = fs.bavail * fs.bsize;
  if (free < bytes) {
    console.error(`not enough free space in ${benchDir} ${why}: ${(bytes / 1e9).toFixed(2)} GB needed, ${(free / 1e9).toFixed(2)} GB free`);
    process.exit(1);
  }
}

function startServer(config) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--serve", JSON.stringify(config)], { stdio: ["ignore", "pipe", "inherit"] });
    child.stdout.once("data", (d) => resolve({ child, url: d.toString().trim() }));
    child.once("exit", (code) => reject(new Error(`bench server exited (${code})`)));
  });
}

/** CPU-seconds (user + system, every thread) a process has used so far, from /proc; undefined elsewhere. */
function processCpuSeconds(pid) {
  try {
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ").pop().split(" ");
    return (Number(fields[11]) + Number(fields[12])) / clockTicks();
  } catch {
    return undefined;
  }
}

/** CPU-seconds of each live thread of this process, by id and name (Linux only; else none). */
function threadCpuSeconds() {
  try {
    return readdirSync("/proc/self/task").map((id) => {
      const stat = readFileSync(`/proc/self/task/${id}/stat`, "utf8");
      const fields = stat.split(") ").pop().split(" ");
      return { id, name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), seconds: (Number(fields[11]) + Number(fields[12])) / clockTicks() };
    });
  } catch {
    return [];
  }
}

let ticks;
function clockTicks() {
  ticks ??= Number(spawnSync("getconf", ["CLK_TCK"]).stdout?.toString().trim()) || 100;
  return ticks;
}

/** Reads the base's files once, so the base-local rows start, as the floor assumes, with them in the page cache. */
async function warmBase(repo) {
  for (const name of Object.keys(repo.files)) await sha256OfFile(path.join(repo.dir, name));
}

async function runClient(server, job, repos) {
  const hubUrl = server.url;
  const serverBefore = processCpuSeconds(server.child.pid);
  const cacheDir = path.join(benchDir, "cache");
  const out = path.join(benchDir, "out");
  if (job.reuseCache !== true) rmSync(cacheDir, { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
  try {
    // Peak RSS from GNU time when there is one: a child's own getrusage can report the
    // high-water mark it inherited from this process at fork.
    const timeFile = path.join(benchDir, "client-time.txt");
    const gnuTime = existsSync("/usr/bin/time");
    const nodeArgs = job.profile === true ? (process.env.BENCH_HUB_CLIENT_NODE_ARGS ?? "").split(" ").filter((a) => a !== "") : [];
    const argv = [process.execPath, ...nodeArgs, fileURLToPath(import.meta.url), "--client", JSON.stringify({ hubUrl, cacheDir, out, job })];
    const text = await new Promise((resolve, reject) => {
      const child = spawn(gnuTime ? "/usr/bin/time" : argv[0], gnuTime ? ["-f", "%M %U %S", "-o", timeFile, ...argv] : argv.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
      let stdout = "";
      child.stdout.on("data", (d) => { stdout += d; });
      child.once("exit", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${job.kind} failed (${code}): ${stdout}`))));
    });
    const result = JSON.parse(text);
    const serverAfter = processCpuSeconds(server.child.pid);
    if (serverBefore !== undefined && serverAfter !== undefined) result.serverCpuSeconds = serverAfter - serverBefore;
    if (gnuTime) {
      // Peak RSS in KB, then user and system CPU-seconds of every thread of the client.
      const [maxRSS, user, system] = readFileSync(timeFile, "utf8").trim().split("\n").pop().split(" ").map(Number);
      result.maxRSS = maxRSS;
      result.cpuSeconds = user + system;
      rmSync(timeFile, { force: true });
    }
    if (job.kind === "apply") {
      // Byte-exact: every recovered file is the fine-tune's (hashed in chunks: this process stays small).
      for (const [name, f] of Object.entries(repos.target)) {
        if (await sha256OfFile(path.join(out, name)) !== f.sha256) throw new Error(`the recovered ${name} differs from the fine-tune's`);
      }
      if (!result.verified) throw new Error("apply-delta did not say verified");
    }
    return result;
  } finally {
    if (job.keepCache !== true) rmSync(cacheDir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
}

async function sha256OfFile(file) {
  const hash = createHash("sha256");
  const handle = await open(file, "r");
  try {
    const buffer = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (let at = 0; ; ) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, at);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      at += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}

function diskBytes(dir) {
  let n = 0;
  let entries = [];
  try {
    entries = readdirSync(dir, { recursive: true, withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (!e.isFile()) continue;
    try {
      n += statSync(path.join(e.parentPath, e.name)).blocks * 512;
    } catch {
      // deleted meanwhile
    }
  }
  return n;
}

async function client({ hubUrl, cacheDir, out, job }) {
  const started = performance.now();
  let verified;
  let peakScratch = 0;
  if (job.kind === "download") {
    const { downloadSnapshot } = await import(pathToFileURL(path.join(root, "dist", "hub", "huggingface", "download.js")).href);
    const one = (repo) => downloadSnapshot({ repo, revision: "main" }, { cacheDir, hubUrl, select: repo === DELTA_REPO ? "delta" : "model", ...job.transfer });
    if (job.sequential) for (const repo of [DELTA_REPO, BASE_REPO]) await one(repo);
    else await Promise.all([one(DELTA_REPO), one(BASE_REPO)]);
  } else {
    const { applyDelta } = await import(pathToFileURL(path.join(root, "dist", "api.js")).href);
    const { enableChunkCollections } = await import(pathToFileURL(path.join(root, "dist", "io", "memory.js")).href);
    enableChunkCollections(); // as the CLI does
    // --no-cache-delta: how much of the delta is on disk, sampled (allocated blocks: partial downloads are sparse).
    const scratch = path.join(out, ".delta-weights-download");
    const sampler = job.noCacheDelta === true ? setInterval(() => { peakScratch = Math.max(peakScratch, diskBytes(scratch)); }, 50) : undefined;
    // BENCH_HUB_TIMELINE=1: every 250 ms, how much of the delta is on disk and how much output (to stderr).
    const timeline = process.env.BENCH_HUB_TIMELINE === "1" && job.profile === true
      ? setInterval(() => console.error(`timeline ${((performance.now() - started) / 1000).toFixed(2)} s: delta ${(diskBytes(job.noCacheDelta === true ? scratch : cacheDir) / 1e6).toFixed(0)} MB, output ${(diskBytes(out) / 1e6 - diskBytes(scratch) / 1e6).toFixed(0)} MB; threads' CPU-s ${threadCpuSeconds().map((t) => t.seconds.toFixed(2)).join(" ")}`), 250)
      : undefined;
    try {
      const result = await applyDelta({
        base: job.baseDir ?? BASE_REPO, delta: DELTA_REPO, target: out, cacheDir, hubUrl, offline: job.offline === true, transfer: job.transfer,
        ...(job.noCacheDelta === true ? { cacheDelta: false } : {}),
        ...(job.threads !== undefined ? { threads: job.threads } : {}),
      });
      verified = result.verified;
    } finally {
      clearInterval(sampler);
      clearInterval(timeline);
    }
    if (process.env.BENCH_HUB_TIMELINE === "1" && job.profile === true) {
      // CPU-seconds of each thread of this process, by name (Linux only).
      for (const t of threadCpuSeconds()) console.error(`thread ${t.id} ${t.name}: ${t.seconds.toFixed(2)} CPU-s`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(JSON.stringify({ seconds, maxRSS: process.resourceUsage().maxRSS, verified, peakScratch }));
}

// ---------------------------------------------------------------------------
// The repos: a LLaMA-7B-shaped base (its first two layers), a fine-tune, and the delta

function llamaTensors(layers) {
  const hidden = 4096, intermediate = 11008, vocab = 32001;
  const tensors = [{ name: "model.embed_tokens.weight", shape: [vocab, hidden] }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`;
    for (const proj of ["q_proj", "k_proj", "v_proj", "o_proj"]) tensors.push({ name: `${p}self_attn.${proj}.weight`, shape: [hidden, hidden] });
    tensors.push({ name: `${p}mlp.gate_proj.weight`, shape: [intermediate, hidden] });
    tensors.push({ name: `${p}mlp.up_proj.weight`, shape: [intermediate, hidden] });
    tensors.push({ name: `${p}mlp.down_proj.weight`, shape: [hidden, intermediate] });
    tensors.push({ name: `${p}input_layernorm.weight`, shape: [hidden] });
    tensors.push({ name: `${p}post_attention_layernorm.weight`, shape: [hidden] });
  }
  tensors.push({ name: "model.norm.weight", shape: [hidden] });
  tensors.push({ name: "lm_head.weight", shape: [vocab, hidden] });
  return tensors.map((t) => ({ ...t, dtype: "F16", bytes: t.shape.reduce((a, b) => a * b, 1) * 2 }));
}

/** Which files a repo directory holds, for the server: size, and sha256 (LFS) or git blob id. */
function describeRepo(dir) {
  const files = {};
  for (const name of readdirSync(dir)) {
    const bytes = readFileSync(path.join(dir, name));
    const lfs = name.endsWith(".safetensors") || name === "tokenizer.model";
    files[name] = lfs
      ? { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex"), lfs: true }
      : { size: bytes.length, oid: createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex"), lfs: false };
  }
  return { dir, files };
}

async function ensureRepos() {
  const manifestPath = path.join(benchDir, "repos.json");
  if (existsSync(manifestPath)) {
    const repos = JSON.parse(readFileSync(manifestPath, "utf8"));
    const intact = [BASE_REPO, DELTA_REPO].every((r) => Object.entries(repos[r].files).every(([name, f]) => existsSync(path.join(repos[r].dir, name)) && statSync(path.join(repos[r].dir, name)).size === f.size));
    if (intact) return repos;
  }
  needFree(4.5e9, "for the base, the fine-tune and the delta");
  rmSync(filesDir, { recursive: true, force: true });
  console.log(`generating the base, a fine-tune and its delta under ${path.relative(root, filesDir)} (once)...`);
  const dist = (file) => import(pathToFileURL(path.join(root, "dist", file)).href);
  const { encodeHeader } = await dist("safetensors/header.js");
  const { convertInto, addInto } = await dist("kernels/index.js");
  const { makeDelta } = await dist("delta/own/make-delta.js");
  const tensors = llamaTensors(2);
  const shards = [[], []];
  let size = 0;
  for (const t of tensors) {
    shards[size + t.bytes > 1e9 ? 1 : 0].push(t);
    size += t.bytes;
  }
  // Weights like a model's (small normals in F16) and a fine-tune's (1e-3 relative steps), rounded as torch would.
  let seed = 12345;
  const random = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32; };
  const f32 = new Float32Array(4 * 1024 * 1024);
  const fill = (scale) => { for (let i = 0; i < f32.length; i++) f32[i] = (random() - 0.5) * 2 * scale; };
  const weightMap = {};
  for (const kind of ["base", "target"]) {
    const dir = path.join(filesDir, kind);
    mkdirSync(dir, { recursive: true });
    seed = 12345;
    let noiseSeed = 777;
    shards.forEach((shard, s) => {
      const name = `model-0000${s + 1}-of-00002.safetensors`;
      const header = encodeHeader(shard, { format: "pt" });
      const fd = openSync(path.join(dir, name), "w");
      writeSync(fd, header.bytes);
      for (const t of header.tensors) {
        weightMap[t.name] = name;
        for (let done = 0; done < t.end - t.begin; ) {
          const n = Math.min(f32.length * 2, t.end - t.begin - done);
          fill(0.02);
          const half = new Uint8Array(n);
          convertInto("F32", "F16", new Uint8Array(f32.buffer, 0, n * 2), half);
          if (kind === "target") {
            const keep = seed;
            seed = noiseSeed;
            fill(0.02 * 1e-2);
            noiseSeed = seed;
            seed = keep;
            const noise = new Uint8Array(n);
            convertInto("F32", "F16", new Uint8Array(f32.buffer, 0, n * 2), noise);
            addInto("F16", half, noise, half);
          }
          writeSync(fd, half);
          done += n;
        }
      }
      closeSync(fd);
    });
    const small = {
      "config.json": JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: 4096, intermediate_size: 11008, num_attention_heads: 32, num_hidden_layers: 2, vocab_size: 32001, torch_dtype: "float16" }, null, 2),
      "generation_config.json": JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2),
      "special_tokens_map.json": JSON.stringify({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }, null, 2),
      "tokenizer_config.json": JSON.stringify({ model_max_length: 2048, tokenizer_class: "LlamaTokenizer" }, null, 2),
      "model.safetensors.index.json": JSON.stringify({ metadata: { total_size: size }, weight_map: weightMap }, null, 2),
    };
    for (const [name, text] of Object.entries(small)) writeFileSync(path.join(dir, name), text);
    let tokSeed = 99;
    const tokenizer = Buffer.alloc(499_723, 0).map(() => { tokSeed = (tokSeed * 1103515245 + 12345) >>> 0; return tokSeed >>> 24; });
    writeFileSync(path.join(dir, "tokenizer.model"), tokenizer);
  }
  await makeDelta({ base: path.join(filesDir, "base"), target: path.join(filesDir, "target"), delta: path.join(filesDir, "delta") });
  const repos = {
    [BASE_REPO]: describeRepo(path.join(filesDir, "base")),
    [DELTA_REPO]: describeRepo(path.join(filesDir, "delta")),
    target: Object.fromEntries(Object.entries(describeRepo(path.join(filesDir, "target")).files).map(([name]) => [name, { sha256: createHash("sha256").update(readFileSync(path.join(filesDir, "target", name))).digest("hex") }])),
  };
  rmSync(path.join(filesDir, "target"), { recursive: true, force: true }); // only its hashes are needed
  writeFileSync(manifestPath, JSON.stringify(repos, null, 2));
  return repos;
}

// ---------------------------------------------------------------------------
// The loopback Hub (runs in its own process)

/** A token bucket that may go into debt: take() says how long to wait before sending. */
class Bucket {
  constructor(rate, burst) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.at = performance.now();
  }
  take(bytes) {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }
}

async function serve({ perConnection, total, repos }) {
  const SLICE = 256 * 1024;
  const global = new Bucket(total, SLICE * 4);
  // Slices whose write finished, for the next read (a loopback CDN should cost the client's cores as little as it can).
  const spare = [];
  const MAX_SPARE = 64;
  const perSocket = new WeakMap();
  const bySha = new Map();
  for (const repo of [BASE_REPO, DELTA_REPO]) for (const [name, f] of Object.entries(repos[repo].files)) if (f.lfs) bySha.set(f.sha256, { repo, name });
  const handles = new Map();
  // One descriptor per file, kept for the server's life. The promise is cached, not the
  // handle: two requests racing for a file would otherwise each open one, and the one
  // overwritten would be closed by the garbage collector with a warning.
  const handleOf = (file) => {
    const key = path.join(file.repo.dir, file.name);
    if (!handles.has(key)) handles.set(key, open(key, "r"));
    return handles.get(key);
  };
  const json = (res, body) => {
    const text = JSON.stringify(body);
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function sendFile(req, res, repo, name) {
    const size = repo.files[name].size;
    let start = 0, end = size - 1, status = 200;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (m !== null) {
      start = Number(m[1]);
      end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
      if (start > end) {
        res.writeHead(416, { "Content-Range": `bytes */${size}` });
        res.end();
        return;
      }
      status = 206;
    }
    res.writeHead(status, {
      "Accept-Ranges": "bytes",
      "Content-Length": end - start + 1,
      ...(status === 206 ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
    });
    let bucket = perSocket.get(req.socket);
    if (bucket === undefined) perSocket.set(req.socket, (bucket = new Bucket(perConnection, SLICE)));
    const handle = await handleOf({ repo, name });
    for (let at = start; at <= end && !res.destroyed; ) {
      const n = Math.min(SLICE, end + 1 - at);
      const wait = Math.max(bucket.take(n), global.take(n));
      if (wait > 0) await sleep(wait);
      const buffer = spare.pop() ?? Buffer.allocUnsafeSlow(SLICE);
      const { bytesRead } = await handle.read(buffer, 0, n, at);
      at += bytesRead;
      // Reused once the socket has taken its bytes: the server's garbage would be CPU on the cores the client needs.
      const reuse = () => { if (spare.length < MAX_SPARE) spare.push(buffer); };
      if (!res.write(buffer.subarray(0, bytesRead), reuse)) {
        await new Promise((r) => {
          const go = () => { res.off("drain", go); res.off("close", go); r(); };
          res.on("drain", go);
          res.on("close", go);
        });
      }
    }
    res.end();
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const p = decodeURIComponent(url.pathname);
    (async () => {
      for (const id of [BASE_REPO, DELTA_REPO]) {
        const repo = repos[id];
        if (p === `/api/models/${id}/revision/main` || p === `/api/models/${id}`) {
          return json(res, { id, sha: COMMITS[id], siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })) });
        }
        if (p.startsWith(`/api/models/${id}/tree/`)) {
          return json(res, Object.entries(repo.files).map(([name, f]) => ({
            type: "file", path: name, size: f.size,
            oid: f.lfs ? createHash("sha1").update(name).digest("hex") : f.oid,
            ...(f.lfs ? { lfs: { oid: f.sha256, size: f.size, pointerSize: 134 } } : {}),
          })));
        }
        const resolve = new RegExp(`^/${id}/resolve/[^/]+/(.+)$`).exec(p);
        if (resolve !== null && repo.files[resolve[1]] !== undefined) {
          const f = repo.files[resolve[1]];
          if (f.lfs) {
            res.writeHead(302, { Location: `/cdn/${f.sha256}`, "X-Linked-Etag": `"${f.sha256}"`, "X-Linked-Size": String(f.size), "X-Repo-Commit": COMMITS[id], "Content-Length": 0 });
            return res.end();
          }
          return sendFile(req, res, repo, resolve[1]);
        }
      }
      const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(p);
      if (cdn !== null && bySha.has(cdn[1])) {
        const { repo, name } = bySha.get(cdn[1]);
        return sendFile(req, res, repos[repo], name);
      }
      res.writeHead(404, { "Content-Length": 0 });
      res.end();
    })().catch(() => res.destroy());
  });
  server.keepAliveTimeout = 30_000;
  server.listen(0, "127.0.0.1", () => process.stdout.write(`http://127.0.0.1:${server.address().port}\n`));
}

// (Dispatched last: classes above must be initialised first.)
if (args[0] === "--serve") await serve(JSON.parse(args[1]));
else if (args[0] === "--client") await client(JSON.parse(args[1]));
else await main();
