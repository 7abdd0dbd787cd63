#!/usr/bin/env node
// npm run bench -- --koala [--layers N] [--repeat N] [--keep]
//
// Koala's EasyLM diff applied to a Hugging Face float16 base. Builds a
// LLaMA-7B-shaped base (4096 hidden, 11008 intermediate, 32 heads; 32000
// vocabulary; 2 layers by default, about 1.3 GB) as one safetensors file with
// config.json, and a bfloat16 diff in EasyLM's streaming checkpoint format
// (msgpack records of key paths and flax arrays, kernels stored [in, out]),
// then times `apply-delta` on it --repeat times (2 by default)
// as a child process: wall seconds, CPU seconds (user + system, every thread)
// and peak RSS from GNU time, beside the I/O floor (cat of the inputs). Every
// kernel but the norms and the embeddings is read transposed, q and k with
// their rows permuted: the engine's row-by-row pairing. Rounds must agree on
// the output's digests. The temporary directory is deleted unless --keep.
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { numberFlags } from "./bench-flags.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { encodeHeader } = await import(pathToFileURL(path.join(root, "dist", "safetensors/header.js")).href);

const args = process.argv.slice(2);
const flag = numberFlags(args, "npm run bench -- --koala [--layers N] [--repeat N] [--keep]");
const layers = flag("--layers", 2);
const repeat = flag("--repeat", 2);
if (!Number.isInteger(layers) || layers > 80 || !Number.isInteger(repeat) || repeat > 20) {
  console.error("usage: npm run bench -- --koala [--layers N] [--repeat N]   (N whole; layers up to 80, rounds up to 20)");
  process.exit(2);
}
const keep = args.includes("--keep");
const HIDDEN = 4096, INTERMEDIATE = 11008, VOCAB = 32000, HEADS = 32;
const GB = 1e9;

/** Each tensor: its Hugging Face name and shape, its EasyLM key path, and whether EasyLM stores it transposed. */
function tensors() {
  const list = [{ name: "model.embed_tokens.weight", shape: [VOCAB, HIDDEN], key: ["transformer", "wte", "embedding"], transposed: false }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`, h = ["transformer", "h", String(i)];
    list.push(
      { name: `${p}self_attn.q_proj.weight`, shape: [HIDDEN, HIDDEN], key: [...h, "attention", "wq", "kernel"], transposed: true },
      { name: `${p}self_attn.k_proj.weight`, shape: [HIDDEN, HIDDEN], key: [...h, "attention", "wk", "kernel"], transposed: true },
      { name: `${p}self_attn.v_proj.weight`, shape: [HIDDEN, HIDDEN], key: [...h, "attention", "wv", "kernel"], transposed: true },
      { name: `${p}self_attn.o_proj.weight`, shape: [HIDDEN, HIDDEN], key: [...h, "attention", "wo", "kernel"], transposed: true },
      { name: `${p}mlp.gate_proj.weight`, shape: [INTERMEDIATE, HIDDEN], key: [...h, "feed_forward", "w1", "kernel"], transposed: true },
      { name: `${p}mlp.down_proj.weight`, shape: [HIDDEN, INTERMEDIATE], key: [...h, "feed_forward", "w2", "kernel"], transposed: true },
      { name: `${p}mlp.up_proj.weight`, shape: [INTERMEDIATE, HIDDEN], key: [...h, "feed_forward", "w3", "kernel"], transposed: true },
      { name: `${p}input_layernorm.weight`, shape: [HIDDEN], key: [...h, "attention_norm", "kernel"], transposed: false },
      { name: `${p}post_attention_layernorm.weight`, shape: [HIDDEN], key: [...h, "ffn_norm", "kernel"], transposed: false },
    );
  }
  list.push(
    { name: "model.norm.weight", shape: [HIDDEN], key: ["transformer", "ln_f", "kernel"], transposed: false },
    { name: "lm_head.weight", shape: [VOCAB, HIDDEN], key: ["lm_head", "kernel"], transposed: true },
  );
  return list;
}

const numel = (shape) => shape.reduce((n, d) => n * d, 1);

/** Deterministic 16-bit values: float16 in [0.5, 1) for the base, bfloat16 of about 1e-3 for the diff. */
function values(count, seed, high) {
  const out = new Uint16Array(count);
  let x = seed >>> 0;
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = high | (x >>> 22);
  }
  return new Uint8Array(out.buffer);
}

function writeBase(dir, list) {
  mkdirSync(dir, { recursive: true });
  const header = encodeHeader(list.map((t) => ({ name: t.name, dtype: "F16", shape: t.shape })), { format: "pt" });
  const fd = openSync(path.join(dir, "model.safetensors"), "w");
  writeSync(fd, header.bytes);
  list.forEach((t, i) => writeSync(fd, values(numel(t.shape), 1 + i, 0x3800)));
  closeSync(fd);
  writeFileSync(path.join(dir, "config.json"), JSON.stringify({
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: HIDDEN, intermediate_size: INTERMEDIATE,
    num_attention_heads: HEADS, num_hidden_layers: layers, vocab_size: VOCAB, torch_dtype: "float16",
  }, null, 2));
}

// msgpack, the few forms StreamingCheckpointer writes.
const u8 = (...bytes) => Uint8Array.from(bytes);
const be = (n, width) => { const b = new Uint8Array(width); for (let i = width - 1; i >= 0; i--, n = Math.floor(n / 256)) b[i] = n % 256; return b; };
const concat = (parts) => { const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0)); let at = 0; for (const p of parts) { out.set(p, at); at += p.length; } return out; };
const str = (s) => { const b = Buffer.from(s, "utf8"); return concat([b.length < 32 ? u8(0xa0 | b.length) : u8(0xd9, b.length), b]); };
const uint = (n) => (n < 128 ? u8(n) : n < 65536 ? concat([u8(0xcd), be(n, 2)]) : concat([u8(0xce), be(n, 4)]));
const array = (items) => concat([u8(0x90 | items.length), ...items]);
const binHead = (n) => concat([u8(0xc6), be(n, 4)]);
const extHead = (n, type) => concat([u8(0xc9), be(n, 4), u8(type)]);

function writeDiff(file, list) {
  const fd = openSync(file, "w");
  list.forEach((t, i) => {
    const stored = t.transposed ? [...t.shape].reverse() : t.shape;
    const data = values(numel(stored), 1000 + i, 0x3a00);
    // (key, to_bytes(array)): to_bytes packs ExtType(1, packb((shape, dtype, bytes))).
    const payloadHead = concat([u8(0x93), array(stored.map(uint)), str("bfloat16"), binHead(data.length)]);
    const ext = extHead(payloadHead.length + data.length, 1);
    writeSync(fd, concat([u8(0x92), array(t.key.map(str)), binHead(ext.length + payloadHead.length + data.length), ext, payloadHead]));
    writeSync(fd, data);
  });
  closeSync(fd);
}

/** Wall seconds, CPU seconds (user + system) and peak RSS of a child, from GNU time. */
function timed(argv) {
  const stats = path.join(tmpdir(), `bench-koala-${process.pid}.txt`);
  const gnuTime = existsSync("/usr/bin/time");
  const full = gnuTime ? ["/usr/bin/time", "-v", "-o", stats, ...argv] : argv;
  const start = performance.now();
  const result = spawnSync(full[0], full.slice(1), { stdio: ["ignore", "ignore", "pipe"], maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - start) / 1000;
  if (result.status !== 0) throw new Error(`${argv.join(" ")} failed (exit ${result.status}): ${result.stderr.toString().trim().split("\n").slice(-3).join(" | ")}`);
  if (!gnuTime) return { seconds };
  const text = readFileSync(stats, "utf8");
  rmSync(stats, { force: true });
  const field = (re) => Number(re.exec(text)?.[1]);
  return { seconds, cpu: field(/User time \(seconds\): ([\d.]+)/) + field(/System time \(seconds\): ([\d.]+)/), rss: field(/Maximum resident set size \(kbytes\): (\d+)/) * 1024 };
}

const dir = mkdtempSync(path.join(tmpdir(), "bench-koala-"));
try {
  const list = tensors();
  const base = path.join(dir, "base"), delta = path.join(dir, "delta");
  console.log(`building a ${layers}-layer LLaMA-7B-shaped float16 base and a bfloat16 EasyLM diff in ${dir}`);
  writeBase(base, list);
  mkdirSync(delta);
  writeDiff(path.join(delta, "koala_diff"), list);
  const bytes = list.reduce((n, t) => n + numel(t.shape) * 2, 0);
  const floor = timed(["cat", path.join(base, "model.safetensors"), path.join(delta, "koala_diff")]);
  console.log(`I/O floor (cat of the inputs, ${(2 * bytes / GB).toFixed(2)} GB): ${floor.seconds.toFixed(2)} s`);
  let digests;
  for (let round = 1; round <= repeat; round++) {
    const target = path.join(dir, `out-${round}`);
    const run = timed([process.execPath, path.join(root, "bin", "apply-delta"), "--no-progress", "-q", "--base", base, "--delta", delta, "--target", target]);
    const listed = readFileSync(path.join(target, "koala-recovery.sha256"), "utf8");
    if (digests !== undefined && listed !== digests) throw new Error(`round ${round} wrote other bytes than round 1`);
    digests = listed;
    const rate = bytes / GB / run.seconds;
    console.log(`koala apply-delta, round ${round}: ${run.seconds.toFixed(2)} s wall (${rate.toFixed(2)} GB/s of output), ${run.cpu?.toFixed(2) ?? "?"} CPU-s, peak RSS ${run.rss === undefined ? "?" : (run.rss / 2 ** 20).toFixed(0) + " MiB"}`);
    rmSync(target, { recursive: true, force: true });
  }
  console.log(`output digests (every round alike):\n${digests}`);
} finally {
  if (keep) console.log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
