#!/usr/bin/env node
// npm run bench -- --meta [--layers N] [--repeat N] [--keep]
//
// Meta's original checkpoints as a base, against a Hugging Face base. Builds
// a LLaMA-7B-shaped fp16 base (32000x4096 embeddings, full-size 4096/11008
// layers; 2 layers by default, about 1.3 GB) and a fine-tune-like target as
// safetensors, a delta between them with the built make-delta, and the same
// base in Meta's layout: consolidated.00.pth alone (one rank), and
// consolidated.00.pth + consolidated.01.pth split as Meta's model-parallel
// ranks are (wq, wk, wv, w1, w3, output along dim 0; wo, w2, tok_embeddings
// along dim 1; norms and rope.freqs in every rank), wq/wk in Meta's
// interleaved rotary order (the inverse of the permutation transformers'
// convert_llama_weights_to_hf.py applies), written by the built torch.save
// writer, with params.json. Then times, as child processes with peak RSS,
// alternately for --repeat rounds (2 by default): apply-delta from each of the
// three bases (the three outputs must be byte-identical to the target), and
// `delta-weights convert` of each base to Hugging Face safetensors (the two
// Meta conversions must be byte-identical), each beside its I/O floor (cat of
// the inputs, then a fsynced copy of the outputs). The temporary directory is
// deleted unless --keep.
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { numberFlags } from "./bench-flags.mjs";
import { hasGnuTime, runTimed } from "./bench-process.mjs";
import { sha256 } from "./file-digest.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = (file) => import(pathToFileURL(path.join(root, "dist", file)).href);
const { encodeHeader } = await dist("safetensors/header.js");
const { addInto, convertInto } = await dist("kernels/index.js");
const { PytorchWriter } = await dist("pytorch/writer.js");

const args = process.argv.slice(2);
const flag = numberFlags(args, "npm run bench -- --meta [--layers N] [--repeat N] [--keep]");
const layers = flag("--layers", 2);
const repeat = flag("--repeat", 2);
if (!Number.isInteger(layers) || layers > 80 || !Number.isInteger(repeat) || repeat > 20) {
  console.error("usage: npm run bench -- --meta [--layers N] [--repeat N]   (N whole; layers up to 80, rounds up to 20)");
  process.exit(2);
}
const keep = args.includes("--keep");

const HIDDEN = 4096, INTERMEDIATE = 11008, VOCAB = 32000, HEADS = 32, HEAD_DIM = HIDDEN / HEADS;
const CHUNK = 8 * 1024 * 1024;
const GB = 1e9;

// ---------------------------------------------------------------------------
// The model: Hugging Face names, and the Meta tensor each comes from

/** LLaMA-7B's tensors in LlamaForCausalLM's order, with Meta's name and how the ranks split it. */
function llamaTensors() {
  const tensors = [{ name: "model.embed_tokens.weight", meta: "tok_embeddings.weight", shape: [VOCAB, HIDDEN], split: "cols" }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`, m = `layers.${i}.`;
    tensors.push(
      { name: `${p}self_attn.q_proj.weight`, meta: `${m}attention.wq.weight`, shape: [HIDDEN, HIDDEN], split: "rows", rotary: true },
      { name: `${p}self_attn.k_proj.weight`, meta: `${m}attention.wk.weight`, shape: [HIDDEN, HIDDEN], split: "rows", rotary: true },
      { name: `${p}self_attn.v_proj.weight`, meta: `${m}attention.wv.weight`, shape: [HIDDEN, HIDDEN], split: "rows" },
      { name: `${p}self_attn.o_proj.weight`, meta: `${m}attention.wo.weight`, shape: [HIDDEN, HIDDEN], split: "cols" },
      { name: `${p}mlp.gate_proj.weight`, meta: `${m}feed_forward.w1.weight`, shape: [INTERMEDIATE, HIDDEN], split: "rows" },
      { name: `${p}mlp.down_proj.weight`, meta: `${m}feed_forward.w2.weight`, shape: [HIDDEN, INTERMEDIATE], split: "cols" },
      { name: `${p}mlp.up_proj.weight`, meta: `${m}feed_forward.w3.weight`, shape: [INTERMEDIATE, HIDDEN], split: "rows" },
      { name: `${p}input_layernorm.weight`, meta: `${m}attention_norm.weight`, shape: [HIDDEN], split: "none", norm: true },
      { name: `${p}post_attention_layernorm.weight`, meta: `${m}ffn_norm.weight`, shape: [HIDDEN], split: "none", norm: true },
    );
  }
  tensors.push(
    { name: "model.norm.weight", meta: "norm.weight", shape: [HIDDEN], split: "none", norm: true },
    { name: "lm_head.weight", meta: "output.weight", shape: [VOCAB, HIDDEN], split: "rows" },
  );
  return tensors.map((t) => ({ ...t, dtype: "F16", bytes: t.shape.reduce((a, b) => a * b, 1) * 2 }));
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

/** Base = f16(w), target = f16(w + change), each one model.safetensors, as in scripts/bench.mjs. */
function writeHfModels(baseDir, targetDir, tensors) {
  const weights = gaussianTable(0, 0.02, 1), norms = gaussianTable(1, 0.05, 2), changes = gaussianTable(0, 0.0005, 3);
  const next = makeRandom(42);
  const w = new Float32Array(CHUNK / 2), change = new Float32Array(CHUNK / 2), moved = new Float32Array(CHUNK / 2);
  const wBytes = new Uint8Array(w.buffer), changeBytes = new Uint8Array(change.buffer), movedBytes = new Uint8Array(moved.buffer);
  const base = new Uint8Array(CHUNK), target = new Uint8Array(CHUNK);
  const header = encodeHeader(tensors, { format: "pt" });
  const fds = [openSync(path.join(baseDir, "model.safetensors"), "w"), openSync(path.join(targetDir, "model.safetensors"), "w")];
  for (const fd of fds) writeSync(fd, header.bytes);
  for (const placed of header.tensors) {
    const info = tensors.find((t) => t.name === placed.name);
    for (let done = 0; done < info.bytes; done += CHUNK) {
      const length = Math.min(CHUNK, info.bytes - done), count = length / 2;
      fill(w, info.norm ? norms : weights, next);
      fill(change, changes, next);
      addInto("F32", wBytes.subarray(0, count * 4), changeBytes.subarray(0, count * 4), movedBytes.subarray(0, count * 4));
      convertInto("F32", "F16", wBytes.subarray(0, count * 4), base.subarray(0, length));
      convertInto("F32", "F16", movedBytes.subarray(0, count * 4), target.subarray(0, length));
      writeSync(fds[0], base, 0, length);
      writeSync(fds[1], target, 0, length);
    }
  }
  for (const fd of fds) closeSync(fd);
  const config = JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: HIDDEN, intermediate_size: INTERMEDIATE, num_hidden_layers: layers,
    num_attention_heads: HEADS, vocab_size: VOCAB, rms_norm_eps: 1e-6, torch_dtype: "float16", model_type: "llama" }, null, 2);
  for (const dir of [baseDir, targetDir]) writeFileSync(path.join(dir, "config.json"), config);
}

/** Where each tensor's bytes are in a safetensors file: name -> absolute offset. */
function safetensorsOffsets(file) {
  const fd = openSync(file, "r");
  const lengthBytes = Buffer.alloc(8);
  readSync(fd, lengthBytes, 0, 8, 0);
  const headerLength = Number(lengthBytes.readBigUInt64LE(0));
  const header = Buffer.alloc(headerLength);
  readSync(fd, header, 0, headerLength, 8);
  const offsets = new Map();
  for (const [name, entry] of Object.entries(JSON.parse(header.toString("utf8")))) {
    if (name !== "__metadata__") offsets.set(name, 8 + headerLength + entry.data_offsets[0]);
  }
  return { fd, offsets };
}

// ---------------------------------------------------------------------------
// Meta's layout, made from the Hugging Face base

/**
 * Meta's rows of one head from Hugging Face's: the script maps Meta row
 * 2i + j of a head to Hugging Face row j * half + i (view(heads, half, 2,
 * dim).transpose(1, 2)), so Meta row 2i + j is Hugging Face row j * half + i.
 */
function unpermuteHead(hfHead, metaHead, rowBytes) {
  const half = HEAD_DIM / 2;
  for (let i = 0; i < half; i++) {
    for (let j = 0; j < 2; j++) {
      const from = (j * half + i) * rowBytes;
      metaHead.set(hfHead.subarray(from, from + rowBytes), (2 * i + j) * rowBytes);
    }
  }
}

/** The bytes rank `rank` of `ranks` holds of a tensor, in chunks, read from the Hugging Face base. */
function* rankChunks(base, tensor, rank, ranks) {
  const start = base.offsets.get(tensor.name);
  const buffer = Buffer.allocUnsafe(CHUNK), out = Buffer.allocUnsafe(CHUNK);
  const read = (position, length) => {
    let got = 0;
    while (got < length) got += readSync(base.fd, buffer, got, length - got, position + got);
    return buffer.subarray(0, length);
  };
  if (tensor.split === "none") {
    yield read(start, tensor.bytes);
    return;
  }
  const [rows, cols] = tensor.shape, rowBytes = cols * 2;
  if (tensor.split === "rows") {
    const first = (rows / ranks) * rank, count = rows / ranks;
    const step = tensor.rotary ? HEAD_DIM : Math.floor(CHUNK / rowBytes);
    for (let row = first; row < first + count; row += step) {
      const n = Math.min(step, first + count - row);
      const bytes = read(start + row * rowBytes, n * rowBytes);
      if (tensor.rotary) {
        unpermuteHead(bytes, out, rowBytes);
        yield out.subarray(0, n * rowBytes);
      } else {
        yield bytes;
      }
    }
    return;
  }
  // "cols": each row's slice of cols / ranks columns.
  const sliceBytes = rowBytes / ranks, step = Math.floor(CHUNK / rowBytes);
  for (let row = 0; row < rows; row += step) {
    const n = Math.min(step, rows - row);
    const bytes = read(start + row * rowBytes, n * rowBytes);
    for (let r = 0; r < n; r++) out.set(bytes.subarray(r * rowBytes + rank * sliceBytes, r * rowBytes + (rank + 1) * sliceBytes), r * sliceBytes);
    yield out.subarray(0, n * sliceBytes);
  }
}

/** Writes consolidated.0R.pth for each of `ranks` ranks (Meta's names and order; rope.freqs replicated) and params.json. */
async function writeMetaCheckpoint(baseFile, dir, tensors, ranks) {
  mkdirSync(dir);
  const base = safetensorsOffsets(baseFile);
  // Meta's buffer of rotary frequencies, 1 / 10000^(2i / head_dim), float16: never read by the conversion.
  const freqs = new Float32Array(HEAD_DIM / 2).map((_, i) => 1 / 10000 ** ((2 * i) / HEAD_DIM));
  const freqsF16 = new Uint8Array(freqs.length * 2);
  convertInto("F32", "F16", new Uint8Array(freqs.buffer), freqsF16);
  // Meta's state-dict order: the embeddings, each layer's attention, feed-forward and norms, the final norm, output, rope.freqs.
  const metaOrder = [tensors[0], ...tensors.slice(1, -2), ...tensors.slice(-2)];
  try {
    for (let rank = 0; rank < ranks; rank++) {
      const file = path.join(dir, `consolidated.${String(rank).padStart(2, "0")}.pth`);
      const fd = openSync(file, "w");
      const shape = (t) => (t.split === "rows" ? [t.shape[0] / ranks, t.shape[1]] : t.split === "cols" ? [t.shape[0], t.shape[1] / ranks] : t.shape);
      const list = [...metaOrder.map((t) => ({ name: t.meta, dtype: "F16", shape: shape(t) })), { name: "rope.freqs", dtype: "F16", shape: [HEAD_DIM / 2] }];
      const byMeta = new Map(tensors.map((t) => [t.meta, t]));
      const writer = new PytorchWriter({ write: async (bytes) => void writeSync(fd, bytes) }, file, list);
      for (const placed of writer.tensors) {
        await writer.writeTensor(placed.name, placed.name === "rope.freqs" ? [freqsF16] : rankChunks(base, byMeta.get(placed.name), rank, ranks));
      }
      await writer.finish();
      closeSync(fd);
    }
  } finally {
    closeSync(base.fd);
  }
  writeFileSync(path.join(dir, "params.json"), JSON.stringify({ dim: HIDDEN, multiple_of: 256, n_heads: HEADS, n_layers: layers, norm_eps: 1e-6, vocab_size: -1 }));
}

// ---------------------------------------------------------------------------
// Measuring

const run = runTimed;

const filesIn = (dir, filter = () => true) => readdirSync(dir).filter(filter).sort().map((f) => path.join(dir, f));
const isWeights = (f) => f.endsWith(".safetensors") || f.endsWith(".pth");
const totalBytes = (files) => files.reduce((sum, f) => sum + statSync(f).size, 0);

/** The I/O floor: cat the inputs to /dev/null, then a fsynced copy of each output. */
function ioFloor(inputs, outputs, scratch) {
  const read = run("sh", ["-c", `cat ${inputs.map((f) => `'${f}'`).join(" ")} > /dev/null`]).seconds;
  mkdirSync(scratch, { recursive: true });
  let write = 0;
  for (const file of outputs) {
    write += run("dd", [`if=${file}`, `of=${path.join(scratch, path.basename(file))}`, "bs=16M", "conv=fsync", "status=none"]).seconds;
  }
  rmSync(scratch, { recursive: true, force: true });
  return read + write;
}

/** sha256 of every file of a directory, by name. */
const digests = (dir) => Object.fromEntries(filesIn(dir).map((f) => [path.basename(f), sha256(f)]));
const sameDigests = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// ---------------------------------------------------------------------------

const work = mkdtempSync(path.join(tmpdir(), "bench-meta-"));
process.on("SIGINT", () => {
  if (!keep) rmSync(work, { recursive: true, force: true });
  process.exit(130);
});
try {
  const tensors = llamaTensors();
  const hfBase = path.join(work, "hf-base"), target = path.join(work, "target"), delta = path.join(work, "delta");
  const meta1 = path.join(work, "meta-1-rank"), meta2 = path.join(work, "meta-2-ranks");
  mkdirSync(hfBase); mkdirSync(target);
  let start = performance.now();
  writeHfModels(hfBase, target, tensors);
  await writeMetaCheckpoint(path.join(hfBase, "model.safetensors"), meta1, tensors, 1);
  await writeMetaCheckpoint(path.join(hfBase, "model.safetensors"), meta2, tensors, 2);
  const modelBytes = totalBytes(filesIn(hfBase, isWeights));
  console.log(`LLaMA-7B-shaped fp16 base, ${layers} layers, ${(modelBytes / GB).toFixed(2)} GB: as safetensors, as Meta's consolidated.00.pth, and as 2 ranks; written in ${((performance.now() - start) / 1000).toFixed(1)} s`);

  const node = process.execPath, cli = path.join(root, "bin", "delta-weights");
  start = performance.now();
  run(node, [path.join(root, "bin", "make-delta"), "--base", hfBase, "--target", target, "--delta", delta, "--no-progress", "--quiet"], "make-delta");
  console.log(`delta made from the Hugging Face base in ${((performance.now() - start) / 1000).toFixed(1)} s; ${repeat} round(s) of every case follow, alternately\n`);
  const targetDigests = digests(target);
  rmSync(target, { recursive: true, force: true });

  const cases = [
    { name: "apply, HF base", base: hfBase, apply: true },
    { name: "apply, Meta 1 rank", base: meta1, apply: true },
    { name: "apply, Meta 2 ranks", base: meta2, apply: true },
    { name: "convert HF -> HF", base: hfBase },
    { name: "convert Meta 1 rank", base: meta1 },
    { name: "convert Meta 2 ranks", base: meta2 },
  ];
  const results = new Map(cases.map((c) => [c.name, []]));
  const outputs = new Map();
  for (let round = 0; round < repeat; round++) {
    for (const c of cases) {
      const out = path.join(work, "out");
      rmSync(out, { recursive: true, force: true });
      const inputs = [...filesIn(c.base, isWeights), ...(c.apply ? filesIn(delta, isWeights) : [])];
      run("sh", ["-c", `cat ${inputs.map((f) => `'${f}'`).join(" ")} > /dev/null`]); // page cache warm, as for the floor
      const timed = c.apply
        ? run(node, [path.join(root, "bin", "apply-delta"), "--base", c.base, "--delta", delta, "--target", out, "--no-progress", "--json"], c.name)
        : run(node, [cli, "convert", c.base, out, "--no-progress", "--quiet"], c.name);
      const outFiles = filesIn(out, isWeights);
      const floor = ioFloor(inputs, outFiles, path.join(work, "floor"));
      results.get(c.name).push({ ...timed, floor, out: totalBytes(outFiles) });
      if (round === 0) {
        outputs.set(c.name, c.apply ? Object.fromEntries(Object.entries(digests(out)).filter(([name]) => isWeights(name))) : digests(out));
        if (c.apply) outputs.get(c.name).verified = JSON.parse(timed.stdout).verified === true;
      }
      rmSync(out, { recursive: true, force: true });
    }
  }

  const range = (values, digits) => {
    const lo = Math.min(...values), hi = Math.max(...values);
    return lo.toFixed(digits) === hi.toFixed(digits) ? lo.toFixed(digits) : `${lo.toFixed(digits)}-${hi.toFixed(digits)}`;
  };
  console.log(["", "wall s", "output", "peak RSS MB", "I/O floor s", "vs floor"].map((h, i) => (i === 0 ? h.padEnd(22) : h.padStart(14))).join(""));
  for (const c of cases) {
    const rows = results.get(c.name);
    console.log([
      c.name.padEnd(22),
      range(rows.map((r) => r.seconds), 1).padStart(14),
      `${(rows[0].out / GB).toFixed(2)} GB`.padStart(14),
      (rows[0].rss === undefined ? "n/a" : range(rows.map((r) => r.rss / 1024 / 1024), 0)).padStart(14),
      range(rows.map((r) => r.floor), 1).padStart(14),
      `${range(rows.map((r) => r.seconds / r.floor), 2)}x`.padStart(14),
    ].join(""));
  }
  console.log(`(${repeat} round(s), each case's range; floor = cat of the inputs, page cache warm, + a fsynced copy of the outputs)`);

  const { verified: hfVerified, ...hfOut } = outputs.get("apply, HF base");
  const hfExact = sameDigests(hfOut, Object.fromEntries(Object.entries(targetDigests).filter(([name]) => isWeights(name))));
  console.log(`apply, HF base: ${hfVerified ? "verified" : "NOT verified"}; output ${hfExact ? "byte-identical to" : "DIFFERENT from"} the target (sha256 of every weight file)`);
  let ok = hfExact && hfVerified;
  for (const name of ["apply, Meta 1 rank", "apply, Meta 2 ranks"]) {
    const { verified, ...out } = outputs.get(name);
    const same = sameDigests(out, hfOut);
    console.log(`${name}: ${verified ? "verified" : "NOT verified"}; output ${same ? "byte-identical to" : "DIFFERENT from"} the HF base's (sha256 of every weight file)`);
    ok &&= same && verified;
  }
  const convertsAgree = sameDigests(outputs.get("convert Meta 1 rank"), outputs.get("convert Meta 2 ranks"));
  console.log(`convert of 1 rank and of 2 ranks: ${convertsAgree ? "byte-identical outputs" : "DIFFERENT outputs"} (every file)`);
  if (!hasGnuTime) console.log("peak RSS not measured: /usr/bin/time is missing (apt-get install time)");
  if (!ok || !convertsAgree) process.exitCode = 1;
} finally {
  if (keep) console.log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
