#!/usr/bin/env node
// npm run bench -- --pytorch [--layers N] [--keep]
//
// PyTorch .bin output: builds a LLaMA-7B-shaped fp16 model as one
// safetensors file (two 32000x4096 embeddings, full-size 4096/11008 layers;
// 2 layers by default, about 1.3 GB; --layers 10 passes 4 GiB, so later
// records need zip64 fields), then times the built `delta-weights convert
// model.safetensors pytorch_model.bin` against `convert` to safetensors and
// against the I/O floor (cat of the input, then a fsynced copy of the output),
// with peak RSS. When /usr/bin/python3 can import torch, it then loads our
// file with torch.load and saves it again with torch.save under the same
// name: the two files must be byte-identical (the check at scale, zip64
// included past 4 GiB). The temporary directory is deleted unless --keep.
import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { runTimed } from "./bench-process.mjs";
import { sha256 } from "./file-digest.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { encodeHeader } = await import(pathToFileURL(path.join(root, "dist", "safetensors", "header.js")).href);

const args = process.argv.slice(2);
const layersAt = args.indexOf("--layers");
const layers = layersAt >= 0 ? Number(args[layersAt + 1]) : 2;
if (!Number.isInteger(layers) || layers < 0 || layers > 80) {
  console.error("usage: npm run bench -- --pytorch [--layers N]   (N from 0 to 80)");
  process.exit(2);
}
const keep = args.includes("--keep");

const run = runTimed;

/** LLaMA-7B's tensors in state-dict order, fp16 (norms too, as a fp16 checkpoint holds them). */
function llamaTensors() {
  const hidden = 4096, inter = 11008, vocab = 32000;
  const tensors = [{ name: "model.embed_tokens.weight", shape: [vocab, hidden] }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`;
    for (const m of ["q_proj", "k_proj", "v_proj", "o_proj"]) tensors.push({ name: `${p}self_attn.${m}.weight`, shape: [hidden, hidden] });
    tensors.push({ name: `${p}mlp.gate_proj.weight`, shape: [inter, hidden] }, { name: `${p}mlp.up_proj.weight`, shape: [inter, hidden] }, { name: `${p}mlp.down_proj.weight`, shape: [hidden, inter] });
    tensors.push({ name: `${p}input_layernorm.weight`, shape: [hidden] }, { name: `${p}post_attention_layernorm.weight`, shape: [hidden] });
  }
  tensors.push({ name: "model.norm.weight", shape: [hidden] }, { name: "lm_head.weight", shape: [vocab, hidden] });
  return tensors.map((t) => ({ ...t, dtype: "F16" }));
}

/** Writes the model as one safetensors file; tensor bytes from a pseudo-random pattern (content does not matter here). */
function writeModel(file) {
  const { bytes: header, tensors } = encodeHeader(llamaTensors(), { format: "pt" });
  const fd = openSync(file, "w");
  try {
    writeSync(fd, header);
    const pattern = Buffer.allocUnsafe(16 * 1024 * 1024 + 4099);
    let x = 0x9e3779b9;
    for (let i = 0; i < pattern.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      pattern[i] = x & 0x7b; // keeps fp16 values finite
    }
    const total = tensors.length === 0 ? 0 : tensors[tensors.length - 1].end;
    let done = 0, shift = 0;
    while (done < total) {
      const n = Math.min(16 * 1024 * 1024, total - done);
      writeSync(fd, pattern, shift, n);
      shift = (shift + 1021) % 4099;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}

const gb = (bytes) => (bytes / 1e9).toFixed(2);
const work = mkdtempSync(path.join(tmpdir(), "bench-pytorch-"));
try {
  const src = path.join(work, "model.safetensors");
  writeModel(src);
  const size = statSync(src).size;
  console.log(`LLaMA-7B-shaped fp16, ${layers} layers: ${gb(size)} GB of safetensors`);
  const cli = path.join(root, "bin", "delta-weights");
  mkdirSync(path.join(work, "ours"));
  const bin = path.join(work, "ours", "pytorch_model.bin");
  const ours = run(process.execPath, [cli, "convert", src, bin], "convert to .bin");
  const binSize = statSync(bin).size;
  const safe = run(process.execPath, [cli, "convert", src, path.join(work, "again.safetensors")], "convert to safetensors");
  rmSync(path.join(work, "again.safetensors"));
  const read = run("sh", ["-c", `cat '${src}' > /dev/null`], "cat").seconds;
  const write = run("dd", [`if=${bin}`, `of=${path.join(work, "copy")}`, "bs=16M", "conv=fsync", "status=none"], "dd").seconds;
  rmSync(path.join(work, "copy"));
  const floor = read + write;
  const rss = (r) => (r.rss === undefined ? "n/a" : `${Math.round(r.rss / 1e6)} MB`);
  console.log(`convert -> pytorch_model.bin: ${ours.seconds.toFixed(1)} s (${gb(binSize / ours.seconds)} GB/s), peak RSS ${rss(ours)}, ${(ours.seconds / floor).toFixed(2)}x the I/O floor (${floor.toFixed(1)} s: read ${read.toFixed(1)} s + fsynced write ${write.toFixed(1)} s)`);
  console.log(`convert -> model.safetensors (same bytes): ${safe.seconds.toFixed(1)} s, peak RSS ${rss(safe)}`);
  if (binSize > 0xffffffff) console.log(`the file passes 4 GiB (${gb(binSize)} GB): its later records carry zip64 fields`);

  const torch = spawnSync("/usr/bin/python3", ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8" });
  if (torch.status === 0) {
    mkdirSync(path.join(work, "torch"));
    const resaved = path.join(work, "torch", "pytorch_model.bin");
    const script = "import sys, torch; torch.save(torch.load(sys.argv[1]), sys.argv[2])";
    const t = run("/usr/bin/python3", ["-c", script, bin, resaved], "torch.load + torch.save");
    const same = sha256(bin) === sha256(resaved);
    console.log(`torch ${torch.stdout.trim()}: torch.save(torch.load(ours)) under the same name is ${same ? "byte-identical" : "DIFFERENT"} (${t.seconds.toFixed(1)} s, peak RSS ${rss(t)})`);
    if (!same) process.exitCode = 1;
  } else {
    console.log("torch is not importable by /usr/bin/python3: the byte-for-byte check against torch.save was skipped");
  }
} finally {
  if (keep) console.log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
