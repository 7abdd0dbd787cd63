#!/usr/bin/env node
// node scripts/bench-hub.mjs [--per-connection MB/s] [--total MB/s] [--connections N] [--range-mb N] [--rounds N] [--skip-single]
// (after `npm run build`)
//
// Measures Hub downloads against a loopback "Hub" that lives in this script
// (a child process): it serves a LLaMA-7B-shaped model of about 1.3 GB (two
// 32001x4096 F16 embeddings and two full 4096/11008 layers in two safetensors
// shards with an index, plus config and tokenizer files, generated once under
// .bench/hub/) through the endpoints our client calls: model info with the
// commit sha, the recursive tree listing with LFS sha256s and sizes, and
// resolve, which redirects LFS files to a "CDN" path answering Range
// requests with 206. Every connection is capped (40 MB/s by default) and so
// is the server as a whole (400 MB/s), like a CDN edge and a home link.
//
// Each download runs in a fresh process into an empty HF cache:
//   single connection: one request per file, one file at a time (the
//                      behaviour before parallel downloads)
//   ours:              the library's defaults (8 connections, ranges)
// and prints wall time, MB/s, the fraction of the total cap reached and the
// process's peak RSS. Downloaded bytes are verified by the library (sha256).
import { spawn } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { createServer } from "node:http";
import { mkdirSync, existsSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync, openSync, writeSync, closeSync } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const benchDir = path.join(root, ".bench", "hub");
const filesDir = path.join(benchDir, "files");
const MB = 1e6;
const REPO = "bench/llama-7b-shaped";
const COMMIT = "0123456789abcdef0123456789abcdef01234567";

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  if (i === -1) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isFinite(value) || value <= 0) {
    console.error(`usage: node scripts/bench-hub.mjs [--per-connection MB/s] [--total MB/s] [--connections N] [--range-mb N] [--rounds N] [--skip-single]\n${name} needs a positive number`);
    process.exit(2);
  }
  return value;
};

// ---------------------------------------------------------------------------
// Orchestration

async function main() {
  const perConnection = flag("--per-connection", 40) * MB;
  const total = flag("--total", 400) * MB;
  const connections = args.includes("--connections") ? flag("--connections", 8) : undefined;
  const rangeBytes = args.includes("--range-mb") ? Math.round(flag("--range-mb", 32) * 1024 * 1024) : undefined;
  const rounds = flag("--rounds", 1);
  if (!existsSync(path.join(root, "dist", "hub", "download.js"))) {
    console.error("run `npm run build` first: the bench uses dist/");
    process.exit(2);
  }
  const manifest = await ensureFiles();
  const bytes = Object.values(manifest.files).reduce((n, f) => n + f.size, 0);
  // The cache of one run at a time, beside the files.
  needFree(bytes * 1.1, "for the downloaded copy");

  const server = await startServer({ perConnection, total, manifest });
  try {
    console.log(`loopback Hub: ${Object.keys(manifest.files).length} files, ${(bytes / 1e9).toFixed(2)} GB; cap ${perConnection / MB} MB/s per connection, ${total / MB} MB/s in total`);
    const runs = [
      ...(args.includes("--skip-single") ? [] : [{ name: "single connection", options: { connections: 1, rangeBytes: Number.MAX_SAFE_INTEGER } }]),
      { name: `ours (${connections ?? "default"} connections${rangeBytes !== undefined ? `, ${rangeBytes / 1024 / 1024} MiB ranges` : ""})`, options: { ...(connections !== undefined ? { connections } : {}), ...(rangeBytes !== undefined ? { rangeBytes } : {}) } },
    ];
    for (let round = 0; round < rounds; round++) {
      for (const run of runs) {
        const result = await runClient(server.url, run.options);
        const rate = bytes / result.seconds;
        console.log(
          `${run.name.padEnd(36)} ${result.seconds.toFixed(2).padStart(7)} s  ${(rate / MB).toFixed(0).padStart(4)} MB/s  ` +
            `${((rate / total) * 100).toFixed(0).padStart(3)} % of the total cap  peak RSS ${(result.maxRSS / 1024).toFixed(0)} MB`,
        );
      }
    }
  } finally {
    server.child.kill();
  }
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

async function runClient(hubUrl, options) {
  const cacheDir = path.join(benchDir, "cache");
  rmSync(cacheDir, { recursive: true, force: true });
  try {
    const out = await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--client", JSON.stringify({ hubUrl, cacheDir, options })], { stdio: ["ignore", "pipe", "inherit"] });
      let text = "";
      child.stdout.on("data", (d) => { text += d; });
      child.once("exit", (code) => (code === 0 ? resolve(text) : reject(new Error(`download failed (${code}): ${text}`))));
    });
    return JSON.parse(out);
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

async function client({ hubUrl, cacheDir, options }) {
  const { downloadSnapshot } = await import(pathToFileURL(path.join(root, "dist", "hub", "download.js")).href);
  const started = performance.now();
  await downloadSnapshot({ repo: REPO, revision: "main" }, { cacheDir, hubUrl, ...options });
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(JSON.stringify({ seconds, maxRSS: process.resourceUsage().maxRSS }));
}

// ---------------------------------------------------------------------------
// The model: safetensors shards shaped like LLaMA-7B's first two layers

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

function ensureFiles() {
  const manifestPath = path.join(benchDir, "manifest.json");
  if (existsSync(manifestPath)) {
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
    const intact = Object.entries(manifest.files).every(([name, f]) => existsSync(path.join(filesDir, name)) && statSync(path.join(filesDir, name)).size === f.size);
    if (intact) return manifest;
  }
  needFree(1.5e9, "for the model files");
  rmSync(filesDir, { recursive: true, force: true });
  mkdirSync(filesDir, { recursive: true });
  console.log(`generating the model under ${path.relative(root, filesDir)} (once)...`);
  return import(pathToFileURL(path.join(root, "dist", "safetensors", "header.js")).href).then(({ encodeHeader }) => {
    const tensors = llamaTensors(2);
    const shards = [[], []];
    let size = 0;
    for (const t of tensors) {
      shards[size + t.bytes > 1e9 ? 1 : 0].push(t);
      size += t.bytes;
    }
    const files = {};
    const weightMap = {};
    const chunk = Buffer.allocUnsafe(8 * 1024 * 1024);
    shards.forEach((shard, s) => {
      const name = `model-0000${s + 1}-of-00002.safetensors`;
      const header = encodeHeader(shard, { format: "pt" });
      const fd = openSync(path.join(filesDir, name), "w");
      const hash = createHash("sha256");
      writeSync(fd, header.bytes);
      hash.update(header.bytes);
      let bytes = header.bytes.length;
      for (const t of shard) {
        weightMap[t.name] = name;
        for (let done = 0; done < t.bytes; done += chunk.length) {
          const part = chunk.subarray(0, Math.min(chunk.length, t.bytes - done));
          randomFillSync(part);
          writeSync(fd, part);
          hash.update(part);
          bytes += part.length;
        }
      }
      closeSync(fd);
      files[name] = { size: bytes, sha256: hash.digest("hex"), lfs: true };
    });
    const small = {
      "config.json": JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: 4096, intermediate_size: 11008, num_attention_heads: 32, num_hidden_layers: 2, vocab_size: 32001, torch_dtype: "float16" }, null, 2),
      "generation_config.json": JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2),
      "special_tokens_map.json": JSON.stringify({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }, null, 2),
      "tokenizer_config.json": JSON.stringify({ model_max_length: 2048, tokenizer_class: "LlamaTokenizer" }, null, 2),
      "model.safetensors.index.json": JSON.stringify({ metadata: { total_size: Object.values(files).reduce((n, f) => n + f.size, 0) }, weight_map: weightMap }, null, 2),
    };
    for (const [name, text] of Object.entries(small)) {
      const bytes = Buffer.from(text);
      writeFileSync(path.join(filesDir, name), bytes);
      files[name] = { size: bytes.length, oid: createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex"), lfs: false };
    }
    const tokenizer = randomFillSync(Buffer.allocUnsafe(499_723)); // tokenizer.model: binary, so LFS
    writeFileSync(path.join(filesDir, "tokenizer.model"), tokenizer);
    files["tokenizer.model"] = { size: tokenizer.length, sha256: createHash("sha256").update(tokenizer).digest("hex"), lfs: true };
    const manifest = { files };
    writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
    return manifest;
  });
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

async function serve({ perConnection, total, manifest }) {
  const SLICE = 256 * 1024;
  const global = new Bucket(total, SLICE * 4);
  const perSocket = new WeakMap();
  const bySha = new Map();
  for (const [name, f] of Object.entries(manifest.files)) if (f.lfs) bySha.set(f.sha256, name);
  const handles = new Map();
  const handleOf = async (name) => {
    if (!handles.has(name)) handles.set(name, await open(path.join(filesDir, name), "r"));
    return handles.get(name);
  };
  const json = (res, body) => {
    const text = JSON.stringify(body);
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function sendFile(req, res, name) {
    const size = manifest.files[name].size;
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
    const handle = await handleOf(name);
    for (let at = start; at <= end && !res.destroyed; ) {
      const n = Math.min(SLICE, end + 1 - at);
      const wait = Math.max(bucket.take(n), global.take(n));
      if (wait > 0) await sleep(wait);
      const buffer = Buffer.allocUnsafe(n);
      const { bytesRead } = await handle.read(buffer, 0, n, at);
      at += bytesRead;
      if (!res.write(buffer.subarray(0, bytesRead))) {
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
      if (p === `/api/models/${REPO}/revision/main` || p === `/api/models/${REPO}`) {
        return json(res, { id: REPO, sha: COMMIT, siblings: Object.keys(manifest.files).map((rfilename) => ({ rfilename })) });
      }
      if (p.startsWith(`/api/models/${REPO}/tree/`)) {
        return json(res, Object.entries(manifest.files).map(([name, f]) => ({
          type: "file", path: name, size: f.size,
          oid: f.lfs ? createHash("sha1").update(name).digest("hex") : f.oid,
          ...(f.lfs ? { lfs: { oid: f.sha256, size: f.size, pointerSize: 134 } } : {}),
        })));
      }
      const resolve = new RegExp(`^/${REPO}/resolve/[^/]+/(.+)$`).exec(p);
      if (resolve !== null && manifest.files[resolve[1]] !== undefined) {
        const f = manifest.files[resolve[1]];
        if (f.lfs) {
          res.writeHead(302, { Location: `/cdn/${f.sha256}`, "X-Linked-Etag": `"${f.sha256}"`, "X-Linked-Size": String(f.size), "X-Repo-Commit": COMMIT, "Content-Length": 0 });
          return res.end();
        }
        return sendFile(req, res, resolve[1]);
      }
      const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(p);
      if (cdn !== null && bySha.has(cdn[1])) return sendFile(req, res, bySha.get(cdn[1]));
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
