#!/usr/bin/env python3
"""Writes legacy FastChat-style delta fixtures in test/fixtures/legacy/, with the
results PyTorch computes, for F16, BF16 and F32.

The base is the real Hugging Face-serialized tiny LLaMA in
../shared/realdata/tiny-llama-bf16/model.safetensors (read at generation time
only; only the outputs are committed). For each dtype D:

  base        = realdata.to(D)                       (torch.to: round to nearest even)
  target      = base + fine-tune-like noise (1e-2 of each tensor's RMS), in D, with one
                more vocabulary row in embed_tokens and lm_head (513 vs 512)
  delta       = FastChat make_delta: delta = target; delta -= base, or for the
                grown tensors delta[:b0, :b1] -= base; in D on CPU
  recovered   = FastChat apply_delta: delta[:b0, :b1] += base (or delta += base),
                in D on CPU; this is what expected.json records

Layout per dtype directory (d = f16, bf16, f32):
  base-bin/           base as 2 .bin shards + pytorch_model.bin.index.json (torch.save)
  base-safetensors/   (f16 only) base as 3 safetensors shards + index
                      (for bf16 the realdata file itself is the safetensors base)
  target/             target as one model.safetensors (+ config.json)
  delta-bin/          delta as 3 .bin shards + index (+ config.json), a layout unlike the base's
  delta-safetensors/  (f16, bf16) delta as 2 safetensors shards + index (+ config.json)

expected.json: per dtype, every tensor's dtype, shape and sha256 for base,
target, delta and recovered, plus how many recovered elements differ from
the target (why a legacy delta cannot be verified).

Needs torch (apt-get install python3-torch). Deterministic (fixed seeds).
Run from the repository root: python3 scripts/make-legacy-fixtures.py
"""
import collections
import hashlib
import json
import os
import shutil
import struct
import sys

import torch

REALDATA = os.path.join("..", "shared", "realdata", "tiny-llama-bf16")
OUT = os.path.join("test", "fixtures", "legacy")

DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}
GROWN = ("model.embed_tokens.weight", "lm_head.weight")


# --- safetensors by hand (the format is a length, a JSON header, the bytes) --

def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + n + begin: 8 + n + end])
        t = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]) if raw else torch.empty(0, dtype=DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors


def tensor_bytes(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    """Byte-compatible with Hugging Face's serializer: tensors sorted by dtype
    (descending, in its enum order) then name, compact JSON, `__metadata__`
    first, header padded with spaces to a multiple of 8."""
    order = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
    names = sorted(tensors, key=lambda k: (-order.index(NAMES[tensors[k].dtype]), k))
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name in names:
        size = tensors[name].numel() * tensors[name].element_size()
        header[name] = {"dtype": NAMES[tensors[name].dtype], "shape": list(tensors[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in names:
            f.write(tensor_bytes(tensors[name]))


# --- transformers-style sharding ---------------------------------------------

def shard(state_dict, count):
    """Splits in state-dict order into `count` runs of about equal bytes."""
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    shards, current, size = [], {}, 0
    for name, t in state_dict.items():
        if current and size >= total * (len(shards) + 1) / count and len(shards) < count - 1:
            shards.append(current)
            current = {}
        current[name] = t
        size += t.numel() * t.element_size()
    shards.append(current)
    assert len(shards) == count
    return shards


def save_sharded(directory, state_dict, count, fmt):
    os.makedirs(directory, exist_ok=True)
    shards = shard(state_dict, count)
    weight_map = {}
    for i, part in enumerate(shards):
        if fmt == "bin":
            file = f"pytorch_model-{i + 1:05d}-of-{count:05d}.bin"
            torch.save({k: v.clone() for k, v in part.items()}, os.path.join(directory, file))
        else:
            file = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            write_safetensors(os.path.join(directory, file), part, {"format": "pt"})
        for k in part:
            weight_map[k] = file
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    name = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    with open(os.path.join(directory, name), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


def write_config(directory, dtype, vocab):
    with open(os.path.join(REALDATA, "config.json")) as f:
        config = json.load(f)
    config["torch_dtype"] = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    config["vocab_size"] = vocab
    with open(os.path.join(directory, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


# --- the model ---------------------------------------------------------------

def llama_order(names):
    """LlamaForCausalLM.state_dict() order: embeddings, layers, norm, lm_head."""
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]
    layers = sorted({int(n.split(".")[2]) for n in names if n.startswith("model.layers.")})
    order = ["model.embed_tokens.weight"]
    order += [f"model.layers.{i}.{p}.weight" for i in layers for p in per_layer]
    order += ["model.norm.weight", "lm_head.weight"]
    assert sorted(order) == sorted(names), "unexpected tensor names in the base"
    return order


def describe(state_dict):
    return {
        name: {"dtype": NAMES[t.dtype], "shape": list(t.shape), "sha256": hashlib.sha256(tensor_bytes(t)).hexdigest()}
        for name, t in state_dict.items()
    }


def make(dtype, real, seed):
    g = torch.Generator().manual_seed(seed)
    base = collections.OrderedDict((k, real[k].to(dtype).clone()) for k in llama_order(list(real)))

    target = collections.OrderedDict()
    for name, b in base.items():
        b32 = b.to(torch.float32)
        # A fine-tune moves every weight by about the same absolute step: here
        # 1e-2 of the tensor's typical magnitude (its RMS). Weights smaller
        # than that change by more than themselves, which is where
        # (target - base) + base stops being exact in F16 and BF16 (about
        # 0.3% of elements, as measured on real fine-tunes); at 1e-3 F16
        # would round-trip exactly and show nothing.
        scale = b32.pow(2).mean().sqrt()
        t = b32 + 1e-2 * scale * torch.randn(b.shape, generator=g)
        if name in GROWN:  # one new token, initialised like a fresh embedding row
            t = torch.cat([t, 0.02 * torch.randn(1, t.shape[1], generator=g)])
        target[name] = t.to(dtype)

    # FastChat make_delta, in the model's dtype on CPU
    delta = collections.OrderedDict()
    for name, t in target.items():
        d = t.clone()
        b = base[name]
        if d.shape == b.shape:
            d -= b
        else:
            d[: b.shape[0], : b.shape[1]] -= b
        delta[name] = d

    # FastChat apply_delta, in the delta's dtype on CPU
    recovered = collections.OrderedDict()
    for name, d in delta.items():
        r = d.clone()
        b = base[name]
        if r.shape == b.shape:
            r += b
        else:
            r[: b.shape[0], : b.shape[1]] += b
        recovered[name] = r

    return base, target, delta, recovered


def main():
    if not os.path.isdir("scripts"):
        sys.exit("run from the repository root")
    real_path = os.path.join(REALDATA, "model.safetensors")
    real = read_safetensors(real_path)
    # The hand-written serializer must reproduce the real file byte for byte.
    check = os.path.join(OUT + ".check.safetensors")
    write_safetensors(check, real)
    with open(check, "rb") as a, open(real_path, "rb") as b:
        assert a.read() == b.read(), "write_safetensors is not byte-compatible with the real file"
    os.remove(check)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    expected = {"torch": torch.__version__, "base_source": "realdata tiny-llama-bf16/model.safetensors", "dtypes": {}}
    for i, (label, dtype) in enumerate([("f16", torch.float16), ("bf16", torch.bfloat16), ("f32", torch.float32)]):
        base, target, delta, recovered = make(dtype, real, seed=100 + i)
        d = os.path.join(OUT, label)
        save_sharded(os.path.join(d, "base-bin"), base, 2, "bin")
        if label == "f16":
            save_sharded(os.path.join(d, "base-safetensors"), base, 3, "safetensors")
        os.makedirs(os.path.join(d, "target"))
        write_safetensors(os.path.join(d, "target", "model.safetensors"), target, {"format": "pt"})
        write_config(os.path.join(d, "target"), dtype, 513)
        save_sharded(os.path.join(d, "delta-bin"), delta, 3, "bin")
        write_config(os.path.join(d, "delta-bin"), dtype, 513)
        if label != "f32":
            save_sharded(os.path.join(d, "delta-safetensors"), delta, 2, "safetensors")
            write_config(os.path.join(d, "delta-safetensors"), dtype, 513)

        # What was written reads back as what was computed.
        for directory in ("base-bin", "delta-bin"):
            index = json.load(open(os.path.join(d, directory, "pytorch_model.bin.index.json")))
            loaded = {}
            for file in sorted(set(index["weight_map"].values())):
                loaded.update(torch.load(os.path.join(d, directory, file)))
            source = base if directory == "base-bin" else delta
            assert describe(loaded) == describe(source)

        differing = sum(int((recovered[k].view(-1) != target[k].view(-1)).sum()) for k in target)
        expected["dtypes"][label] = {
            "dtype": NAMES[dtype],
            "base": describe(base),
            "target": describe(target),
            "delta": describe(delta),
            "recovered": describe(recovered),
            "recovered_elements_differing_from_target": differing,
            "elements": sum(t.numel() for t in target.values()),
        }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        f.write(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
