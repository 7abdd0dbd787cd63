#!/usr/bin/env python3
"""Writes test/fixtures/meta-output/: a tiny LLaMA as Hugging Face PyTorch
shards (the input of Chinese-LLaMA-Alpaca's merge script), and what that
script's `--output_type pth` save path writes of it with real torch.save, for
1 and 2 model-parallel ranks (consolidated.0N.pth + params.json).

The save path is implemented here as read in ymcui/Chinese-LLaMA-Alpaca at
25dba18cae809ab4aec8cb483c9ec75820e4e96c,
scripts/merge_llama_with_chinese_lora_low_mem.py (its tensor code copied; the
LoRA merge itself is left out: it changes values, not the layout):
  - for each base file pytorch_model-*-of-*.bin, in sorted name order (index
    i), every key of its state dict in order: translate_state_dict_key
    (rotary_emb.inv_freq dropped), then save_shards(prefix=f"L{i+1}-"):
      one rank: wq/wk unpermute(v) = v.view(n_heads, 2, dim // n_heads // 2,
      dim).transpose(1, 2).reshape(dim, dim), the others as loaded;
      several: tok_embeddings, wo, w2 split along dim 1; w1, w3, wv, and
      wq/wk (after unpermute) along dim 0; output along dim 0 with the last
      rank taking the remainder; norms replicated; each split .clone()d;
      torch.save per rank as L{i+1}-consolidated.0{r}.pth;
  - merge_shards: for each rank, the L-files in sorted() (string) order,
    torch.load'ed and merged with |= in that order, torch.save'd as
    consolidated.0{r}.pth;
  - params.json: json.dump(params, f) of the size's params (dim, multiple_of,
    n_heads, n_layers, norm_eps, vocab_size -1), no newline.
The script only knows the four LLaMA sizes (emb_to_model_size); the tiny
model's params follow the same fields, from its config.

Tiny model: hidden 32, 4 heads, 2 layers, intermediate 256 (Meta's rule with
multiple_of 256), vocabulary 41 (odd: the output's uneven 2-rank split),
float16, in two HF shards (layer 0 in the first), with the per-layer
rotary_emb.inv_freq buffers transformers 4.28 saved. Deterministic.
Run from the repository root with Debian's torch 1.13:
    /usr/bin/python3 scripts/make-meta-output-fixtures.py
"""
import hashlib
import json
import os
import re
import shutil

import torch

OUT = os.path.join("test", "fixtures", "meta-output")
HIDDEN, HEADS, LAYERS, INTER, VOCAB = 32, 4, 2, 256, 41


def hf_state_dicts():
    g = torch.Generator().manual_seed(21)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.5).to(torch.float16)

    head_dim = HIDDEN // HEADS
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    first, second = {}, {}
    first["model.embed_tokens.weight"] = rand(VOCAB, HIDDEN)
    for layer in range(LAYERS):
        sd = first if layer == 0 else second
        p = f"model.layers.{layer}."
        sd[p + "self_attn.q_proj.weight"] = rand(HIDDEN, HIDDEN)
        sd[p + "self_attn.k_proj.weight"] = rand(HIDDEN, HIDDEN)
        sd[p + "self_attn.v_proj.weight"] = rand(HIDDEN, HIDDEN)
        sd[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HIDDEN)
        sd[p + "self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        sd[p + "mlp.gate_proj.weight"] = rand(INTER, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = rand(HIDDEN, INTER)
        sd[p + "mlp.up_proj.weight"] = rand(INTER, HIDDEN)
        sd[p + "input_layernorm.weight"] = rand(HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = rand(HIDDEN)
    second["model.norm.weight"] = rand(HIDDEN)
    second["lm_head.weight"] = rand(VOCAB, HIDDEN)
    return [first, second]


def write_hf_model(path, shards):
    os.makedirs(path, exist_ok=True)
    weight_map = {}
    total = 0
    for i, sd in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(sd, os.path.join(path, name))
        for k, v in sd.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(os.path.join(path, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTER, "max_position_embeddings": 2048,
        "model_type": "llama", "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "pad_token_id": 0,
        "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.28.1",
        "use_cache": True, "vocab_size": VOCAB,
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.copyfile(os.path.join("test", "fixtures", "gguf", "model", "tokenizer.model"), os.path.join(path, "tokenizer.model"))


# ---- the script's save path (merge_llama_with_chinese_lora_low_mem.py @ 25dba18) ----

def translate_state_dict_key(k):
    k = k.replace("base_model.model.", "")
    if k == "model.embed_tokens.weight":
        return "tok_embeddings.weight"
    elif k == "model.norm.weight":
        return "norm.weight"
    elif k == "lm_head.weight":
        return "output.weight"
    elif k.startswith("model.layers."):
        layer = k.split(".")[2]
        if k.endswith(".self_attn.q_proj.weight"):
            return f"layers.{layer}.attention.wq.weight"
        elif k.endswith(".self_attn.k_proj.weight"):
            return f"layers.{layer}.attention.wk.weight"
        elif k.endswith(".self_attn.v_proj.weight"):
            return f"layers.{layer}.attention.wv.weight"
        elif k.endswith(".self_attn.o_proj.weight"):
            return f"layers.{layer}.attention.wo.weight"
        elif k.endswith(".mlp.gate_proj.weight"):
            return f"layers.{layer}.feed_forward.w1.weight"
        elif k.endswith(".mlp.down_proj.weight"):
            return f"layers.{layer}.feed_forward.w2.weight"
        elif k.endswith(".mlp.up_proj.weight"):
            return f"layers.{layer}.feed_forward.w3.weight"
        elif k.endswith(".input_layernorm.weight"):
            return f"layers.{layer}.attention_norm.weight"
        elif k.endswith(".post_attention_layernorm.weight"):
            return f"layers.{layer}.ffn_norm.weight"
        elif k.endswith("rotary_emb.inv_freq") or "lora" in k:
            return None
    raise NotImplementedError(k)


def unpermute(w, n_heads, dim):
    return w.view(n_heads, 2, dim // n_heads // 2, dim).transpose(1, 2).reshape(dim, dim)


def save_shards(model_sd, num_shards, output_dir, prefix, n_heads, dim):
    with torch.no_grad():
        if num_shards == 1:
            new_state_dict = {}
            for k, v in model_sd.items():
                new_k = translate_state_dict_key(k)
                if new_k is not None:
                    if "wq" in new_k or "wk" in new_k:
                        new_state_dict[new_k] = unpermute(v, n_heads, dim)
                    else:
                        new_state_dict[new_k] = v
            torch.save(new_state_dict, output_dir + f"/{prefix}consolidated.00.pth")
        else:
            new_state_dicts = [dict() for _ in range(num_shards)]
            for k in list(model_sd.keys()):
                v = model_sd[k]
                new_k = translate_state_dict_key(k)
                if new_k is not None:
                    if new_k == "tok_embeddings.weight":
                        assert v.size(1) % num_shards == 0
                        splits = v.split(v.size(1) // num_shards, dim=1)
                    elif new_k == "output.weight":
                        if v.size(0) % num_shards == 0:
                            splits = v.split(v.size(0) // num_shards, dim=0)
                        else:
                            size_list = [v.size(0) // num_shards] * num_shards
                            size_list[-1] += v.size(0) % num_shards
                            splits = v.split(size_list, dim=0)
                    elif new_k == "norm.weight":
                        splits = [v] * num_shards
                    elif "ffn_norm.weight" in new_k:
                        splits = [v] * num_shards
                    elif "attention_norm.weight" in new_k:
                        splits = [v] * num_shards
                    elif "w1.weight" in new_k:
                        splits = v.split(v.size(0) // num_shards, dim=0)
                    elif "w2.weight" in new_k:
                        splits = v.split(v.size(1) // num_shards, dim=1)
                    elif "w3.weight" in new_k:
                        splits = v.split(v.size(0) // num_shards, dim=0)
                    elif "wo.weight" in new_k:
                        splits = v.split(v.size(1) // num_shards, dim=1)
                    elif "wv.weight" in new_k:
                        splits = v.split(v.size(0) // num_shards, dim=0)
                    elif "wq.weight" in new_k or "wk.weight" in new_k:
                        v = unpermute(v, n_heads, dim)
                        splits = v.split(v.size(0) // num_shards, dim=0)
                    else:
                        raise ValueError(new_k)
                    for sd, split in zip(new_state_dicts, splits):
                        sd[new_k] = split.clone()
                del model_sd[k], v
            for i, new_state_dict in enumerate(new_state_dicts):
                torch.save(new_state_dict, output_dir + f"/{prefix}consolidated.0{i}.pth")


def merge_shards(output_dir, num_shards):
    ckpt_filenames = sorted([f for f in os.listdir(output_dir) if re.match(r"L(\d+)-consolidated.(\d+).pth", f)])
    for i in range(num_shards):
        shards_filenames = sorted([f for f in ckpt_filenames if re.match(rf"L(\d+)-consolidated.0{i}.pth", f)])
        shards_dicts = [torch.load(os.path.join(output_dir, fn)) for fn in shards_filenames]
        shards_merged = {}
        for d in shards_dicts:
            shards_merged |= d
        torch.save(shards_merged, os.path.join(output_dir, f"consolidated.0{i}.pth"))
        for fn in shards_filenames:
            os.remove(os.path.join(output_dir, fn))


def run_save_path(base, output_dir, num_shards):
    os.makedirs(output_dir, exist_ok=True)
    ckpt_filenames = sorted([f for f in os.listdir(base) if re.match(r"pytorch_model-(\d+)-of-(\d+).bin", f)])
    for index, filename in enumerate(ckpt_filenames):
        state_dict = torch.load(os.path.join(base, filename), map_location="cpu")
        save_shards(state_dict, num_shards, output_dir, f"L{index + 1}-", HEADS, HIDDEN)
    params = {"dim": HIDDEN, "multiple_of": 256, "n_heads": HEADS, "n_layers": LAYERS, "norm_eps": 1e-06, "vocab_size": -1}
    with open(output_dir + "/params.json", "w") as f:
        json.dump(params, f)
    merge_shards(output_dir, num_shards)


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    base = os.path.join(OUT, "hf")
    write_hf_model(base, hf_state_dicts())
    expected = {"torch": torch.__version__}
    for ranks in (1, 2):
        out = os.path.join(OUT, f"expected-{ranks}")
        run_save_path(base, out, ranks)
        expected[str(ranks)] = {name: sha256_file(os.path.join(out, name)) for name in sorted(os.listdir(out))}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
