#!/usr/bin/env python3
"""Writes test/fixtures/koala/: a tiny Koala-style diff in EasyLM's streaming
checkpoint format against the Meta checkpoint test/fixtures/meta/two-shards
(run scripts/make-meta-fixtures.py first), and expected.json: the Hugging
Face model EasyLM's own three-step recovery leaves (name, dtype, shape,
sha256 of each tensor), computed with the scripts' arithmetic in torch.

EasyLM read at young-geng/EasyLM (paths and commits):
  EasyLM/checkpoint.py at 75ca80dd: StreamingCheckpointer.save_train_state_to_file
      writes, for each (key path, array) of flatten_dict(to_state_dict(tree)),
      msgpack.Packer().pack((key, flax.serialization.to_bytes(value))) after
      float_tensor_to_dtype(value, float_dtype); load_checkpoint unpacks the
      same stream.
  google/flax flax/serialization.py (00a973a4): to_bytes(array) =
      msgpack.packb(array, default=_msgpack_ext_pack, strict_types=True): an
      ExtType(1, msgpack.packb((shape, dtype.name, arr.tobytes('C')),
      use_bin_type=True)); arrays over 2**30 bytes are chunked (not here).
  EasyLM/models/llama/convert_torch_to_easylm.py at f082cf87: the base, ranks
      concatenated like convert_llama_weights_to_hf.py (dim 1 for
      tok_embeddings, wo, w2; dim 0 otherwise), every linear weight
      transposed into a Flax kernel, wq/wk NOT permuted, dtype kept (float16),
      saved with float_dtype=None.
  EasyLM/scripts/diff_checkpoint.py at 75ca80dd: tree_map(b + t) (recover) or
      (t - b) (make) over the numpy arrays the loader gives: float16 with
      bfloat16 promotes to float32 (the add or subtract is one float32
      operation), then saved with float_dtype='bf16' (astype: round to nearest
      even).
  EasyLM/models/llama/convert_easylm_to_hf.py at 0e8e52d3: every "kernel" but
      the norms and ln_f transposed (tensor.T), then float_tensor_to_dtype(
      tensor, 'fp16') (bfloat16 -> float16, round to nearest even), wq/wk
      permuted as transformers' script does, then from_pretrained(
      torch_dtype=float16).
numpy/ml_dtypes and torch agree on each of these roundings (all round to
nearest even from an exactly representable float32), so torch computes them
here. The fine-tuned weights are the base plus noise, in bfloat16 (what
EasyLM trains and saves).

Deterministic. Needs torch and msgpack (Debian: python3-torch, python3-msgpack).
Run from the repository root: python3 scripts/make-koala-fixtures.py
"""
import hashlib
import json
import os
import shutil

import msgpack
import torch

META = os.path.join("test", "fixtures", "meta", "two-shards")
OUT = os.path.join("test", "fixtures", "koala")
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def tensor_bytes(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def to_bytes(t):
    """flax.serialization.to_bytes of one array: the ndarray ExtType, packed as msgpack_serialize packs it."""
    payload = msgpack.packb((list(t.shape), DTYPE_NAMES[t.dtype], tensor_bytes(t)), use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(1, payload), strict_types=True)


def write_streaming(path, flat):
    """StreamingCheckpointer.save_train_state_to_file: one record per (key path, array)."""
    packer = msgpack.Packer()
    with open(path, "wb") as f:
        for key, value in flat.items():
            f.write(packer.pack((key, to_bytes(value))))


def easylm_base(params, ckpts):
    """convert_torch_to_easylm.main's tree, flattened in flatten_dict's (insertion) order."""
    cat = lambda name, axis: torch.cat([c[name] for c in ckpts], dim=axis)
    flat = {("transformer", "wte", "embedding"): cat("tok_embeddings.weight", 1),
            ("transformer", "ln_f", "kernel"): ckpts[0]["norm.weight"]}
    for layer in range(params["n_layers"]):
        h = ("transformer", "h", "%d" % layer)
        m = "layers.%d." % layer
        flat[h + ("attention", "wq", "kernel")] = cat(m + "attention.wq.weight", 0).t()
        flat[h + ("attention", "wk", "kernel")] = cat(m + "attention.wk.weight", 0).t()
        flat[h + ("attention", "wv", "kernel")] = cat(m + "attention.wv.weight", 0).t()
        flat[h + ("attention", "wo", "kernel")] = cat(m + "attention.wo.weight", 1).t()
        flat[h + ("feed_forward", "w1", "kernel")] = cat(m + "feed_forward.w1.weight", 0).t()
        flat[h + ("feed_forward", "w2", "kernel")] = cat(m + "feed_forward.w2.weight", 1).t()
        flat[h + ("feed_forward", "w3", "kernel")] = cat(m + "feed_forward.w3.weight", 0).t()
        flat[h + ("attention_norm", "kernel")] = ckpts[0][m + "attention_norm.weight"]
        flat[h + ("ffn_norm", "kernel")] = ckpts[0][m + "ffn_norm.weight"]
    flat[("lm_head", "kernel")] = cat("output.weight", 0).t()
    return flat


def to_hf(params, flat):
    """convert_easylm_to_hf: kernels (not norms) transposed, fp16, wq/wk permuted; LlamaForCausalLM order."""
    dim, n_heads = params["dim"], params["n_heads"]

    def permute(w):
        return w.view(n_heads, dim // n_heads // 2, 2, dim).transpose(1, 2).reshape(dim, dim)

    def get(key):
        t = flat[key]
        name = ".".join(key)
        if "kernel" in name and "norm" not in name and "ln_f" not in name:
            t = t.t()
        return t.to(torch.float16)

    out = {"model.embed_tokens.weight": get(("transformer", "wte", "embedding"))}
    for i in range(params["n_layers"]):
        h = ("transformer", "h", "%d" % i)
        p = "model.layers.%d." % i
        out[p + "self_attn.q_proj.weight"] = permute(get(h + ("attention", "wq", "kernel")))
        out[p + "self_attn.k_proj.weight"] = permute(get(h + ("attention", "wk", "kernel")))
        out[p + "self_attn.v_proj.weight"] = get(h + ("attention", "wv", "kernel"))
        out[p + "self_attn.o_proj.weight"] = get(h + ("attention", "wo", "kernel"))
        out[p + "mlp.gate_proj.weight"] = get(h + ("feed_forward", "w1", "kernel"))
        out[p + "mlp.down_proj.weight"] = get(h + ("feed_forward", "w2", "kernel"))
        out[p + "mlp.up_proj.weight"] = get(h + ("feed_forward", "w3", "kernel"))
        out[p + "input_layernorm.weight"] = get(h + ("attention_norm", "kernel"))
        out[p + "post_attention_layernorm.weight"] = get(h + ("ffn_norm", "kernel"))
    out["model.norm.weight"] = get(("transformer", "ln_f", "kernel"))
    out["lm_head.weight"] = get(("lm_head", "kernel"))
    return out


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "delta"))
    with open(os.path.join(META, "params.json")) as f:
        params = json.load(f)
    ckpts = [torch.load(os.path.join(META, "consolidated.%02d.pth" % r), map_location="cpu") for r in range(2)]
    base = easylm_base(params, ckpts)

    g = torch.Generator().manual_seed(11)
    # The fine-tuned model as EasyLM saves it: bfloat16 (float_dtype 'bf16').
    target = {k: (v.float() + torch.randn(v.shape, generator=g) * 0.01).to(torch.bfloat16) for k, v in base.items()}
    # diff_checkpoint.py (make): t - b in float32 (fp16 with bf16 promotes to fp32), saved as bf16.
    diff = {k: (target[k].float() - base[k].float()).to(torch.bfloat16) for k in base}
    write_streaming(os.path.join(OUT, "delta", "koala_tiny_diff_v2"), diff)
    # The base as convert_torch_to_easylm writes it (float16 kept): for reading tests.
    write_streaming(os.path.join(OUT, "easylm-base"), base)

    # diff_checkpoint.py --recover_diff: b + t in float32, saved as bf16; then convert_easylm_to_hf.
    recovered = {k: (base[k].float() + diff[k].float()).to(torch.bfloat16) for k in base}
    hf = to_hf(params, recovered)
    expected = {
        "records": [{"key": "/".join(k), "dtype": DTYPE_NAMES[v.dtype], "shape": list(v.shape),
                     "sha256": hashlib.sha256(tensor_bytes(v)).hexdigest()} for k, v in diff.items()],
        "tensors": [{"name": k, "dtype": "F16", "shape": list(v.shape), "sha256": hashlib.sha256(tensor_bytes(v)).hexdigest()}
                    for k, v in hf.items()],
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
