#!/usr/bin/env python3
"""Writes test/fixtures/mismatch/: inputs that do not belong with the published
deltas of test/fixtures/conventions, each laid out as the tool that makes such
files writes it. apply-delta and make-delta must refuse every one of them
before any output gets a final name.

Needs torch (run with torch 1.13 on CPU). Deterministic (fixed seeds). Run from
the repository root, after scripts/make-convention-fixtures.py:
    python3 scripts/make-mismatch-fixtures.py

Fixtures (the conventions base is test/fixtures/conventions/base: hidden 64,
2 layers, vocabulary 512, fp16):
  base-missing-tensor   the conventions base as a transformers >= 4.31
                        conversion writes it (safetensors shards + index),
                        with model.layers.1.mlp.up_proj.weight left out.
  base-llamamodel       the same weights saved from a LlamaModel (the model
                        without its language-model head), as
                        LlamaModel.save_pretrained writes it: one
                        model.safetensors, keys without the "model." prefix,
                        no lm_head.weight, config architectures ["LlamaModel"].
  base-smaller          another model size: a LLaMA-shaped base of hidden 32,
                        1 layer, the same 512-token vocabulary (fp16, one
                        model.safetensors, >= 4.31 key order).
  meta-checkpoint       Meta's original release layout: consolidated.00.pth
                        (torch.save of a flat state dict: tok_embeddings,
                        layers.N.attention.wq/wk/wv/wo, feed_forward.w1/w2/w3,
                        attention_norm, ffn_norm, norm, output, rope.freqs) and
                        params.json. A tiny model: only its layout matters.
  gptq                  a GPTQ-quantized LLaMA as AutoGPTQ / transformers >= 4.32
                        save it: model.safetensors with qweight (I32, 8 4-bit
                        values per element, packed along the input dimension),
                        qzeros, scales (F16), g_idx (I32) per linear layer,
                        embeddings and norms in fp16; config.json with
                        quantization_config (quant_method "gptq") and
                        quantize_config.json. Tiny.
  lora                  a PEFT LoRA adapter for the conventions base:
                        adapter_config.json and adapter_model.bin (torch.save,
                        as PEFT < 0.6 writes it), tensors named
                        base_model.model.model.layers.N.self_attn.{q,v}_proj.lora_{A,B}.weight.
  gguf                  model.gguf: a GGUF v3 file (llama.cpp's format): magic,
                        metadata (general.architecture = llama) and one F32
                        tensor, 32-byte aligned, per the GGUF specification.
"""
import collections
import importlib.util
import json
import os
import shutil
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("conventions", os.path.join(HERE, "make-convention-fixtures.py"))
conv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(conv)

# the conventions script's safetensors writer knows float dtypes; GPTQ stores I32 too
conv.DTYPES["I32"] = torch.int32
conv.NAMES[torch.int32] = "I32"

OUT = os.path.join("test", "fixtures", "mismatch")
BASE_ST = os.path.join("test", "fixtures", "conventions", "base", "safetensors")
MISSING = "model.layers.1.mlp.up_proj.weight"


def copy_side_files(src, dst, config_over=None):
    for name in sorted(os.listdir(src)):
        if name.endswith(".json") and "index" not in name and name != "config.json":
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config.update(config_over or {})
    conv.write_json(os.path.join(dst, "config.json"), config)


def base_missing_tensor(base):
    d = os.path.join(OUT, "base-missing-tensor")
    sd = collections.OrderedDict((k, v) for k, v in base.items() if k != MISSING)
    conv.save_pretrained(d, sd, "200KB", "safetensors")
    copy_side_files(BASE_ST, d)


def base_llamamodel(base):
    d = os.path.join(OUT, "base-llamamodel")
    os.makedirs(d)
    # LlamaModel's state dict: LlamaForCausalLM's minus lm_head, without the base_model_prefix "model."
    sd = collections.OrderedDict((k[len("model."):], v) for k, v in base.items() if k.startswith("model."))
    conv.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    copy_side_files(BASE_ST, d, {"architectures": ["LlamaModel"]})


class Small:
    hidden, heads, kv_heads, layers, intermediate = 32, 4, 2, 1, 88
    head_dim = hidden // heads


def base_smaller():
    g = torch.Generator().manual_seed(2001)
    m = Small()
    kv = m.kv_heads * m.head_dim
    shapes = {"model.embed_tokens.weight": (512, m.hidden)}
    for i in range(m.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (m.hidden, m.hidden), p + "self_attn.k_proj.weight": (kv, m.hidden),
            p + "self_attn.v_proj.weight": (kv, m.hidden), p + "self_attn.o_proj.weight": (m.hidden, m.hidden),
            p + "mlp.gate_proj.weight": (m.intermediate, m.hidden), p + "mlp.up_proj.weight": (m.intermediate, m.hidden),
            p + "mlp.down_proj.weight": (m.hidden, m.intermediate),
            p + "input_layernorm.weight": (m.hidden,), p + "post_attention_layernorm.weight": (m.hidden,),
        })
    shapes["model.norm.weight"] = (m.hidden,)
    shapes["lm_head.weight"] = (512, m.hidden)
    sd = collections.OrderedDict()
    for k, shape in shapes.items():
        if len(shape) == 1:
            sd[k] = (1 + 0.05 * torch.randn(shape, generator=g)).to(torch.float16)
        else:
            sd[k] = (0.02 * torch.randn(shape, generator=g)).to(torch.float16)
    d = os.path.join(OUT, "base-smaller")
    os.makedirs(d)
    conv.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    copy_side_files(BASE_ST, d, {"hidden_size": m.hidden, "num_hidden_layers": m.layers, "intermediate_size": m.intermediate,
                                 "num_attention_heads": m.heads, "num_key_value_heads": m.kv_heads})


def meta_checkpoint():
    """Meta's LLaMA-1 consolidated.00.pth layout (llama/model.py names), a tiny model."""
    g = torch.Generator().manual_seed(2002)
    dim, layers, heads, vocab, hidden = 16, 1, 2, 32, 48
    sd = collections.OrderedDict()
    sd["tok_embeddings.weight"] = torch.randn(vocab, dim, generator=g).half()
    sd["norm.weight"] = torch.ones(dim).half()
    sd["output.weight"] = torch.randn(vocab, dim, generator=g).half()
    for i in range(layers):
        p = f"layers.{i}."
        for w in ("wq", "wk", "wv", "wo"):
            sd[p + f"attention.{w}.weight"] = torch.randn(dim, dim, generator=g).half()
        sd[p + "feed_forward.w1.weight"] = torch.randn(hidden, dim, generator=g).half()
        sd[p + "feed_forward.w2.weight"] = torch.randn(dim, hidden, generator=g).half()
        sd[p + "feed_forward.w3.weight"] = torch.randn(hidden, dim, generator=g).half()
        sd[p + "attention_norm.weight"] = torch.ones(dim).half()
        sd[p + "ffn_norm.weight"] = torch.ones(dim).half()
    head_dim = dim // heads
    sd["rope.freqs"] = (1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))).half()
    d = os.path.join(OUT, "meta-checkpoint")
    os.makedirs(d)
    torch.save(sd, os.path.join(d, "consolidated.00.pth"))
    with open(os.path.join(d, "params.json"), "w") as f:
        # Meta's params.json: one line, no trailing newline.
        f.write(json.dumps({"dim": dim, "multiple_of": 16, "n_heads": heads, "n_layers": layers, "norm_eps": 1e-06, "vocab_size": -1}))


def gptq():
    """AutoGPTQ's 4-bit layout for LLaMA linear layers (group size 16 here, 128 in real releases)."""
    g = torch.Generator().manual_seed(2003)
    dim, layers, vocab, inter, bits, group = 32, 1, 64, 64, 4, 16
    sd = collections.OrderedDict()

    def quantized(prefix, out_features, in_features):
        groups = in_features // group
        sd[prefix + ".qweight"] = torch.randint(-2**31, 2**31 - 1, (in_features * bits // 32, out_features), generator=g, dtype=torch.int32)
        sd[prefix + ".qzeros"] = torch.randint(-2**31, 2**31 - 1, (groups, out_features * bits // 32), generator=g, dtype=torch.int32)
        sd[prefix + ".scales"] = (0.01 * torch.rand(groups, out_features, generator=g)).half()
        sd[prefix + ".g_idx"] = torch.arange(in_features, dtype=torch.int32) // group

    sd["model.embed_tokens.weight"] = (0.02 * torch.randn(vocab, dim, generator=g)).half()
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            quantized(p + "self_attn." + name, dim, dim)
        quantized(p + "mlp.gate_proj", inter, dim)
        quantized(p + "mlp.up_proj", inter, dim)
        quantized(p + "mlp.down_proj", dim, inter)
        sd[p + "input_layernorm.weight"] = torch.ones(dim).half()
        sd[p + "post_attention_layernorm.weight"] = torch.ones(dim).half()
    sd["model.norm.weight"] = torch.ones(dim).half()
    sd["lm_head.weight"] = (0.02 * torch.randn(vocab, dim, generator=g)).half()
    d = os.path.join(OUT, "gptq")
    os.makedirs(d)
    conv.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    quantize = {"bits": bits, "group_size": group, "damp_percent": 0.01, "desc_act": False, "static_groups": False,
                "sym": True, "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model"}
    conv.write_json(os.path.join(d, "quantize_config.json"), quantize)
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": dim, "intermediate_size": inter, "model_type": "llama",
              "num_attention_heads": 4, "num_hidden_layers": layers, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
              "torch_dtype": "float16", "transformers_version": "4.35.2", "vocab_size": vocab,
              "quantization_config": {**quantize, "quant_method": "gptq", "use_exllama": True}}
    conv.write_json(os.path.join(d, "config.json"), config)


def lora(base):
    """PEFT's LoRA adapter for the conventions base (r 4 on q_proj and v_proj)."""
    g = torch.Generator().manual_seed(2004)
    r = 4
    sd = collections.OrderedDict()
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            w = base[f"model.layers.{i}.self_attn.{proj}.weight"]
            p = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            sd[p + ".lora_A.weight"] = (0.02 * torch.randn(r, w.shape[1], generator=g)).half()
            sd[p + ".lora_B.weight"] = (0.02 * torch.randn(w.shape[0], r, generator=g)).half()
    d = os.path.join(OUT, "lora")
    os.makedirs(d)
    torch.save(sd, os.path.join(d, "adapter_model.bin"))
    conv.write_json(os.path.join(d, "adapter_config.json"), {
        "base_model_name_or_path": "tiny-llama", "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "lora_alpha": 8, "lora_dropout": 0.05, "modules_to_save": None, "peft_type": "LORA",
        "r": r, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"})


def gguf():
    """A GGUF v3 file per ggml's docs/gguf.md: header, metadata key/values, tensor infos, aligned data."""
    def string(s):
        b = s.encode()
        return struct.pack("<Q", len(b)) + b
    GGUF_TYPE_UINT32, GGUF_TYPE_STRING, GGML_TYPE_F32 = 4, 8, 0
    kv = [("general.architecture", GGUF_TYPE_STRING, string("llama")),
          ("general.name", GGUF_TYPE_STRING, string("tiny")),
          ("general.alignment", GGUF_TYPE_UINT32, struct.pack("<I", 32))]
    values = torch.arange(32, dtype=torch.float32) / 32
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv))
    for key, kind, value in kv:
        out += string(key) + struct.pack("<I", kind) + value
    # dimensions innermost first: [8, 4] is a 4x8 matrix
    out += string("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 8, 4) + struct.pack("<I", GGML_TYPE_F32) + struct.pack("<Q", 0)
    out += b"\0" * ((-len(out)) % 32)
    out += values.numpy().tobytes()
    d = os.path.join(OUT, "gguf")
    os.makedirs(d)
    with open(os.path.join(d, "model.gguf"), "wb") as f:
        f.write(out)


def main():
    if not os.path.isdir("scripts"):
        sys.exit("run from the repository root")
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    loaded = conv.load_dir(BASE_ST)
    # the state-dict order a transformers >= 4.31 LlamaForCausalLM saves
    base = collections.OrderedDict((k, loaded[k]) for k in conv.model_keys(conv.V431, 2))
    assert len(base) == len(loaded)
    base_missing_tensor(base)
    base_llamamodel(base)
    base_smaller()
    meta_checkpoint()
    gptq()
    lora(base)
    gguf()
    size = conv.total_size(OUT)
    print(f"{OUT}: {size} bytes")
    assert size < 1.5 * 10**6


if __name__ == "__main__":
    main()
