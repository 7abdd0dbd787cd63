#!/usr/bin/env python3
"""Writes test/fixtures/legacy-integers/: a legacy (FastChat-style, no
delta.json) base and delta whose non-float tensors exercise torch's integer
and bool addition, with what torch computes for `base + delta`.

FastChat's apply_delta does `param.data += delta_state_dict[name]` for every
base tensor; for integer tensors torch adds with two's-complement
wrap-around and for bool tensors `+=` is logical or. Our legacy apply must
give exactly these results (an earlier version XORed them).

Layout: base/pytorch_model.bin, delta/pytorch_model.bin (+ config.json),
expected.json: tensor -> {dtype, shape, sha256 of torch's base + delta}.

Needs torch (apt-get install python3-torch). Deterministic.
Run from the repository root: python3 scripts/make-integer-legacy-fixture.py
"""
import hashlib
import json
import os

import torch

OUT = os.path.join("test", "fixtures", "legacy-integers")
NAMES = {torch.float16: "F16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
         torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def main():
    g = torch.Generator().manual_seed(7)
    base = {
        "model.position_ids": torch.arange(8, dtype=torch.int64),
        "model.big": torch.tensor([2**63 - 1, -2**63, 5, -5], dtype=torch.int64),
        "model.counts": torch.tensor([250, 3, 255, 0], dtype=torch.uint8),
        "model.small": torch.tensor([127, -128, 1, -1], dtype=torch.int8),
        "model.shorts": torch.tensor([32767, -32768, 12, 0], dtype=torch.int16),
        "model.ints": torch.tensor([2**31 - 1, -2**31, 100, -7], dtype=torch.int32),
        "model.mask": torch.tensor([True, False, True, False]),
        "model.norm.weight": torch.randn(16, generator=g).to(torch.float16),
    }
    delta = {
        "model.position_ids": torch.arange(8, dtype=torch.int64),
        "model.big": torch.tensor([1, -1, 2**62, -2**62], dtype=torch.int64),
        "model.counts": torch.tensor([16, 4, 1, 0], dtype=torch.uint8),
        "model.small": torch.tensor([1, -1, 126, -127], dtype=torch.int8),
        "model.shorts": torch.tensor([1, -1, -12, 7], dtype=torch.int16),
        "model.ints": torch.tensor([1, -1, 2**31 - 100, 7], dtype=torch.int32),
        "model.mask": torch.tensor([True, True, False, False]),
        "model.norm.weight": (torch.randn(16, generator=g) * 1e-2).to(torch.float16),
    }
    expected = {}
    for name, b in base.items():
        out = b.clone()
        out += delta[name]  # FastChat: param.data += delta_state_dict[name]
        data = out.contiguous().view(torch.uint8).numpy().tobytes() if out.dtype != torch.bool else out.numpy().astype("uint8").tobytes()
        expected[name] = {"dtype": NAMES[out.dtype], "shape": list(out.shape), "sha256": hashlib.sha256(data).hexdigest()}
    for sub, sd in (("base", base), ("delta", delta)):
        os.makedirs(os.path.join(OUT, sub), exist_ok=True)
        torch.save(sd, os.path.join(OUT, sub, "pytorch_model.bin"))
    with open(os.path.join(OUT, "delta", "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "torch_dtype": "float16"}, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"recovered": expected}, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
