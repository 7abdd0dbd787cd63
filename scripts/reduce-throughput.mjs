#!/usr/bin/env node
// Measures the torch-order reductions (src/kernels/torch-reduce.ts) on one
// core: x.sum() streamed in 4 MiB chunks, and x.mean(dim=0) of a LLaMA-7B
// embedding (32000 x 4096) streamed in row blocks. Imports the built library
// (run `npm run build` first). CPU time, not wall time, so that other work on
// the machine slows the measurement less.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { TorchSumAccumulator, TorchColumnMeanAccumulator } = await import(
  pathToFileURL(path.join(root, "dist/kernels/torch-reduce.js")).href
);

const cpuSeconds = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1e6; };
// Weights ~0.02 in size: the data the reductions see. One chunk, pushed repeatedly.
const chunk = Float32Array.from({ length: 1 << 20 }, (_, i) => Math.sin(i * 0.618) * 0.02);

const CHUNKS_PER_SUM = 256; // 268 M floats, about 1 GB
const LLAMA_7B_PARAMETERS = 6.74e9;
for (const cpuCapability of ["AVX2", "AVX512"]) {
  for (const threads of [1, 8]) {
    const elements = CHUNKS_PER_SUM * chunk.length;
    const sum = new TorchSumAccumulator(elements, { cpuCapability, threads });
    const start = cpuSeconds();
    for (let k = 0; k < CHUNKS_PER_SUM; k++) sum.push(chunk);
    sum.result();
    const rate = elements / (cpuSeconds() - start);
    console.log(`x.sum()          ${cpuCapability.padEnd(6)} threads=${threads}  ${(rate / 1e6).toFixed(0)} M floats/s, ` +
      `a 7B model's float32 weights in ${(LLAMA_7B_PARAMETERS / rate).toFixed(1)} s`);
  }
}

const rows = 32000, columns = 4096;
const rowsPerBlock = Math.floor(chunk.length / columns);
for (const cpuCapability of ["AVX2", "AVX512"]) {
  const mean = new TorchColumnMeanAccumulator(rows, columns, { cpuCapability });
  const start = cpuSeconds();
  for (let row = 0; row < rows; row += rowsPerBlock) {
    mean.push(chunk.subarray(0, Math.min(rowsPerBlock, rows - row) * columns));
  }
  mean.means();
  const seconds = cpuSeconds() - start;
  console.log(`x.mean(dim=0)    ${cpuCapability.padEnd(6)} ${rows} x ${columns} in ${seconds.toFixed(2)} s, ` +
    `${((rows * columns) / seconds / 1e6).toFixed(0)} M floats/s`);
}
