#!/usr/bin/env node
// Measures the kernels' throughput in elements per second on one core, on
// fine-tune-like data in chunk-sized buffers (with --lora: the LoRA merge
// step in multiply-adds per second). Imports the built library
// (run `npm run build` first). Used by scripts/bench.mjs; also runnable alone.
import { pathToFileURL } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

export async function measureKernels({ elements = 4 * 1024 * 1024, seconds = 0.4 } = {}) {
  const kernels = await import(pathToFileURL(path.join(root, "dist/kernels/index.js")).href);
  // findMismatches is make-delta's inner check, reached through subIntoWithFixups; timed here on its own.
  const fast = await import(pathToFileURL(path.join(root, "dist/kernels/fast.js")).href);
  const dtypes = await import(pathToFileURL(path.join(root, "dist/dtypes.js")).href);
  // Weights ~N(0, 0.02), deltas ~1e-2 of that: the data the tool sees.
  let seed = 0x9e3779b9;
  const random = () => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const gaussian = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
  const f32 = (scale) => Float32Array.from({ length: elements }, () => gaussian() * scale);
  const weights = f32(0.02), deltas = f32(0.0004);
  const as = {
    F32: (values) => new Uint8Array(values.buffer.slice(0)),
    F16: (values) => new Uint8Array(Uint16Array.from(values, dtypes.f32ToF16).buffer),
    BF16: (values) => new Uint8Array(Uint16Array.from(values, dtypes.f32ToBf16).buffer),
  };
  const rows = [];
  // CPU time of this (single-threaded) process, not wall time: other work on
  // the machine then slows the measurement less.
  const cpuSeconds = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1e6; };
  const time = (name, dtype, fn) => {
    fn(); // warm up
    let runs = 0;
    const start = cpuSeconds();
    do { fn(); runs++; } while (cpuSeconds() - start < seconds);
    const elapsed = cpuSeconds() - start;
    rows.push({ kernel: name, dtype, gElementsPerSecond: (runs * elements) / elapsed / 1e9 });
  };
  for (const dtype of ["F16", "BF16", "F32"]) {
    const base = as[dtype](weights), delta = as[dtype](deltas);
    const target = new Uint8Array(base.length), out = new Uint8Array(base.length);
    kernels.addInto(dtype, base, delta, target);
    time("add", dtype, () => kernels.addInto(dtype, base, delta, out));
    time("sub", dtype, () => kernels.subInto(dtype, target, base, out));
    time("subIntoWithFixups", dtype, () => kernels.subIntoWithFixups(dtype, target, base, out));
    time("xor", dtype, () => kernels.xorInto(target, base, out));
    const same = target.slice();
    time("findMismatches (none)", dtype, () => fast.findMismatches(base.length / elements, target, same));
    // About 1 % of elements differ by an ulp: what make-delta sees.
    const nearly = target.slice();
    for (let i = 0; i < nearly.length; i += 97 * (base.length / elements)) nearly[i] ^= 1;
    time("findMismatches (1%)", dtype, () => fast.findMismatches(base.length / elements, nearly, target));
    for (const to of ["F16", "BF16", "F32"]) {
      if (to === dtype) continue;
      const converted = new Uint8Array(elements * (to === "F32" ? 4 : 2));
      time(`convert -> ${to}`, dtype, () => kernels.convertInto(dtype, to, base, converted));
    }
  }
  return rows;
}

/**
 * The LoRA merge step (u = B @ A, scaled, cast to float16, added to a float16
 * W) on a block of 7B-shaped rows, in G multiply-adds per second of one
 * core: the SIMD kernel and the scalar reference.
 */
export async function measureLowRank({ rank = 64, rows = 256, cols = 4096, seconds = 1 } = {}) {
  const step = await import(pathToFileURL(path.join(root, "dist/kernels/low-rank-step.js")).href);
  let seed = 0x2545f491;
  const random = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return ((seed >>> 0) / 2 ** 32 - 0.5) * 0.04; };
  const b = Float32Array.from({ length: rows * rank }, random), a = Float32Array.from({ length: rank * cols }, random);
  const w = Float32Array.from({ length: rows * cols }, random);
  const how = { scale: Math.fround(16 / rank), deltaDType: "F16", outDType: "F16", accumulate: true };
  const cpuSeconds = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1e6; };
  const time = (fn) => {
    fn();
    let runs = 0;
    const start = cpuSeconds();
    do { fn(); runs++; } while (cpuSeconds() - start < seconds);
    return (runs * rows * rank * cols) / (cpuSeconds() - start) / 1e9;
  };
  return {
    rank, rows, cols,
    simd: time(() => step.lowRankStepRows(b, a, rank, cols, w, how)),
    scalar: time(() => step.referenceLowRankStepRows(b, a, rank, cols, w, how)),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  if (process.argv.includes("--lora")) {
    for (const rank of [8, 64, 256]) {
      const r = await measureLowRank({ rank });
      console.log(`LoRA step rank ${String(rank).padEnd(4)} ${r.rows}x${r.cols}: simd ${r.simd.toFixed(2)}, scalar ${r.scalar.toFixed(2)} G multiply-adds/s`);
    }
  } else {
    for (const row of await measureKernels()) {
      console.log(`${row.kernel.padEnd(22)} ${row.dtype.padEnd(5)} ${row.gElementsPerSecond.toFixed(2)} G elements/s`);
    }
  }
}
