#!/usr/bin/env python3
"""Writes test/fixtures/reduce/: what real PyTorch (CPU) computes for float32
`x.sum()` and `x.mean(dim=0)`, the oracle for src/kernels/torch-reduce.ts.

Inputs are not stored: every element is a pure function of (kind, seed,
index), the counter-based generator below, which test/kernels/reduce-inputs.ts
implements bit for bit. Only torch's outputs are kept: sums as float32 bit
patterns in reduce.json, column means as raw little-endian float32 .bin files
(identical outputs share one file).

torch's summation order depends on the CPU kernel it dispatches to and on its
thread count, so every case is run under each kernel in CAPABILITIES (one
subprocess each: ATEN_CPU_CAPABILITY is read once, when torch loads) and each
thread count in THREADS. Deterministic. Run with the Python that has torch:
    python3 scripts/make-reduce-fixtures.py
"""
import hashlib
import json
import os
import platform
import subprocess
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "reduce")
# ATEN_CPU_CAPABILITY value -> (what torch.__config__.show() then reports, the
# name torch.backends.cpu.get_cpu_capability() gives it in torch 2.x). A mean
# file is named after the first run that produced it: AVX2, the default here.
CAPABILITIES = {"avx2": ("AVX2", "AVX2"), "avx512": ("AVX512", "AVX512"), "default": ("NO AVX", "DEFAULT")}
THREADS = [1, 2, 3, 5, 8]

# kind -> (lowest, highest unbiased exponent, signed): the magnitudes span
# 2^lowest .. 2^(highest+1), so the order of the additions shows in the result.
KINDS = {
    "mixed": (-24, 24, True),       # 1e-7 .. 3e7, both signs: heavy cancellation
    "embedding": (-12, -5, True),   # like N(0, 0.02) weights
    "positive": (-1, 1, False),     # 0.5 .. 4: a running sum that grows, rounding every step
}
M32 = 0xFFFFFFFF


def generate(kind, seed, start, count):
    """Elements [start, start + count) of the input (kind, seed), as float32."""
    idx = np.arange(start, start + count, dtype=np.uint64)
    u = np.uint64
    h = (idx * u(0x9E3779B1) + u((seed * 0x85EBCA77 + 0x165667B1) & M32)) & u(M32)
    # murmur3's fmix32
    h ^= h >> u(16)
    h = (h * u(0x85EBCA6B)) & u(M32)
    h ^= h >> u(13)
    h = (h * u(0xC2B2AE35)) & u(M32)
    h ^= h >> u(16)
    if kind == "negative-zero":
        bits = np.full(count, 0x80000000, dtype=np.uint64)
    else:
        lowest, highest, signed = KINDS[kind]
        biased_exponent = np.uint64(lowest + 127) + ((h >> np.uint64(23)) & np.uint64(0xFF)) % np.uint64(highest - lowest + 1)
        sign = (h >> np.uint64(31)) if signed else np.zeros_like(h)
        bits = (sign << np.uint64(31)) | (biased_exponent << np.uint64(23)) | (h & np.uint64(0x7FFFFF))
    return bits.astype(np.uint32).view(np.float32)


def make_input(kind, seed, numel):
    out = np.empty(numel, dtype=np.float32)
    block = 1 << 22
    for start in range(0, numel, block):
        n = min(block, numel - start)
        out[start:start + n] = generate(kind, seed, start, n)
    return out


# (name, op, shape, kind, seed, extra thread counts). "sum" is x.sum() over
# all elements; "mean0" is x.mean(dim=0) of a [rows, columns] matrix.
CASES = [
    ("sum-empty", "sum", [0], "mixed", 1, []),
    ("sum-1", "sum", [1], "mixed", 2, []),
    ("sum-7", "sum", [7], "mixed", 3, []),
    ("sum-8", "sum", [8], "mixed", 4, []),
    ("sum-9", "sum", [9], "mixed", 5, []),
    ("sum-15", "sum", [15], "mixed", 6, []),
    ("sum-16", "sum", [16], "mixed", 7, []),
    ("sum-33", "sum", [33], "mixed", 8, []),
    ("sum-100", "sum", [100], "positive", 9, []),
    ("sum-1000", "sum", [1000], "mixed", 10, []),
    ("sum-4095", "sum", [4095], "mixed", 11, []),
    ("sum-32767", "sum", [32767], "positive", 12, []),
    ("sum-32768", "sum", [32768], "mixed", 13, []),
    ("sum-32769", "sum", [32769], "mixed", 14, []),
    ("sum-65541", "sum", [65541], "positive", 15, []),
    ("sum-100003", "sum", [100003], "mixed", 16, [16]),
    ("sum-2d-4096x11", "sum", [4096, 11], "embedding", 17, []),
    ("sum-3d-7x129x33", "sum", [7, 129, 33], "mixed", 18, []),
    ("sum-1000003", "sum", [1000003], "positive", 19, [4, 6, 7]),
    ("sum-4194307", "sum", [4194307], "embedding", 20, []),
    ("sum-negative-zeros", "sum", [1000], "negative-zero", 0, []),
    # More than 2^20 rows of 4 vectors (2^25 floats for AVX2, 2^26 for AVX512):
    # multi_row_sum's level step grows from 2^4 to 2^5.
    ("sum-70000001", "sum", [70000001], "positive", 21, []),
    ("mean0-1x1", "mean0", [1, 1], "mixed", 30, []),
    ("mean0-1x7", "mean0", [1, 7], "mixed", 31, []),
    ("mean0-1x4096-negative-zeros", "mean0", [1, 4096], "negative-zero", 0, []),
    ("mean0-2x3", "mean0", [2, 3], "mixed", 32, []),
    ("mean0-5x1", "mean0", [5, 1], "mixed", 33, []),
    ("mean0-7x9", "mean0", [7, 9], "mixed", 34, []),
    ("mean0-17x33", "mean0", [17, 33], "mixed", 35, []),
    ("mean0-3x64", "mean0", [3, 64], "mixed", 36, []),
    ("mean0-100x31", "mean0", [100, 31], "positive", 37, []),
    ("mean0-1000x8", "mean0", [1000, 8], "mixed", 38, []),
    ("mean0-1000x12", "mean0", [1000, 12], "mixed", 39, []),
    ("mean0-1000x40", "mean0", [1000, 40], "positive", 40, []),
    ("mean0-1000x41", "mean0", [1000, 41], "mixed", 41, []),
    ("mean0-333x100", "mean0", [333, 100], "mixed", 42, []),
    ("mean0-129x255", "mean0", [129, 255], "positive", 43, []),
    ("mean0-4099x1000", "mean0", [4099, 1000], "mixed", 44, [4]),
    ("mean0-9000x6", "mean0", [9000, 6], "mixed", 45, []),
    ("mean0-40000x1", "mean0", [40000, 1], "mixed", 46, []),
    ("mean0-100003x1", "mean0", [100003, 1], "positive", 47, []),
    ("mean0-50000x5", "mean0", [50000, 5], "positive", 48, []),
    ("mean0-70001x7", "mean0", [70001, 7], "mixed", 49, []),
    # Many threads on few columns: the last piece of the column split is under
    # one vector wide and takes scalar_outer_sum.
    ("mean0-2000x70", "mean0", [2000, 70], "mixed", 50, [35]),
    ("mean0-2000x100", "mean0", [2000, 100], "positive", 51, [13, 35]),
    ("mean0-32001x160", "mean0", [32001, 160], "mixed", 52, []),
    ("mean0-1100000x40", "mean0", [1100000, 40], "positive", 53, []),
    ("mean0-5000000x4", "mean0", [5000000, 4], "positive", 54, []),
    # The Alpaca case: a LLaMA-7B embedding (32000 rows of 4096) averaged.
    ("mean0-32000x4096", "mean0", [32000, 4096], "embedding", 55, []),
    ("mean0-32000x5120", "mean0", [32000, 5120], "embedding", 56, []),
]


def worker(capability):
    """Runs every case under one ATEN_CPU_CAPABILITY; prints results as JSON."""
    import torch

    shown = torch.__config__.show()
    used = shown.split("CPU capability usage: ")[1].split("\n")[0].strip()
    results = {"torch": torch.__version__, "capability": used, "cases": {}}
    for name, op, shape, kind, seed, extra_threads in CASES:
        numel = int(np.prod(shape))
        x = torch.from_numpy(make_input(kind, seed, numel)).reshape(shape)
        by_threads = {}
        for threads in THREADS + extra_threads:
            torch.set_num_threads(threads)
            assert torch.get_num_threads() == threads
            if op == "sum":
                value = x.sum()
                by_threads[threads] = f"{int(value.view(torch.int32).item()) & M32:08x}"
            else:
                mean = x.mean(dim=0)
                # mean is sum then divide (ReduceOps.cpp); check that here too.
                assert torch.equal(mean.view(torch.int32), (x.sum(dim=0) / shape[0]).view(torch.int32))
                by_threads[threads] = mean.numpy().astype("<f4").tobytes().hex()
        results["cases"][name] = by_threads
        del x
    json.dump(results, sys.stdout)


def main():
    os.makedirs(OUT, exist_ok=True)
    for file in os.listdir(OUT):
        if file.endswith(".bin"):
            os.remove(os.path.join(OUT, file))
    runs = {}
    torch_version = None
    for capability, (reported, name) in CAPABILITIES.items():
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
        output = subprocess.run([sys.executable, __file__, "--worker", capability], env=env,
                                check=True, stdout=subprocess.PIPE).stdout
        run = json.loads(output)
        assert run["capability"] == reported, (capability, run["capability"])
        runs[name] = run["cases"]
        torch_version = run["torch"]

    files_by_digest = {}
    cases = []
    for name, op, shape, kind, seed, extra_threads in CASES:
        entry = {"name": name, "op": op, "shape": shape, "kind": kind, "seed": seed, "torch": {}}
        for capability, run in runs.items():
            per_threads = {}
            for threads, value in run[name].items():
                if op == "sum":
                    per_threads[threads] = value
                    continue
                data = bytes.fromhex(value)
                digest = hashlib.sha256(data).hexdigest()
                if digest not in files_by_digest:
                    file = f"{name}-{capability.lower()}-t{threads}.bin"
                    with open(os.path.join(OUT, file), "wb") as f:
                        f.write(data)
                    files_by_digest[digest] = file
                per_threads[threads] = files_by_digest[digest]
            entry["torch"][capability] = per_threads
        cases.append(entry)

    index = {
        "generator": "scripts/make-reduce-fixtures.py",
        "torch": torch_version,
        "python": platform.python_version(),
        "note": "torch[capability][threads]: a sum's float32 bits (hex), or a file of a mean's float32 values",
        "kinds": {k: {"lowest_exponent": v[0], "highest_exponent": v[1], "signed": v[2]} for k, v in KINDS.items()},
        "cases": cases,
    }
    with open(os.path.join(OUT, "reduce.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
