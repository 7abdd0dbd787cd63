#!/usr/bin/env node
// npm run bench -- --push [--mb N] [--upload MB/s]
// (or node scripts/bench-push.mjs ..., after `npm run build`)
//
// Measures publishing a delta: make-delta alone, make-delta then
// `delta-weights push`, and make-delta --push-to-hub (each file uploaded while
// the next is made). The "Hub" is a loopback server in this process that
// speaks the upload protocol (repo creation, preupload, LFS batch, basic PUT,
// NDJSON commit), stores nothing, and reads every upload body through one
// shared pace of --upload MB/s (default 100): an uplink, whatever the number
// of connections. The models (--mb MB each, default 1024, in four F16 shards)
// are generated once under .bench/push/.
import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { createServer } from "node:http";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { numberFlags } from "./bench-flags.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const benchDir = path.join(root, ".bench", "push");
const MB = 1e6;
const TOKEN = "hf_bench_publisher";

const args = process.argv.slice(2);
const flag = numberFlags(args, "node scripts/bench-push.mjs [--mb N] [--upload MB/s]");
const modelMb = flag("--mb", 1024);
const uploadRate = flag("--upload", 100) * MB;

// ---------------------------------------------------------------------------
// Models: four shards of one F16 tensor each; the target differs from the base in the last mantissa bit of every 7th element.

const SHARDS = 4;
const COLUMNS = 4096;

function writeShard(file, name, rows, fill) {
  const bytes = rows * COLUMNS * 2;
  let header = JSON.stringify({ __metadata__: { format: "pt" }, [name]: { dtype: "F16", shape: [rows, COLUMNS], data_offsets: [0, bytes] } });
  header += " ".repeat((8 - (header.length % 8)) % 8);
  const fd = openSync(file, "w");
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  writeSync(fd, length);
  writeSync(fd, Buffer.from(header));
  const chunk = Buffer.alloc(16 * 1024 * 1024);
  for (let at = 0; at < bytes; at += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, bytes - at));
    fill(part);
    writeSync(fd, part);
  }
  closeSync(fd);
}

function makeModels() {
  const marker = path.join(benchDir, `models-${modelMb}.done`);
  const base = path.join(benchDir, `base-${modelMb}`);
  const target = path.join(benchDir, `target-${modelMb}`);
  if (existsSync(marker)) return { base, target };
  rmSync(benchDir, { recursive: true, force: true });
  const rows = Math.max(1, Math.floor((modelMb * MB) / SHARDS / COLUMNS / 2));
  const names = Array.from({ length: SHARDS }, (_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(SHARDS).padStart(5, "0")}.safetensors`);
  for (const dir of [base, target]) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, "config.json"), '{"model_type": "llama"}\n');
    const weightMap = Object.fromEntries(names.map((n, i) => [`layers.${i}.weight`, n]));
    writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: SHARDS * rows * COLUMNS * 2 }, weight_map: weightMap }, null, 2) + "\n");
  }
  // Random bytes with the exponent bits fixed: small finite F16 values, no NaN or infinity.
  const fill = (part) => {
    randomFillSync(part);
    for (let j = 1; j < part.length; j += 2) part[j] = (part[j] & 0x83) | 0x24;
  };
  names.forEach((name, i) => writeShard(path.join(base, name), `layers.${i}.weight`, rows, fill));
  // Target = base with the last mantissa bit of every 7th element flipped.
  for (const name of names) {
    const from = path.join(base, name);
    const to = path.join(target, name);
    const size = statSync(from).size;
    const src = openSync(from, "r");
    const dst = openSync(to, "w");
    const chunk = Buffer.alloc(16 * 1024 * 1024);
    const headerEnd = 8 + Number(readU64(src));
    for (let at = 0; at < size; at += chunk.length) {
      const n = Math.min(chunk.length, size - at);
      readAt(src, chunk, n, at);
      for (let j = Math.max(0, headerEnd - at); j < n; j += 14) chunk[j] ^= 1;
      writeSync(dst, chunk, 0, n);
    }
    closeSync(src);
    closeSync(dst);
  }
  writeFileSync(marker, "");
  return { base, target };
}

function readU64(fd) {
  const b = Buffer.alloc(8);
  readAt(fd, b, 8, 0);
  return b.readBigUInt64LE();
}

function readAt(fd, buffer, length, position) {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buffer, done, length - done, position + done);
    if (n === 0) throw new Error("short read");
    done += n;
  }
}

// ---------------------------------------------------------------------------
// The loopback Hub: accepts every upload, keeps none, paces all bodies together.

function startHub() {
  let nextFree = 0; // when the shared uplink is free again (ms)
  const stored = new Map(); // repo -> oids
  const uploaded = { bytes: 0 };
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const send = (status, body) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
      res.end(text);
    };
    const body = async (paced) => {
      const chunks = [];
      for await (const chunk of req) {
        if (paced) {
          const now = performance.now();
          nextFree = Math.max(now, nextFree) + (chunk.length / uploadRate) * 1000;
          uploaded.bytes += chunk.length;
          if (nextFree - now > 1) await new Promise((r) => setTimeout(r, nextFree - now));
        } else {
          chunks.push(chunk);
        }
      }
      return Buffer.concat(chunks).toString("utf8");
    };
    let m;
    if (req.method === "POST" && url.pathname === "/api/repos/create") {
      const { name } = JSON.parse(await body(false));
      return send(200, { url: `http://x/bench/${name}` });
    }
    if (req.method === "GET" && (m = /^\/api\/models\/([^/]+\/[^/]+)$/.exec(url.pathname))) {
      return send(200, { _id: "0", id: m[1], private: false, sha: "0".repeat(40), siblings: [] });
    }
    if (req.method === "POST" && (m = /^\/api\/models\/([^/]+\/[^/]+)\/preupload\/[^/]+$/.exec(url.pathname))) {
      const { files } = JSON.parse(await body(false));
      return send(200, { files: files.map((f) => ({ path: f.path, uploadMode: f.path.endsWith(".safetensors") ? "lfs" : "regular", shouldIgnore: false })) });
    }
    if (req.method === "POST" && (m = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(url.pathname))) {
      const repo = m[1];
      const { objects } = JSON.parse(await body(false));
      const have = stored.get(repo) ?? new Set();
      stored.set(repo, have);
      const port = server.address().port;
      return send(200, { transfer: "basic", objects: objects.map((o) => (have.has(o.oid) ? { oid: o.oid, size: o.size } : { oid: o.oid, size: o.size, actions: { upload: { href: `http://127.0.0.1:${port}/__upload/${repo}/${o.oid}` } } })) });
    }
    if (req.method === "PUT" && (m = /^\/__upload\/([^/]+\/[^/]+)\/([0-9a-f]{64})$/.exec(url.pathname))) {
      await body(true);
      stored.get(m[1])?.add(m[2]);
      res.writeHead(200, { ETag: '"x"' });
      return res.end();
    }
    if (req.method === "POST" && (m = /^\/api\/models\/([^/]+\/[^/]+)\/commit\/[^/]+$/.exec(url.pathname))) {
      uploaded.bytes += Buffer.byteLength(await body(false));
      return send(200, { success: true, commitOid: "1".repeat(40), commitUrl: `http://x/${m[1]}/commit/1` });
    }
    send(404, { error: `no route for ${req.method} ${url.pathname}` });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}`, uploaded })));
}

// ---------------------------------------------------------------------------

function run(bin, binArgs, env) {
  return new Promise((resolve, reject) => {
    const began = performance.now();
    const child = spawn(process.execPath, [path.join(root, "bin", bin), ...binArgs, "--no-progress", "--json"], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stdout.resume();
    child.stderr.on("data", (d) => { stderr += d; });
    child.on("error", reject);
    child.on("close", (status) => {
      if (status !== 0) reject(new Error(`${bin} ${binArgs.join(" ")} exited ${status}: ${stderr.trim()}`));
      else resolve((performance.now() - began) / 1000);
    });
  });
}

async function main() {
  if (!existsSync(path.join(root, "dist", "cli", "main.js"))) {
    console.error("run `npm run build` first (npm run bench does)");
    process.exit(2);
  }
  console.log(`models: ${modelMb} MB each, ${SHARDS} shards (generated once under .bench/push/); uplink ${uploadRate / MB} MB/s`);
  const { base, target } = makeModels();
  const hub = await startHub();
  const env = { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN, HF_HOME: path.join(benchDir, "hf-home") };
  const deltaDir = path.join(benchDir, "delta");
  const fresh = () => rmSync(deltaDir, { recursive: true, force: true });
  const deltaBytes = () => readdirSync(deltaDir).filter((n) => !n.startsWith(".")).reduce((s, n) => s + statSync(path.join(deltaDir, n)).size, 0);
  try {
    fresh();
    const makeOnly = await run("make-delta", ["--base", base, "--target", target, "--delta", deltaDir], env);
    const bytes = deltaBytes();
    fresh();
    const made = await run("make-delta", ["--base", base, "--target", target, "--delta", deltaDir], env);
    const pushed = await run("delta-weights", ["push", deltaDir, "bench/then-push"], env);
    fresh();
    const pipelined = await run("make-delta", ["--base", base, "--target", target, "--delta", deltaDir, "--push-to-hub", "bench/pipelined"], env);
    const floor = Math.max(makeOnly, bytes / uploadRate);
    const rows = [
      ["make-delta only", makeOnly],
      ["make-delta, then push", made + pushed],
      ["make-delta --push-to-hub", pipelined],
    ];
    console.log(`delta: ${(bytes / MB).toFixed(0)} MB; upload alone at ${uploadRate / MB} MB/s: ${(bytes / uploadRate).toFixed(1)} s`);
    for (const [label, seconds] of rows) console.log(`  ${label.padEnd(26)} ${seconds.toFixed(1).padStart(6)} s`);
    console.log(`  (floor: max(make, upload) = ${floor.toFixed(1)} s; make then push was ${(made).toFixed(1)} + ${pushed.toFixed(1)} s)`);
  } finally {
    fresh();
    hub.server.closeAllConnections();
    hub.server.close();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
