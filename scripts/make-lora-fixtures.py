#!/usr/bin/env python3
"""Writes test/fixtures/lora/: LoRA adapters published as PEFT saves them, a tiny
LLaMA-shaped base, and what merging them leaves, computed with PyTorch (CPU).
PEFT itself is not installed here: this script carries out PEFT's merge formula
with torch, as read from its source, and says which lines. The TypeScript merge
is checked bit for bit against expected.json.

Needs torch (run with Debian's python3-torch 1.13, BLAS_INFO=generic) and numpy.
Deterministic (fixed seeds). Run from the repository root:
    python3 scripts/make-lora-fixtures.py

Sources read (repository, path, commit):
  huggingface/peft at 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40:
    src/peft/tuners/lora/layer.py
      LoraLayer.update_layer: scaling = lora_alpha / r, or lora_alpha / sqrt(r)
        with use_rslora; lora_A = nn.Linear(in, r), lora_B = nn.Linear(r, out).
      Linear.merge (safe_merge=False, the path merge_and_unload takes):
        base_layer.weight.data += self.get_delta_weight(adapter)
      Linear.get_delta_weight: cast_to_fp32 = cpu and dtype in (float16,
        bfloat16), dtype = lora_B.weight.dtype; A, B .float() when so;
        transpose(B @ A, fan_in_fan_out) * scaling; .to(dtype) when cast.
      Embedding.merge: base_layer.weight.data += get_delta_weight().to(orig_dtype)
      Embedding.get_delta_weight: transpose(lora_embedding_B @ lora_embedding_A,
        True) * scaling, the same float32 cast (dtype = lora_embedding_A's).
      lora_bias, DoRA (lora_variant): other code paths (refused by the tool).
    src/peft/tuners/lora/model.py _create_and_replace: r and alpha per module
      from rank_pattern / alpha_pattern via peft.utils.other.get_pattern_key
      (re.match(rf"(.*\\.)?({key})$", module_name)).
    src/peft/tuners/tuners_utils.py: _move_adapter_to_device_of_base_layer casts
      the adapter's parameters to the base layer's float dtype; since v0.12.0
      (commit ae1ae20b7, "Autocast adapter weights if fp16/bf16")
      PeftModel.from_pretrained(autocast_adapter_dtype=True, the default) then
      upcasts float16/bfloat16 adapter parameters to float32 before the saved
      values are loaded into them. So the dtype get_delta_weight sees is:
        PEFT >= 0.12 (default):       float32 -> no cast back, the float32 delta
                                      is added into the base's dtype;
        PEFT 0.6-0.11, or autocast off: the base's dtype -> A and B rounded to it
                                      on load, product in float32, cast back to
                                      the base's dtype, then added.
      (cast_to_fp32 itself arrived in v0.6.0, commit aaa7e9f44.)
    src/peft/utils/save_and_load.py get_peft_model_state_dict: keys are the
      module's with the adapter name removed
      (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight;
      ...embed_tokens.lora_embedding_A); modules_to_save under
      <module>.modules_to_save.<param> (PEFT < 0.14 wrote <module>.<param>).
  ymcui/Chinese-LLaMA-Alpaca at 25dba18cae809ab4aec8cb483c9ec75820e4e96c:
    scripts/merge_llama_with_chinese_lora_low_mem.py: for each base tensor k,
    for each LoRA in order: a whole tensor 'base_model.model.'+k in the adapter
    replaces the base's (.half()); a lora_A/lora_B pair adds
    transpose(B.float() @ A.float(), fan_in_fan_out) * (lora_alpha / r) into
    the float16 tensor in place.

Torch's arithmetic, measured here (see probe_matmul and probe_elementwise):
  float32 B @ A on this build equals C = 0; for l in order: C += round32(B[:, l] * A[l, :])
  (no fused multiply-add); a float32 tensor times a Python float multiplies by
  the float32 value of the float; `half_tensor += float32_tensor` adds in
  float32 and rounds the sum to half.
"""
import hashlib
import json
import math
import os
import struct

import numpy as np
import torch

OUT = "test/fixtures/lora"
torch.manual_seed(19)
torch.set_num_threads(1)

# ---------------------------------------------------------------- torch probes

def xorshift(seed):
    state = seed & 0xFFFFFFFF or 1
    while True:
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        yield state


def generated(seed, count, kind):
    """Values both this script and the TypeScript test make from a seed: float32
    in (-0.02, 0.02), rounded to float16 / bfloat16 for those kinds."""
    g = xorshift(seed)
    v = np.array([((next(g) >> 8) / 16777216.0 - 0.5) * 0.04 for _ in range(count)], dtype=np.float64).astype(np.float32)
    t = torch.from_numpy(v)
    if kind == "F16":
        t = t.half().float()
    elif kind == "BF16":
        t = t.bfloat16().float()
    return t


def sequential(b, a):
    m, k = b.shape
    acc = np.zeros((m, a.shape[1]), np.float32)
    for l in range(k):
        acc += b[:, l:l + 1] * a[l:l + 1, :]
    return acc


def probe_matmul():
    """Torch's float32 matmul against the in-order, unfused sum, on many shapes."""
    shapes = []
    for k in [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256]:
        for (m, n) in [(1, 1), (1, 64), (64, 1), (5, 7), (64, 64), (128, 64), (64, 128), (96, 200), (256, 256), (300, 129), (1024, 512), (1376, 512)]:
            shapes.append((m, k, n))
    shapes += [(4096, 64, 4096), (11008, 16, 4096), (4096, 64, 11008), (4096, 8, 49954), (4096, 256, 1024)]
    mismatched = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for kind in ("F16", "BF16", "F32"):
            for (m, k, n) in shapes:
                if threads == 2 and m * n > 300 * 300 and kind != "F32":
                    continue
                b = torch.randn(m, k) * 0.02
                a = torch.randn(k, n) * 0.02
                if kind == "F16":
                    b, a = b.half().float(), a.half().float()
                elif kind == "BF16":
                    b, a = b.bfloat16().float(), a.bfloat16().float()
                c = (b @ a).numpy()
                s = sequential(b.numpy(), a.numpy())
                if not np.array_equal(c.view(np.uint32), s.view(np.uint32)):
                    ulps = np.abs(c.view(np.int32).astype(np.int64) - s.view(np.int32).astype(np.int64)).max()
                    mismatched.append(((m, k, n), kind, threads, int(ulps)))
    torch.set_num_threads(1)
    return {"shapes": len(shapes), "kinds": ["F16", "BF16", "F32"], "threads": [1, 2], "mismatched": mismatched}


def probe_elementwise():
    x = torch.randn(100000)
    scalar_f32 = all(np.array_equal((x * s).numpy().view(np.uint32), (x.numpy() * np.float32(s)).view(np.uint32))
                     for s in [2.0, 32 / math.sqrt(8), 1 / 3, 0.1, 7 / math.sqrt(13)])
    w = torch.randn(100000).half()
    d = torch.randn(100000) * 0.001
    w2 = w.clone()
    w2 += d
    half_add = np.array_equal(w2.numpy().view(np.uint16), (w.float().numpy() + d.numpy()).astype(np.float16).view(np.uint16))
    return {"scalar_multiply_in_float32": bool(scalar_f32), "half_plus_float_rounds_float32_sum": bool(half_add)}


def kernel_cases():
    """Products the TypeScript kernel recomputes from the same seeds: torch's
    result bytes' sha256 (and its first values, for a readable failure)."""
    cases = []
    seed = 1
    specs = []
    for k in [1, 2, 3, 5, 8, 16, 17, 32, 64, 100, 128, 129, 200, 255, 256]:
        for (m, n) in [(1, 1), (3, 1), (1, 5), (17, 33), (64, 64), (96, 40)]:
            specs.append((m, k, n))
    specs += [(256, 64, 512), (512, 256, 128), (4096, 8, 96)]
    kinds = ["F16", "BF16", "F32"]
    for i, (m, k, n) in enumerate(specs):
        kind = kinds[i % 3]
        scale = [1.0, 2.0, 16 / math.sqrt(8), 0.1][i % 4]
        b = generated(seed, m * k, kind).reshape(m, k)
        a = generated(seed + 1, k * n, kind).reshape(k, n)
        c = (b @ a) * scale
        ct = ((b @ a).t().contiguous()) * scale
        cases.append({
            "m": m, "k": k, "n": n, "kind": kind, "seedB": seed, "seedA": seed + 1, "scale": scale,
            "sha256": hashlib.sha256(c.numpy().astype("<f4").tobytes()).hexdigest(),
            "transposedSha256": hashlib.sha256(ct.numpy().astype("<f4").tobytes()).hexdigest(),
            "first": [float(v) for v in c.flatten()[:4]],
        })
        seed += 2
    return cases

# ---------------------------------------------------------------- files

SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors):
    """The safetensors format as its reference writer lays it out: tensors by
    dtype alignment (descending) then name, compact JSON, `__metadata__` first,
    the header padded with spaces to 8 bytes."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in order:
        data = tensor_bytes(tensors[name])
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensors[name].dtype], "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def sha(t):
    return hashlib.sha256(tensor_bytes(t)).hexdigest()

# ---------------------------------------------------------------- the base

HIDDEN, INTER, LAYERS, VOCAB = 64, 128, 2, 96
LINEARS = {
    "self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER),
}


def make_base(dtype):
    sd = {"model.embed_tokens.weight": (torch.randn(VOCAB, HIDDEN) * 0.02).to(dtype)}
    for i in range(LAYERS):
        for mod, shape in LINEARS.items():
            sd[f"model.layers.{i}.{mod}.weight"] = (torch.randn(*shape) * 0.02).to(dtype)
        sd[f"model.layers.{i}.input_layernorm.weight"] = (1 + torch.randn(HIDDEN) * 0.05).to(dtype)
        sd[f"model.layers.{i}.post_attention_layernorm.weight"] = (1 + torch.randn(HIDDEN) * 0.05).to(dtype)
    sd["model.norm.weight"] = (1 + torch.randn(HIDDEN) * 0.05).to(dtype)
    sd["lm_head.weight"] = (torch.randn(VOCAB, HIDDEN) * 0.02).to(dtype)
    return sd


def save_base(directory, sd, name):
    """Two shards with an index, as save_pretrained lays out a sharded model."""
    os.makedirs(directory, exist_ok=True)
    keys = list(sd)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    total = 0
    for i, part in enumerate(halves):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        write_safetensors(os.path.join(directory, file), {k: sd[k] for k in part})
        for k in part:
            weight_map[k] = file
            total += sd[k].numel() * sd[k].element_size()
    write_json(os.path.join(directory, "model.safetensors.index.json"), {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(os.path.join(directory, "config.json"), {
        "_name_or_path": name, "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": INTER,
        "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": LAYERS, "num_key_value_heads": 4,
        "torch_dtype": SAFETENSORS_DTYPES[next(iter(sd.values())).dtype].replace("F16", "float16").replace("BF16", "bfloat16").replace("F32", "float32"),
        "vocab_size": VOCAB})
    write_json(os.path.join(directory, "generation_config.json"), {"bos_token_id": 1, "eos_token_id": 2})
    write_json(os.path.join(directory, "tokenizer_config.json"), {"model_max_length": 2048, "tokenizer_class": "LlamaTokenizer", "from": "base"})

# ---------------------------------------------------------------- adapters

def module_key(module):
    return f"base_model.model.{module}"


def make_adapter(base, targets, r, dtype, rank_pattern=None, embedding=False):
    """A state dict as get_peft_model_state_dict returns it: lora_A/lora_B per
    targeted Linear (and lora_embedding_A/B for embed_tokens)."""
    rank_pattern = rank_pattern or {}
    sd = {}
    for i in range(LAYERS):
        for mod in targets:
            name = f"model.layers.{i}.{mod}"
            out_f, in_f = LINEARS[mod]
            rr = next((v for k, v in rank_pattern.items() if name.endswith(k)), r)
            sd[module_key(name) + ".lora_A.weight"] = (torch.randn(rr, in_f) * 0.2).to(dtype)
            sd[module_key(name) + ".lora_B.weight"] = (torch.randn(out_f, rr) * 0.05).to(dtype)
    if embedding:
        sd[module_key("model.embed_tokens") + ".lora_embedding_A"] = (torch.randn(r, VOCAB) * 0.2).to(dtype)
        sd[module_key("model.embed_tokens") + ".lora_embedding_B"] = (torch.randn(HIDDEN, r) * 0.05).to(dtype)
    return sd


def pattern_value(pattern, module, default):
    import re
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def peft_merge(base, adapter, config, params):
    """merge_and_unload() as PEFT's source does it (see the docstring), for the
    dtype the adapter parameters hold: params "float32" (PEFT >= 0.12 default)
    or "base" (the base layer's dtype: PEFT 0.6-0.11, autocast_adapter_dtype=False)."""
    out = {k: v.clone() for k, v in base.items()}
    # modules_to_save: the wrapper's copy of the base module (base dtype) holds the saved values.
    for key, value in adapter.items():
        if ".lora_" in key:
            continue
        name = key[len("base_model.model."):].replace(".modules_to_save", "")
        target = out[name]
        replaced = torch.empty(value.shape, dtype=target.dtype)
        replaced.copy_(value)
        out[name] = replaced
    for key in adapter:
        if not (key.endswith(".lora_A.weight") or key.endswith(".lora_embedding_A")):
            continue
        embedding = key.endswith(".lora_embedding_A")
        module = key[len("base_model.model."):].rsplit(".lora_", 1)[0]
        name = module + ".weight"
        w = out[name]
        a_saved = adapter[key]
        b_saved = adapter[key.replace("lora_A", "lora_B").replace("lora_embedding_A", "lora_embedding_B")]
        r = a_saved.shape[0]
        alpha = pattern_value(config.get("alpha_pattern", {}), module, config["lora_alpha"])
        assert pattern_value(config.get("rank_pattern", {}), module, config["r"]) == r
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        param_dtype = torch.float32 if params == "float32" else w.dtype
        # load_state_dict copies the saved values into parameters of param_dtype.
        a = a_saved.to(param_dtype)
        b = b_saved.to(param_dtype)
        cast = a.dtype in (torch.float16, torch.bfloat16)
        wa, wb = (a.float(), b.float()) if cast else (a, b)
        delta = (wb @ wa) * scaling if not embedding else (wb @ wa).T * scaling
        if cast:
            delta = delta.to(a.dtype)
        if embedding:
            w += delta.to(w.dtype)
        else:
            w += delta
    return out


def chinese_merge(base, adapters):
    """merge_llama_with_chinese_lora_low_mem.py, huggingface output."""
    out = {}
    for k, v in base.items():
        v = v.clone()
        for adapter, config in adapters:
            saved = "base_model.model." + k
            lora_a = saved.replace(".weight", ".lora_A.weight")
            if saved in adapter:
                v = adapter[saved].half().clone()
            if lora_a in adapter:
                lora_b = lora_a.replace("lora_A.weight", "lora_B.weight")
                prod = adapter[lora_b].float() @ adapter[lora_a].float()
                if config.get("fan_in_fan_out"):
                    prod = prod.T
                v += prod * (config["lora_alpha"] / config["r"])
        out[k] = v
    return out


def adapter_config(**fields):
    config = {
        "base_model_name_or_path": "tiny-llama-base", "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "lora_dropout": 0.05, "modules_to_save": None, "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
    }
    config.update(fields)
    return config


def save_adapter(directory, sd, config, fmt, extra_files=None):
    os.makedirs(directory, exist_ok=True)
    if fmt == "bin":
        torch.save(sd, os.path.join(directory, "adapter_model.bin"))
    else:
        write_safetensors(os.path.join(directory, "adapter_model.safetensors"), sd)
    with open(os.path.join(directory, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name, obj in (extra_files or {}).items():
        write_json(os.path.join(directory, name), obj)


def train_tokenizer(directory, vocab_size, seed):
    """A real SentencePiece model, trained by Debian's python3-sentencepiece on
    deterministic text; returns its number of pieces (len(LlamaTokenizer)
    before added tokens)."""
    import random
    import sentencepiece as spm
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "zu", "te", "ra", "po", "shi", "an", "ge", "du", "ni", "wo", "xi", "ye", "bao"]
    text = os.path.join(directory, "corpus.txt")
    with open(text, "w") as f:
        for _ in range(400):
            f.write(" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(12)) + "\n")
    spm.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(directory, "tokenizer"), vocab_size=vocab_size,
                                   model_type="bpe", character_coverage=1.0, num_threads=1, minloglevel=2)
    os.remove(text)
    os.remove(os.path.join(directory, "tokenizer.vocab"))
    os.rename(os.path.join(directory, "tokenizer.model"), os.path.join(directory, "tokenizer.model"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(directory, "tokenizer.model"))
    return sp.get_piece_size()


def expectations(merged):
    return {k: sha(v) for k, v in merged.items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {"probe": {"matmul": probe_matmul(), "elementwise": probe_elementwise()}, "kernel": kernel_cases(), "merges": {}}

    base = make_base(torch.float16)
    save_base(os.path.join(OUT, "base-f16"), base, "tiny-llama-base")

    # 1. alpaca-lora's shape: float16 .bin, q_proj and v_proj, r 8, alpha 16.
    cfg = adapter_config(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    sd = make_adapter(base, ["self_attn.q_proj", "self_attn.v_proj"], 8, torch.float16)
    save_adapter(os.path.join(OUT, "fp16-bin"), sd, cfg, "bin")
    first = (sd, cfg)
    expected["merges"]["fp16-bin"] = {"lora": expectations(peft_merge(base, sd, cfg, "float32")),
                                      "lora-base-dtype": expectations(peft_merge(base, sd, cfg, "base"))}

    # 2. bfloat16 safetensors, rsLoRA, an embedding LoRA, rank and alpha patterns, lm_head saved whole.
    cfg = adapter_config(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "k_proj", "o_proj", "down_proj", "embed_tokens"],
                         rank_pattern={"down_proj": 2}, alpha_pattern={"layers.1.self_attn.o_proj": 3}, modules_to_save=["lm_head"])
    sd = make_adapter(base, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj"], 4, torch.bfloat16,
                      rank_pattern={"down_proj": 2}, embedding=True)
    sd["base_model.model.lm_head.modules_to_save.weight"] = (torch.randn(VOCAB, HIDDEN) * 0.02).bfloat16()
    save_adapter(os.path.join(OUT, "bf16-rslora"), sd, cfg, "safetensors", {"tokenizer_config.json": {"model_max_length": 4096, "tokenizer_class": "LlamaTokenizer", "from": "adapter"}})
    expected["merges"]["bf16-rslora"] = {"lora": expectations(peft_merge(base, sd, cfg, "float32")),
                                         "lora-base-dtype": expectations(peft_merge(base, sd, cfg, "base"))}

    # 3. A float32 QLoRA-style adapter on every linear layer, r 16, alpha 32.
    mods = list(LINEARS)
    cfg = adapter_config(r=16, lora_alpha=32, target_modules=[m.split(".")[1] for m in mods])
    sd = make_adapter(base, mods, 16, torch.float32)
    save_adapter(os.path.join(OUT, "fp32-qlora"), sd, cfg, "safetensors")
    expected["merges"]["fp32-qlora"] = {"lora": expectations(peft_merge(base, sd, cfg, "float32")),
                                        "lora-base-dtype": expectations(peft_merge(base, sd, cfg, "base"))}

    # Two PEFT adapters merged one after the other (merge_and_unload, then the second loaded and merged).
    once = peft_merge(base, first[0], first[1], "float32")
    expected["merges"]["chain-fp16-bin-fp32-qlora"] = {"lora": expectations(peft_merge(once, sd, cfg, "float32"))}

    # 4. Refusals: other PEFT types and options the merge cannot honour, and a shape that does not fit.
    small = {k: v for k, v in make_adapter(base, ["self_attn.q_proj"], 2, torch.float16).items()}
    save_adapter(os.path.join(OUT, "refused-dora"), small, adapter_config(r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True), "bin")
    save_adapter(os.path.join(OUT, "refused-loha"), small, dict(adapter_config(r=2, target_modules=["q_proj"]), peft_type="LOHA"), "bin")
    wrong = dict(small)
    wrong["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.randn(2, HIDDEN * 2).half()
    save_adapter(os.path.join(OUT, "refused-shape"), wrong, adapter_config(r=2, lora_alpha=4, target_modules=["q_proj"]), "bin")

    # 5. Chinese-LLaMA-Alpaca: two adapters merged in order, each with whole embeddings of a grown
    #    vocabulary and its own SentencePiece tokenizer (the second adds [PAD], as Alpaca's does).
    chinese = []
    for i, (targets, added) in enumerate([(list(LINEARS), None), (["self_attn.q_proj", "self_attn.v_proj"], "[PAD]")]):
        directory = os.path.join(OUT, f"chinese-{i + 1}")
        os.makedirs(directory, exist_ok=True)
        pieces = train_tokenizer(directory, 104 + 4 * i, seed=i)
        rows = pieces + (1 if added else 0)
        sd = make_adapter(base, targets, 8, torch.float16)
        sd["base_model.model.model.embed_tokens.weight"] = (torch.randn(rows, HIDDEN) * 0.02).half()
        sd["base_model.model.lm_head.weight"] = (torch.randn(rows, HIDDEN) * 0.02).half()
        cfg = adapter_config(r=8, lora_alpha=32, target_modules=[t.split(".")[1] for t in targets], modules_to_save=["embed_tokens", "lm_head"])
        extra = {"special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, "tokenizer_config.json": {"tokenizer_class": "LlamaTokenizer", "from": f"chinese-{i + 1}"}}
        if added:
            extra["added_tokens.json"] = {added: pieces}
        save_adapter(directory, sd, cfg, "bin", extra)
        chinese.append((sd, cfg))
    merged = chinese_merge(base, chinese)
    expected["merges"]["chinese"] = {"chinese-llama-alpaca": expectations(merged), "vocab_size": int(merged["model.embed_tokens.weight"].shape[0])}

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(expected["probe"]))


if __name__ == "__main__":
    main()
