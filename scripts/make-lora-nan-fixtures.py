#!/usr/bin/env python3
"""Writes test/fixtures/lora/special-values.json: torch's float32 `B @ A`, its
scaled value and the merge's in-place adds, on factors full of special values
(NaN payloads of both signs, signalling NaNs, infinities, zeros, float32
subnormals), recorded bit for bit. The LoRA kernels (src/kernels/low-rank.ts,
fast-low-rank.ts) must give the same bits: NaN propagation is left to the
hardware by torch (x86 keeps the first NaN operand, quieted, and gives
0xFFC00000 for an invalid operation), so this records which operand that is.

Needs Debian's python3-torch 1.13 (BLAS_INFO=generic). Deterministic. Run
from the repository root:  python3 scripts/make-lora-nan-fixtures.py
"""
import json
import random
import struct

import torch

OUT = "test/fixtures/lora/special-values.json"
torch.set_num_threads(1)
rng = random.Random(1919)


def tensor(bits, shape):
    return torch.frombuffer(bytearray(struct.pack("<%dI" % len(bits), *bits)), dtype=torch.float32).reshape(shape).clone()


def bits32(t):
    return [v & 0xFFFFFFFF for v in t.contiguous().view(torch.int32).flatten().tolist()]


def bits16(t):
    return [v & 0xFFFF for v in t.contiguous().view(torch.int16).flatten().tolist()]


def f32(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def special():
    return rng.choice([
        0x7FC00000 | rng.randrange(1 << 22), 0xFFC00000 | rng.randrange(1 << 22),  # quiet NaNs
        0x7F800000 | rng.randrange(1, 1 << 22), 0xFF800000 | rng.randrange(1, 1 << 22),  # signalling (some quiet)
        0x7F800000, 0xFF800000, 0, 0x80000000,
        rng.randrange(1, 1 << 23), 0x80000000 | rng.randrange(1, 1 << 23),  # subnormals
        f32(rng.choice([3e38, -3e38, 1e20, -1e20])),
    ])


def factors(m, k, n, specials):
    b = [f32(rng.uniform(-1, 1)) for _ in range(m * k)]
    a = [f32(rng.uniform(-1, 1)) for _ in range(k * n)]
    for _ in range(specials):
        side = rng.choice([a, b])
        side[rng.randrange(len(side))] = special()
    return b, a


cases = []
for _ in range(80):
    m = rng.choice([1, 2, 3, 5, 8])
    k = rng.choice([1, 2, 3, 4, 5, 8, 16, 17, 32])
    n = rng.choice([1, 2, 3, 4, 5, 7, 9, 16, 17])
    b, a = factors(m, k, n, rng.randint(1, 4))
    scale = rng.choice([1.0, 2.0, 0.5, 16 / 8 ** 0.5, 1e30])
    B, A = tensor(b, (m, k)), tensor(a, (k, n))
    product = B @ A
    scaled = product * scale
    # The merge's adds: a float16 W plus the float32 update (Chinese-LLaMA-Alpaca's,
    # PEFT >= 0.12's), and plus the update cast to float16 (PEFT before 0.12).
    w_bits = [rng.choice([0x3C00, 0xBC00, 0x7E01, 0xFE02, 0x7C00, 0xFC00, 0x0001, rng.randrange(1 << 16)]) for _ in range(m * n)]
    w = torch.tensor(w_bits, dtype=torch.int32).to(torch.int16).view(torch.float16).reshape(m, n)
    plus_float = w.clone()
    plus_float += scaled
    plus_half = w.clone()
    plus_half += scaled.half()
    cases.append({
        "m": m, "k": k, "n": n, "scale": scale, "b": b, "a": a,
        "product": bits32(product), "scaled": bits32(scaled),
        "w16": w_bits, "w16PlusFloat": bits16(plus_float), "w16PlusHalf": bits16(plus_half),
    })

with open(OUT, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
print(f"{OUT}: {len(cases)} cases")
