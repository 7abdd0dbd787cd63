#!/usr/bin/env python3
"""PyTorch stand-in for FastChat's apply_delta, shard by shard, for `npm run bench`.

For each delta shard: load it and the base tensors it needs, `delta += base`
in the delta's dtype (torch CPU arithmetic, as FastChat's `param.data +=
base[name]`), save the shard. It verifies nothing. Safetensors files are read
and written with a few lines of Python (the `safetensors` package is used when
installed) so that only torch is needed.

usage: torch-apply-bench.py BASE_DIR DELTA_DIR OUT_DIR
"""
import json
import os
import sys

import torch

DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}

try:
    from safetensors.torch import load_file, save_file
except ImportError:
    def load_file(path):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            data = bytearray(os.path.getsize(path) - 8 - n)
            f.readinto(data)
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dtype = DTYPES[info["dtype"]]
            count = (end - begin) // torch.tensor([], dtype=dtype).element_size()
            tensors[name] = torch.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(info["shape"])
        return tensors

    def save_file(tensors, path, metadata=None):
        names = sorted(tensors)
        header, offset = {}, 0
        if metadata:
            header["__metadata__"] = metadata
        for name in names:
            t = tensors[name]
            size = t.numel() * t.element_size()
            dtype = next(k for k, v in DTYPES.items() if v == t.dtype)
            header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for name in names:
                f.write(tensors[name].contiguous().view(torch.uint8).numpy().data)


def weight_map(directory):
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return json.load(f)["weight_map"]
    return {name: "model.safetensors" for name in load_file(os.path.join(directory, "model.safetensors"))}


def main(base_dir, delta_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    base_map, delta_map = weight_map(base_dir), weight_map(delta_dir)
    loaded_name, loaded = None, None
    for shard in sorted(set(delta_map.values())):
        delta = load_file(os.path.join(delta_dir, shard))
        for name, param in delta.items():
            if name not in base_map:
                continue
            if base_map[name] != loaded_name:
                loaded_name, loaded = base_map[name], None
                loaded = load_file(os.path.join(base_dir, loaded_name))
            param += loaded[name].to(param.dtype)
        save_file(delta, os.path.join(out_dir, shard), metadata={"format": "pt"})
        del delta


if __name__ == "__main__":
    main(*sys.argv[1:4])
