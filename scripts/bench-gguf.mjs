#!/usr/bin/env node
// npm run bench -- --gguf [--layers N] [--keep]
//
// GGUF output speed and memory: a LLaMA-7B-shaped F16 model (32 layers by
// default, 13.5 GB) with the tiny fixture's tokenizer, converted by
// `delta-weights convert MODEL out.gguf --outtype f16` and `--outtype q8_0`.
// Each is compared with its I/O floor: cat of the model, then writing the
// same number of output bytes, fsynced (as the convert fsyncs its output).
import { spawnSync } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync, statSync, writeSync, mkdirSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const args = process.argv.slice(2);
const layersAt = args.indexOf("--layers");
const layers = layersAt >= 0 ? Number(args[layersAt + 1]) : 32;
if (!Number.isInteger(layers) || layers < 1 || layers > 80) {
  console.error("usage: npm run bench -- --gguf [--layers N]   (N from 1 to 80)");
  process.exit(2);
}
const keep = args.includes("--keep");
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
  let rss, cpu;
  if (hasTime) {
    const text = readFileSync(stats, "utf8");
    const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
    if (m) rss = Number(m[1]) * 1024;
    // CPU-seconds of every thread (user + system): under load, wall time says more about the machine than the run.
    const user = /User time \(seconds\): ([\d.]+)/.exec(text);
    const system = /System time \(seconds\): ([\d.]+)/.exec(text);
    if (user && system) cpu = Number(user[1]) + Number(system[1]);
    rmSync(stats, { force: true });
  }
  return { seconds, rss, cpu };
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
  console.log(["", "wall", "CPU used", "output", "peak RSS", "I/O floor", "floor CPU", "vs floor"].map((h, i) => (i === 0 ? h.padEnd(16) : h.padStart(11))).join(""));
  for (const outtype of ["f16", "q8_0"]) {
    const out = path.join(work, `model-${outtype}.gguf`);
    spawnSync("sh", ["-c", `cat '${modelDir}'/model.safetensors > /dev/null`]);
    const run = timed([process.execPath, path.join(root, "bin", "delta-weights"), "convert", modelDir, out, "--outtype", outtype, "--no-progress", "--json"]);
    const outBytes = statSync(out).size;
    rmSync(out);
    const floorFile = path.join(work, "floor");
    const floor = timed(["sh", "-c", `cat '${modelDir}'/model.safetensors > /dev/null && head -c ${outBytes} '${modelDir}/model.safetensors' > '${floorFile}' && sync '${floorFile}'`]);
    rmSync(floorFile);
    const cpuText = (s) => (s === undefined ? "n/a" : `${s.toFixed(2)} s`);
    console.log([`convert ${outtype}`.padEnd(16), `${run.seconds.toFixed(2)} s`.padStart(11), cpuText(run.cpu).padStart(11), `${(outBytes / GB).toFixed(2)} GB`.padStart(11),
      (run.rss === undefined ? "n/a" : `${Math.round(run.rss / 1024 / 1024)} MB`).padStart(11), `${floor.seconds.toFixed(2)} s`.padStart(11), cpuText(floor.cpu).padStart(11),
      `${(run.seconds / floor.seconds).toFixed(2)}x`.padStart(11)].join(""));
  }
  console.log(`CPU used: user + system seconds of every thread (on ${availableParallelism()} cores); floor CPU: the same for the I/O floor's cat, head and sync.`);
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true });
}
