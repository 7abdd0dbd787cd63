#!/usr/bin/env python3
"""Writes the oracles for our PyTorch checkpoint writer: state dicts saved with
real torch.save into test/fixtures/pytorch-writer/, and expected.json naming,
for each file, the container torch.save was given (dict or OrderedDict), how
many tensors it holds, and the sha256 and size of the whole file.

Our writer rebuilds each file from the tensors our reader gets back, and
must produce these exact bytes. Each state dict follows the rules the writer
reproduces: every tensor contiguous, with a storage of its own (as
transformers' save_pretrained saves shards), requires_grad off.

The cases cross each boundary of the pickle and zip encodings: every dtype
torch 1.13 can store that safetensors names; 0-d and empty tensors; 4-d
shapes (a MARK tuple), shape and numel values needing BININT1, BININT2 and
BININT; non-ASCII names; 1,000 and 1,001 entries in a dict and in an
OrderedDict (the C pickler batches SETITEMS by 1,000 and treats a dict and
an iterator differently at the edges); more than 256 memo entries
(BINPUT -> LONG_BINPUT); data/N records in string order (data/10 before
data/2); archive names from file names (shards named as transformers names
them, a name with several dots).

Deterministic (fixed seeds). Needs torch (Debian's python3-torch).
Run from the repository root: /usr/bin/python3 scripts/make-pytorch-writer-fixtures.py
"""
import collections
import hashlib
import json
import os

import torch

OUT = os.path.join("test", "fixtures", "pytorch-writer")

expected = {"torch": torch.__version__, "files": {}}


def save(name, state_dict):
    for key, t in state_dict.items():
        assert t.is_contiguous() and t.storage_offset() == 0 and not t.requires_grad, key
    path = os.path.join(OUT, name)
    torch.save(state_dict, path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    expected["files"][name] = {
        "container": "OrderedDict" if isinstance(state_dict, collections.OrderedDict) else "dict",
        "tensors": len(state_dict),
        "sha256": digest,
        "size": os.path.getsize(path),
    }


def gen(seed):
    return torch.Generator().manual_seed(seed)


def mixed():
    g = gen(1)
    base = torch.randn(3, 5, generator=g)
    sd = {}
    sd["f16"] = base.to(torch.float16)
    sd["bf16"] = base.to(torch.bfloat16)
    sd["f32"] = base.clone()
    sd["f64"] = torch.randn(2, 3, generator=g, dtype=torch.float64)
    sd["i64"] = torch.randint(-2**62, 2**62, (4,), generator=g, dtype=torch.int64)
    sd["i32"] = torch.randint(-2**31, 2**31 - 1, (2, 2), generator=g, dtype=torch.int32)
    sd["i16"] = torch.randint(-2**15, 2**15 - 1, (3,), generator=g, dtype=torch.int16)
    sd["i8"] = torch.randint(-128, 127, (5,), generator=g, dtype=torch.int8)
    sd["u8"] = torch.randint(0, 255, (2, 3), generator=g, dtype=torch.uint8)
    sd["bool"] = torch.randn(7, generator=g) > 0
    sd["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    sd["scalar_i64"] = torch.tensor(7, dtype=torch.int64)
    sd["empty"] = torch.zeros(0, dtype=torch.float32)
    sd["empty_2d"] = torch.zeros(0, 4, dtype=torch.float16)
    sd["four_d"] = torch.randn(2, 1, 3, 2, generator=g)
    sd["five_d"] = torch.randn(1, 2, 1, 2, 1, generator=g, dtype=torch.bfloat16)
    # 300 and 70,000: shape, stride and numel values past BININT1 and BININT2.
    sd["wide"] = torch.randn(2, 300, generator=g, dtype=torch.float16)
    sd["long_bool"] = torch.randn(70000, generator=g) > 0
    sd["model.layers.0.self_attn.q_proj.weight"] = torch.randn(4, 4, generator=g, dtype=torch.float16)
    sd["ünïcödé.weight"] = torch.randn(2, generator=g)
    save("mixed.bin", sd)
    ordered = collections.OrderedDict((k, sd[k].clone()) for k in ["f16", "scalar", "empty", "four_d", "ünïcödé.weight"])
    save("ordered.bin", ordered)


def many(count, ordered):
    g = gen(count)
    sd = collections.OrderedDict() if ordered else {}
    for i in range(count):
        # Alternating dtypes: one storage type global per dtype, memoized once.
        dtype = torch.float16 if i % 3 else torch.bfloat16
        sd[f"model.layers.{i // 7}.mlp.p{i % 7}.weight"] = torch.randn(1, generator=g).to(dtype)
    save(f"{'ordered' if ordered else 'dict'}-{count}.bin", sd)


def llama_shards():
    """A tiny LLaMA-shaped model saved as transformers 4.x save_pretrained saves
    PyTorch shards: plain dicts, one per shard file, named -0000k-of-0000n."""
    g = gen(7)
    hidden, inter, vocab = 8, 16, 32
    names = [("model.embed_tokens.weight", (vocab, hidden))]
    for layer in range(2):
        p = f"model.layers.{layer}."
        names += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (hidden, hidden)),
            (p + "self_attn.v_proj.weight", (hidden, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    names += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    tensors = {n: torch.randn(*s, generator=g).to(torch.bfloat16 if "norm" in n else torch.float32) for n, s in names}
    # huggingface_hub's split (split_torch_state_dict_into_shards) at this limit gives two shards.
    max_shard_size = 3632
    shards, current, size = [], [], 0
    for n, _ in names:
        nbytes = tensors[n].numel() * tensors[n].element_size()
        if current and size + nbytes > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(n)
        size += nbytes
    shards.append(current)
    assert len(shards) == 2
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        save(f"sharded/{file}", {n: tensors[n] for n in shard})
        weight_map.update({n: file for n in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(OUT, "sharded", "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    expected["sharded"] = {"max_shard_size": max_shard_size}


def module_state_dict():
    """torch.save(model.state_dict()) of an nn.Module: an OrderedDict whose
    `_metadata` (module versions) the pickle restores with BUILD. Our writer
    does not write this form; a delta records such a release's skeleton and
    rebuilds it byte for byte."""
    torch.manual_seed(11)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = torch.nn.Embedding(16, 4)
            self.proj = torch.nn.Linear(4, 4, bias=True)
            self.norm = torch.nn.LayerNorm(4)

    model = Tiny().to(torch.float16)
    os.makedirs(os.path.join(OUT, "state-dict"), exist_ok=True)
    path = os.path.join(OUT, "state-dict", "pytorch_model.bin")
    torch.save(model.state_dict(), path)
    with open(path, "rb") as f:
        expected["state-dict"] = {"sha256": hashlib.sha256(f.read()).hexdigest(), "tensors": len(model.state_dict())}


def dotted_name():
    # The archive name is the file name up to its last dot.
    save("consolidated.00.pth", {"tok_embeddings.weight": torch.randn(3, 2, generator=gen(9), dtype=torch.float16)})


if __name__ == "__main__":
    os.makedirs(os.path.join(OUT, "sharded"), exist_ok=True)
    mixed()
    for count in (1000, 1001):
        for ordered in (False, True):
            many(count, ordered)
    llama_shards()
    dotted_name()
    module_state_dict()
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, ensure_ascii=False)
        f.write("\n")
