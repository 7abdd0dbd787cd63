#!/usr/bin/env python3
"""Writes test/fixtures/gguf/q8_0/: float32 blocks of 32 values and the Q8_0
bytes gguf-py's own quants.quantize gives for them, the oracle the fast
(WebAssembly) and reference (TypeScript) Q8_0 quantizers are tested against.

The blocks are the cases where an implementation can drift from numpy:
exact .5 ties of x * (1/d) (gguf-py rounds half away from zero), values a
float32 ulp either side of a tie, all-zero blocks and signed zeros, float32
subnormals (d underflows to 0, or 1/d overflows to infinity), a d that is a
float16 subnormal or overflows float16, infinities, NaNs of either sign and
any payload at any position, the extremes of float32, and random blocks
(random magnitudes, and random bit patterns of every kind).

values.f32: the blocks, little-endian float32; q8_0.bin: 34 bytes per block
(float16 d, then 32 int8), exactly gguf-py's output.

Deterministic. Needs numpy and gguf-py (llama.cpp's `gguf` package, 0.19.0:
a directory holding the `gguf` package, given by --gguf-py, else importable).
Run from the repository root: python3 scripts/make-q8-0-fixtures.py [--gguf-py PATH]
"""
import argparse
import os
import sys
import warnings

import numpy as np

OUT = os.path.join("test", "fixtures", "gguf", "q8_0")

parser = argparse.ArgumentParser()
parser.add_argument("--gguf-py", help="directory holding gguf-py (llama.cpp's gguf package)")
args = parser.parse_args()
if args.gguf_py:
    sys.path.insert(0, args.gguf_py)
import gguf  # noqa: E402
import gguf.quants  # noqa: E402

rng = np.random.default_rng(20261206)


def bits(*patterns):
    return np.array(patterns, dtype=np.uint32).view(np.float32)


def block(values, fill=0.0):
    b = np.full(32, fill, dtype=np.float32)
    b[: len(values)] = values
    return b


def next_up(x):
    return np.nextafter(np.float32(x), np.float32(np.inf), dtype=np.float32)


def next_down(x):
    return np.nextafter(np.float32(x), np.float32(-np.inf), dtype=np.float32)


blocks = []
# Exact ties: with max|x| = 127, d = 1 and 1/d = 1, so x * (1/d) = x.
ties = [k + 0.5 for k in range(-127, 127)]
for start in range(0, len(ties), 31):
    blocks.append(block([127.0] + ties[start:start + 31]))
# A float32 ulp either side of every tie below 32.
near = []
for k in range(0, 32):
    near += [next_down(k + 0.5), next_up(k + 0.5), -next_down(k + 0.5), -next_up(k + 0.5)]
for start in range(0, len(near), 31):
    blocks.append(block([-127.0] + near[start:start + 31]))
# Ties that arise from the scale: max|x| = 254 (d = 2), and max|x| = 63.5 (d = 0.5).
blocks.append(block([254.0] + [2 * k + 1 for k in range(-15, 16)]))
blocks.append(block([63.5] + [(k + 0.5) / 2 for k in range(-15, 16)]))
# Zeros.
blocks.append(block([]))
blocks.append(block([-0.0] * 32))
blocks.append(block([0.0, -0.0] * 16))
blocks.append(block([-0.0, 1.0, -1.0, 0.0, 2.5]))
# float32 subnormals: d underflows to 0, or 1/d overflows to infinity, or d is subnormal and 1/d finite.
blocks.append(block(bits(0x00000001, 0x80000001, 0x00000002)))
blocks.append(block(bits(0x007fffff, 0x80400000, 0x00000010)))
blocks.append(block([1e-39, -3e-39, 2e-40]))
blocks.append(block([1.2e-36, -5e-37, 1e-38, 7e-45]))
blocks.append(block(bits(0x00800000, 0x80800000, 0x00000001)))
# A d in float16's subnormal range, and one that rounds to float16's largest / overflows it.
blocks.append(block([1e-5 * 127, -3e-6, 7e-6, 1e-6]))
blocks.append(block([6.1e-5 * 127, 3e-5, -1e-5]))
blocks.append(block([65504 * 127, -1e6, 3e5, 1.0]))
blocks.append(block([65520 * 127, -1e6, 3e5, 1.0]))
blocks.append(block([3.0e38, -1.0e38, 1.0e30, 1.0]))
blocks.append(block(bits(0x7f7fffff, 0xff7fffff, 0x3f800000)))
# Infinities.
blocks.append(block([np.inf, 1.0, -2.0]))
blocks.append(block([1.0, -np.inf, 3.0]))
blocks.append(block([np.inf, -np.inf]))
blocks.append(block([], fill=np.inf))
# NaNs: either sign, quiet or signalling, payloads, first, middle, last, with and without infinities.
blocks.append(block(bits(0x7fc00000, 0x3f800000)))
blocks.append(block(list(bits(0x3f800000, 0x40000000)) + list(bits(0xffc54321))))
blocks.append(block(list(np.full(31, 0.25, dtype=np.float32)) + list(bits(0x7f800001))))
blocks.append(block(bits(0x7fc12345, 0x3f800000, 0x7fc00001)))
blocks.append(block(bits(0x7f800000, 0x7fa00000, 0xff800000)))
blocks.append(block([], fill=np.nan))
# Random blocks: normal weights at many scales, plus a few of every bit pattern.
for scale in [1e-30, 1e-12, 1e-8, 3e-5, 1e-3, 0.02, 0.5, 1.0, 7.0, 1e3, 1e5, 1e9, 1e30]:
    for _ in range(12):
        blocks.append((rng.standard_normal(32) * scale).astype(np.float32))
for _ in range(64):
    blocks.append(rng.integers(0, 2**32, size=32, dtype=np.uint64).astype(np.uint32).view(np.float32))
# Random blocks whose max is exactly 127 (d = 1): every element lands on a multiple of 1/8, many on .5 ties.
for _ in range(24):
    b = (rng.integers(-1016, 1017, size=32) / 8).astype(np.float32)
    b[rng.integers(0, 32)] = 127.0
    blocks.append(b)
# Random float16 values widened (as a float16 model's weights reach the quantizer), subnormal halves included.
for _ in range(24):
    blocks.append(rng.integers(0, 2**16, size=32, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32))

values = np.stack(blocks).astype(np.float32)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    q8 = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
assert q8.shape == (len(blocks), 34), q8.shape

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "values.f32"), "wb") as f:
    f.write(values.astype("<f4").tobytes())
with open(os.path.join(OUT, "q8_0.bin"), "wb") as f:
    f.write(q8.tobytes())
print(f"{len(blocks)} blocks; numpy {np.__version__}")
