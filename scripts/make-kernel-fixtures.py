#!/usr/bin/env python3
"""Writes test/fixtures/kernels/: what real PyTorch (CPU) computes for float
conversions and element-wise add/sub, the oracle for src/kernels/ and the
conversions in src/dtypes.ts.

Every .bin file is a raw little-endian array; kernels.json lists each file's
element type and count. Deterministic (fixed seed, one thread). Run with the
Python that has torch:  python3 scripts/make-kernel-fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "kernels")
rng = np.random.default_rng(20240601)
files = {}


def save(name, array, note):
    array = np.ascontiguousarray(array)
    array.astype(array.dtype.newbyteorder("<")).tofile(os.path.join(OUT, name + ".bin"))
    files[name] = {"type": {"uint16": "u16", "uint32": "u32", "uint64": "u64"}[array.dtype.name],
                   "count": int(array.size), "note": note}


def tensor_from_bits(bits, dtype):
    bits = np.asarray(bits)
    if dtype == torch.float16:
        return torch.from_numpy(bits.astype(np.uint16).view(np.float16).copy())
    if dtype == torch.bfloat16:
        return torch.from_numpy(bits.astype(np.uint16).view(np.int16).copy()).view(torch.bfloat16)
    if dtype == torch.float32:
        return torch.from_numpy(bits.astype(np.uint32).view(np.float32).copy())
    return torch.from_numpy(bits.astype(np.uint64).view(np.float64).copy())


def bits_of(t):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16).copy()
    view = {torch.float16: np.uint16, torch.float32: np.uint32, torch.float64: np.uint64}[t.dtype]
    return t.numpy().view(view).copy()


# --- all 16-bit patterns: widening, round trips, half <-> bfloat16 ----------
every16 = np.arange(65536, dtype=np.uint16)
for name, dtype, other_name, other in (("f16", torch.float16, "bf16", torch.bfloat16),
                                        ("bf16", torch.bfloat16, "f16", torch.float16)):
    t = tensor_from_bits(every16, dtype)
    save(f"{name}_to_f32", bits_of(t.float()), f"torch .float() of every {name} pattern 0..65535")
    save(f"{name}_roundtrip", bits_of(t.float().to(dtype)), f"every {name} pattern through .float() and back")
    save(f"{name}_to_{other_name}", bits_of(t.to(other)), f"torch .to({other_name}) of every {name} pattern")
    # Widening to float64 is exact, so the low 32 bits are zero: keep the high word.
    wide = bits_of(t.double())
    assert not np.any(wide & 0xFFFFFFFF)
    save(f"{name}_to_f64_high", (wide >> 32).astype(np.uint32), f"high 32 bits of torch .double() of every {name} pattern (low 32 are zero)")

# --- float32 -> half / bfloat16 -----------------------------------------------
def f32_values():
    v = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000,
         0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
         0x7FC02000, 0x7FE00001, 0x7FA00000, 0x7F801000, 0x7F802000, 0x7F80E000,
         0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF,
         0x7F7F8000, 0x7F7F7FFF, 0x7F7F8001, 0x7F7E8000, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001]
    special_f = [65504.0, 65505.0, 65519.0, 65519.99609375, 65520.0, 65520.00390625, 65536.0, -65520.0,
                 2.0 ** -24, 2.0 ** -25, np.nextafter(np.float32(2.0 ** -25), np.float32(1)), 1.5 * 2.0 ** -24,
                 2.5 * 2.0 ** -24, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 2.0 ** -14 - 2.0 ** -24, 2.0 ** -26,
                 1.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.4e38]
    v += [int(np.float32(x).view(np.uint32)) for x in special_f]
    v += [int(np.float32(-x).view(np.uint32)) for x in special_f]
    out = np.array(v, dtype=np.uint32)
    # Halfway points between neighbouring halves, and one float32 ulp either side.
    h = rng.integers(0, 0x7BFF, 3000).astype(np.uint16)
    lo = h.view(np.float16).astype(np.float32)
    hi = (h + 1).astype(np.uint16).view(np.float16).astype(np.float32)
    mid = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    sign = (rng.integers(0, 2, mid.size) << 31).astype(np.uint32)
    mb = mid.view(np.uint32) | sign
    # Halfway points for bfloat16: low 16 bits exactly 0x8000, and 0x7FFF/0x8001.
    top = rng.integers(0, 0x10000, 1500).astype(np.uint32) << 16
    bf = np.concatenate([top | 0x8000, top | 0x7FFF, top | 0x8001])
    rand = rng.integers(0, 2 ** 32, 4000, dtype=np.uint64).astype(np.uint32)
    normal = (rng.standard_normal(1500) * 0.02).astype(np.float32).view(np.uint32)
    return np.concatenate([out, mb, mb - 1, mb + 1, bf, rand, normal]).astype(np.uint32)

f32in = f32_values()
save("f32_values", f32in, "float32 inputs: edges, NaN payloads, halfway cases, random")
x = tensor_from_bits(f32in, torch.float32)
save("f32_to_f16", bits_of(x.half()), "torch .half() of f32_values")
save("f32_to_bf16", bits_of(x.bfloat16()), "torch .bfloat16() of f32_values")
save("f32_to_f64", bits_of(x.double()), "torch .double() of f32_values")

# --- float64 -> half / bfloat16 / float32 ---------------------------------------
def f64_values():
    v = [0x0000000000000000, 0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
         0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x7FF4000000000000,
         0x7FFFFFFFFFFFFFFF, 0x7FF8000020000000, 0x7FF8000010000000, 0x7FF8040000000000,
         0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF]
    special = [3.4028234663852886e38, 3.4028235677973366e38, 3.5e38, 1e300, 1e-300, 1e-46, 1.4e-45, 7e-46,
               65504.0, 65519.999999, 65520.0, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 + 2.0 ** -60,
               1.0 + 2.0 ** -11 + 2.0 ** -40, 1.0 + 2.0 ** -11 - 2.0 ** -40,
               1.0 + 2.0 ** -8 + 2.0 ** -40, 1.0 + 2.0 ** -8 - 2.0 ** -40, 1.0 + 2.0 ** -24 + 2.0 ** -60]
    v += [int(np.float64(s).view(np.uint64)) for s in special]
    v += [int(np.float64(-s).view(np.uint64)) for s in special]
    out = np.array(v, dtype=np.uint64)
    # Just off the halfway point between neighbouring halves / bfloat16s, by less than
    # a float32 ulp: rounding through float32 first (double rounding) lands on the
    # tie, rounding directly does not. Shows which one torch does.
    h = rng.integers(0, 0x7BFF, 1000).astype(np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    mid = (lo + hi) / 2
    b = (rng.integers(0, 0x7F7F, 1000).astype(np.uint32) << 16)
    blo = b.view(np.float32).astype(np.float64)
    bhi = (b + 0x10000).astype(np.uint32).view(np.float32).astype(np.float64)
    bmid = (blo + bhi) / 2
    mids = np.concatenate([mid, bmid])
    eps = np.abs(mids) * 2.0 ** -40
    rand = rng.integers(0, 2 ** 64, 2000, dtype=np.uint64)
    normal = rng.standard_normal(1000) * 0.02
    return np.concatenate([out, mids.view(np.uint64), (mids + eps).view(np.uint64), (mids - eps).view(np.uint64),
                           rand, normal.view(np.uint64)]).astype(np.uint64)

f64in = f64_values()
save("f64_values", f64in, "float64 inputs: edges, NaN payloads, near-halfway cases, random")
y = tensor_from_bits(f64in, torch.float64)
save("f64_to_f16", bits_of(y.half()), "torch .half() of f64_values")
save("f64_to_bf16", bits_of(y.bfloat16()), "torch .bfloat16() of f64_values")
save("f64_to_f32", bits_of(y.float()), "torch .float() of f64_values")

# --- add / sub ------------------------------------------------------------------
SPECIAL16 = {
    "f16": [0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x0003, 0x01FF, 0x0200, 0x03FF, 0x83FF, 0x0400, 0x8400,
            0x0401, 0x3800, 0x3BFF, 0x3C00, 0xBC00, 0x3C01, 0xBC01, 0x3C02, 0x4000, 0x1400, 0x1000, 0x0C00,
            0x13FF, 0x7800, 0x7BFE, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7D55, 0xFD55, 0x7C01,
            0x7FFF, 0xFFFF, 0x5BFF, 0x6400, 0xE400, 0x3555, 0xB555, 0x2E66, 0x2400, 0xA400],
    "bf16": [0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x007F, 0x807F, 0x0080, 0x8080, 0x0081, 0x3F00, 0x3F7F,
             0x3F80, 0xBF80, 0x3F81, 0xBF81, 0x3F82, 0x4000, 0x3B80, 0x3C00, 0x7F00, 0x7F7E, 0x7F7F, 0xFF7F,
             0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7FA0, 0xFFA0, 0x7F81, 0x7FFF, 0xFFFF, 0x4B00, 0x4B80, 0xCB00,
             0x3EAB, 0xBEAB, 0x3C23, 0x0100, 0x8100],
}


def pairs16(name, dtype):
    specials = np.array(SPECIAL16[name], dtype=np.uint16)
    n = 7000
    uniform_a = rng.integers(0, 65536, n).astype(np.uint16)
    uniform_b = rng.integers(0, 65536, n).astype(np.uint16)
    # Fine-tune-like: weights around 0.02, deltas about 1e-3 of that scale.
    w = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.02).to(dtype)
    d = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 2e-4).to(dtype)
    # Same exponent neighbourhood: sums that cancel, carry, or round at ties.
    close_a = rng.integers(0, 65536, n).astype(np.uint16)
    close_b = (close_a.astype(np.int64) + rng.integers(-64, 65, n)).astype(np.uint16) ^ (rng.integers(0, 2, n).astype(np.uint16) << 15)
    # One operand special, the other random.
    sp_a = specials[rng.integers(0, specials.size, n)]
    sp_b = rng.integers(0, 65536, n).astype(np.uint16)
    cross_a = np.repeat(specials, specials.size)
    cross_b = np.tile(specials, specials.size)
    a = np.concatenate([uniform_a, bits_of(w), close_a, sp_a, sp_b, cross_a])
    b = np.concatenate([uniform_b, bits_of(d), close_b, sp_b, sp_a, cross_b])
    return a, b


def binary(name, dtype, a, b, note):
    ta, tb = tensor_from_bits(a, dtype), tensor_from_bits(b, dtype)
    save(f"{name}_add_a", a, f"{note}: first operand")
    save(f"{name}_add_b", b, f"{note}: second operand")
    save(f"{name}_add", bits_of(ta + tb), f"torch a + b on {name}_add_a, {name}_add_b")
    save(f"{name}_sub", bits_of(ta - tb), f"torch a - b on {name}_add_a, {name}_add_b")


for name, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
    a, b = pairs16(name, dtype)
    binary(name, dtype, a, b, "random bit patterns, fine-tune-like values, near neighbours, specials x random, specials x specials")

n32 = 5000
a32 = np.concatenate([rng.integers(0, 2 ** 32, n32, dtype=np.uint64).astype(np.uint32),
                      (rng.standard_normal(n32) * 0.02).astype(np.float32).view(np.uint32), f32in[:200]])
b32 = np.concatenate([rng.integers(0, 2 ** 32, n32, dtype=np.uint64).astype(np.uint32),
                      (rng.standard_normal(n32) * 2e-4).astype(np.float32).view(np.uint32), f32in[200:400]])
# NaN with NaN (which payload wins), NaN with numbers, Inf - Inf: every ordered pair.
nan_cases32 = np.array([0x7FC9ED62, 0xFFD2A1CF, 0x7F800001, 0xFFA00000, 0x7F800000, 0xFF800000, 0x3F800000, 0x80000000],
                       dtype=np.uint32)
a32 = np.concatenate([a32, np.repeat(nan_cases32, nan_cases32.size)])
b32 = np.concatenate([b32, np.tile(nan_cases32, nan_cases32.size)])
binary("f32", torch.float32, a32, b32, "random bit patterns, fine-tune-like values, edges, NaN/Inf pairs")
n64 = 1500
a64 = np.concatenate([rng.integers(0, 2 ** 64, n64, dtype=np.uint64), (rng.standard_normal(n64) * 0.02).view(np.uint64), f64in[:60]])
b64 = np.concatenate([rng.integers(0, 2 ** 64, n64, dtype=np.uint64), (rng.standard_normal(n64) * 2e-4).view(np.uint64), f64in[60:120]])
nan_cases64 = np.array([0x7FF9ED62AAAAAAAA, 0xFFF2A1CF55555555, 0x7FF0000000000001, 0xFFF4000000000000,
                        0x7FF0000000000000, 0xFFF0000000000000, 0x3FF0000000000000, 0x8000000000000000], dtype=np.uint64)
a64 = np.concatenate([a64, np.repeat(nan_cases64, nan_cases64.size)])
b64 = np.concatenate([b64, np.tile(nan_cases64, nan_cases64.size)])
binary("f64", torch.float64, a64, b64, "random bit patterns, fine-tune-like values, edges, NaN/Inf pairs")

meta = {"generator": "scripts/make-kernel-fixtures.py", "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown",
        "python": sys.version.split()[0], "files": files}
with open(os.path.join(OUT, "kernels.json"), "w") as f:
    json.dump(meta, f, indent=1)
    f.write("\n")
print("wrote", len(files), "files,", sum(os.path.getsize(os.path.join(OUT, k + ".bin")) for k in files), "bytes")
