#!/usr/bin/env python3
"""Writes test/fixtures/meta/: tiny checkpoints in Meta's original LLaMA
layout (consolidated.0N.pth per model-parallel rank + params.json +
tokenizer.model), saved with real torch.save, and expected.json: the tensors
transformers' convert_llama_weights_to_hf.py makes of them (name, dtype,
shape, sha256 of the contiguous little-endian bytes), in the order its
LlamaForCausalLM state dict lists them.

The expected tensors are computed here by the script's own arithmetic, its
tensor code copied faithfully (only the torch.save/from_pretrained round trip
replaced by the cast it performs). Read at:
  huggingface/transformers src/transformers/models/llama/convert_llama_weights_to_hf.py
    - the April-2023 script the deltas assume (the arithmetic of 4.28-4.30;
      read as stored at BillSchumacher/transformers 9bafbb0a, identical tensor
      code): write_model() permute(w) = w.view(n_heads, dim // n_heads // 2, 2,
      dim).transpose(1, 2).reshape(dim, dim); one shard: rename; several:
      norms from rank 0, wq/wk/wv viewed per head and concatenated along dim 0
      (wq/wk then permuted), wo/w2 and tok_embeddings along dim 1, w1/w3/output
      along dim 0; rope.freqs never read; then
      LlamaForCausalLM.from_pretrained(tmp, torch_dtype=torch.float16): every
      tensor cast to float16.
    - the later script (HEAD 01cc9cd9) for grouped-query attention: wk permuted
      with n_heads = n_kv_heads and dim1 = key_value_dim = head_dim * n_kv_heads,
      wv viewed with n_kv_heads per shard; intermediate size
      multiple_of * ((int(ffn_dim_multiplier * int(8 * n / 3)) + multiple_of - 1) // multiple_of).
Meta's model-parallel split (fairscale) is the inverse: ColumnParallelLinear
(wq, wk, wv, w1, w3, output) cut along dim 0, RowParallelLinear (wo, w2) and
ParallelEmbedding (tok_embeddings) along dim 1, norms and rope.freqs replicated.

Four fixtures: one-shard (LLaMA-1-like, fp16, 1 rank), two-shards (fp16,
2 ranks), gqa-bf16 (2 ranks, n_kv_heads, ffn_dim_multiplier, bfloat16 as
LLaMA-2 was released), hidden 64, 2 layers, vocabulary 96; and
conventions-base (2 ranks): the Meta checkpoint whose conversion is
test/fixtures/conventions/base/bin, tensor for tensor (checked here), so
every convention fixture can be applied from a Meta base.

Deterministic (fixed seeds). Needs torch and sentencepiece (Debian:
python3-torch, python3-sentencepiece). Run from the repository root:
    python3 scripts/make-meta-fixtures.py
"""
import hashlib
import io
import json
import os
import shutil

import torch

OUT = os.path.join("test", "fixtures", "meta")

DTYPE_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def tensor_bytes(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def sha256(t):
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def intermediate_size(dim, ffn_dim_multiplier, multiple_of):
    # Meta's FeedForward: hidden = int(2 * (4 * dim) / 3), times the multiplier, rounded up to multiple_of.
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def full_meta_model(params, vocab, dtype, seed):
    """A whole model in Meta's (unsharded) layout, as Meta's Transformer.state_dict() orders it."""
    g = torch.Generator().manual_seed(seed)
    dim, n_heads = params["dim"], params["n_heads"]
    kv = params.get("n_kv_heads", n_heads)
    head = dim // n_heads
    hidden = intermediate_size(dim, params.get("ffn_dim_multiplier"), params["multiple_of"])

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).to(dtype)

    sd = {"tok_embeddings.weight": rand(vocab, dim)}
    for i in range(params["n_layers"]):
        sd[f"layers.{i}.attention.wq.weight"] = rand(dim, dim)
        sd[f"layers.{i}.attention.wk.weight"] = rand(kv * head, dim)
        sd[f"layers.{i}.attention.wv.weight"] = rand(kv * head, dim)
        sd[f"layers.{i}.attention.wo.weight"] = rand(dim, dim)
        sd[f"layers.{i}.feed_forward.w1.weight"] = rand(hidden, dim)
        sd[f"layers.{i}.feed_forward.w2.weight"] = rand(dim, hidden)
        sd[f"layers.{i}.feed_forward.w3.weight"] = rand(hidden, dim)
        sd[f"layers.{i}.attention_norm.weight"] = (1 + torch.randn(dim, generator=g) * 0.1).to(dtype)
        sd[f"layers.{i}.ffn_norm.weight"] = (1 + torch.randn(dim, generator=g) * 0.1).to(dtype)
    sd["norm.weight"] = (1 + torch.randn(dim, generator=g) * 0.1).to(dtype)
    sd["output.weight"] = rand(vocab, dim)
    # LLaMA-1 checkpoints carry the rotary frequencies; the conversion never reads them.
    sd["rope.freqs"] = (1.0 / (10000.0 ** (torch.arange(0, head, 2).float() / head))).to(dtype)
    return sd


SPLIT_DIM0 = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3", "output")
SPLIT_DIM1 = ("attention.wo", "feed_forward.w2", "tok_embeddings")


def model_parallel_shards(sd, n):
    """fairscale's split: each rank's own slice, saved as its own tensor (clone: no shared storage)."""
    shards = [{} for _ in range(n)]
    for name, t in sd.items():
        stem = name.rsplit(".weight", 1)[0].split(".", 2)[-1] if name.startswith("layers.") else name.rsplit(".weight", 1)[0]
        for r in range(n):
            if stem in SPLIT_DIM0:
                part = t.chunk(n, dim=0)[r]
            elif stem in SPLIT_DIM1:
                part = t.chunk(n, dim=1)[r]
            else:
                part = t
            shards[r][name] = part.clone()
    return shards


def convert(params, loaded, num_shards):
    """convert_llama_weights_to_hf.write_model's tensor arithmetic (see the docstring), in state-dict order."""
    n_layers = params["n_layers"]
    n_heads = params["n_heads"]
    n_heads_per_shard = n_heads // num_shards
    dim = params["dim"]
    dims_per_head = dim // n_heads
    if params.get("n_kv_heads", None) is not None:
        num_key_value_heads = params["n_kv_heads"]
        num_key_value_heads_per_shard = num_key_value_heads // num_shards
        key_value_dim = dims_per_head * num_key_value_heads
    else:
        num_key_value_heads = n_heads
        num_key_value_heads_per_shard = n_heads_per_shard
        key_value_dim = dim

    def permute(w, n_heads, dim1=dim, dim2=dim):
        return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)

    out = {}
    if num_shards == 1:
        out["model.embed_tokens.weight"] = loaded["tok_embeddings.weight"]
    else:
        out["model.embed_tokens.weight"] = torch.cat([loaded[i]["tok_embeddings.weight"] for i in range(num_shards)], dim=1)
    for layer_i in range(n_layers):
        if num_shards == 1:
            q = permute(loaded[f"layers.{layer_i}.attention.wq.weight"], n_heads=n_heads)
            k = permute(loaded[f"layers.{layer_i}.attention.wk.weight"], n_heads=num_key_value_heads, dim1=key_value_dim)
            v = loaded[f"layers.{layer_i}.attention.wv.weight"]
            o = loaded[f"layers.{layer_i}.attention.wo.weight"]
            gate = loaded[f"layers.{layer_i}.feed_forward.w1.weight"]
            down = loaded[f"layers.{layer_i}.feed_forward.w2.weight"]
            up = loaded[f"layers.{layer_i}.feed_forward.w3.weight"]
            in_norm = loaded[f"layers.{layer_i}.attention_norm.weight"]
            post_norm = loaded[f"layers.{layer_i}.ffn_norm.weight"]
        else:
            in_norm = loaded[0][f"layers.{layer_i}.attention_norm.weight"].clone()
            post_norm = loaded[0][f"layers.{layer_i}.ffn_norm.weight"].clone()
            q = permute(torch.cat([loaded[i][f"layers.{layer_i}.attention.wq.weight"].view(n_heads_per_shard, dims_per_head, dim)
                                   for i in range(num_shards)], dim=0).reshape(dim, dim), n_heads=n_heads)
            k = permute(torch.cat([loaded[i][f"layers.{layer_i}.attention.wk.weight"].view(num_key_value_heads_per_shard, dims_per_head, dim)
                                   for i in range(num_shards)], dim=0).reshape(key_value_dim, dim),
                        num_key_value_heads, key_value_dim, dim)
            v = torch.cat([loaded[i][f"layers.{layer_i}.attention.wv.weight"].view(num_key_value_heads_per_shard, dims_per_head, dim)
                           for i in range(num_shards)], dim=0).reshape(key_value_dim, dim)
            o = torch.cat([loaded[i][f"layers.{layer_i}.attention.wo.weight"] for i in range(num_shards)], dim=1)
            gate = torch.cat([loaded[i][f"layers.{layer_i}.feed_forward.w1.weight"] for i in range(num_shards)], dim=0)
            down = torch.cat([loaded[i][f"layers.{layer_i}.feed_forward.w2.weight"] for i in range(num_shards)], dim=1)
            up = torch.cat([loaded[i][f"layers.{layer_i}.feed_forward.w3.weight"] for i in range(num_shards)], dim=0)
        # LlamaDecoderLayer registers self_attn (q, k, v, o), mlp (gate, down, up), then the two norms.
        out[f"model.layers.{layer_i}.self_attn.q_proj.weight"] = q
        out[f"model.layers.{layer_i}.self_attn.k_proj.weight"] = k
        out[f"model.layers.{layer_i}.self_attn.v_proj.weight"] = v
        out[f"model.layers.{layer_i}.self_attn.o_proj.weight"] = o
        out[f"model.layers.{layer_i}.mlp.gate_proj.weight"] = gate
        out[f"model.layers.{layer_i}.mlp.down_proj.weight"] = down
        out[f"model.layers.{layer_i}.mlp.up_proj.weight"] = up
        out[f"model.layers.{layer_i}.input_layernorm.weight"] = in_norm
        out[f"model.layers.{layer_i}.post_attention_layernorm.weight"] = post_norm
    out["model.norm.weight"] = loaded["norm.weight"] if num_shards == 1 else loaded[0]["norm.weight"]
    out["lm_head.weight"] = loaded["output.weight"] if num_shards == 1 else torch.cat([loaded[i]["output.weight"] for i in range(num_shards)], dim=0)
    # from_pretrained(..., torch_dtype=torch.float16) casts every parameter.
    return {k: v.to(torch.float16) for k, v in out.items()}


def tokenizer_model():
    """A real (tiny) SentencePiece BPE model, as Meta's tokenizer.model is one."""
    import sentencepiece as spm
    text = ["the quick brown fox jumps over the lazy dog", "a delta is the target minus the base",
            "llama weights in the original layout", "shards concatenated along an axis"] * 8
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=60,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   num_threads=1, minloglevel=2, normalization_rule_name="identity")
    return model.getvalue()


def write_fixture(name, params, dtype, num_shards, seed, tokenizer):
    directory = os.path.join(OUT, name)
    os.makedirs(directory)
    vocab = 96
    sd = full_meta_model(params, vocab, dtype, seed)
    shards = model_parallel_shards(sd, num_shards)
    for r, shard in enumerate(shards):
        torch.save(shard, os.path.join(directory, f"consolidated.{r:02d}.pth"))
    with open(os.path.join(directory, "params.json"), "w") as f:
        json.dump(params, f)
    with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
        f.write(tokenizer)
    # Read back as the script does: torch.load of each rank, in order.
    loaded = [torch.load(os.path.join(directory, f"consolidated.{r:02d}.pth"), map_location="cpu") for r in range(num_shards)]
    hf = convert(params, loaded[0] if num_shards == 1 else loaded, num_shards)
    return {
        "shards": num_shards,
        "tensors": [{"name": k, "dtype": DTYPE_NAMES[v.dtype], "shape": list(v.shape), "sha256": sha256(v)} for k, v in hf.items()],
    }


def unpermute(w, n_heads, dim1, dim2):
    """The inverse of the script's permute(): Hugging Face's two halves back to Meta's interleaved pairs."""
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def write_conventions_base(name, num_shards, tokenizer):
    """The Meta checkpoint whose conversion is the shared base of the convention fixtures
    (test/fixtures/conventions/base/bin, a transformers-4.28 conversion): every convention
    can then be applied from a Meta base and checked against the same expected tensors."""
    base_dir = os.path.join("test", "fixtures", "conventions", "base", "bin")
    hf = {}
    for f in sorted(os.listdir(base_dir)):
        if f.endswith(".bin"):
            hf.update(torch.load(os.path.join(base_dir, f), map_location="cpu"))
    with open(os.path.join(base_dir, "config.json")) as f:
        config = json.load(f)
    dim, n_heads, kv = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    head = dim // n_heads
    # intermediate 176 = 16 * ceil(int(8 * 64 / 3) / 16): multiple_of 16 gives the base's size
    params = {"dim": dim, "multiple_of": 16, "n_heads": n_heads, "n_kv_heads": kv, "n_layers": config["num_hidden_layers"],
              "norm_eps": config["rms_norm_eps"], "vocab_size": -1}
    sd = {"tok_embeddings.weight": hf["model.embed_tokens.weight"]}
    for i in range(params["n_layers"]):
        p = f"model.layers.{i}"
        sd[f"layers.{i}.attention.wq.weight"] = unpermute(hf[f"{p}.self_attn.q_proj.weight"], n_heads, dim, dim)
        sd[f"layers.{i}.attention.wk.weight"] = unpermute(hf[f"{p}.self_attn.k_proj.weight"], kv, kv * head, dim)
        sd[f"layers.{i}.attention.wv.weight"] = hf[f"{p}.self_attn.v_proj.weight"]
        sd[f"layers.{i}.attention.wo.weight"] = hf[f"{p}.self_attn.o_proj.weight"]
        sd[f"layers.{i}.feed_forward.w1.weight"] = hf[f"{p}.mlp.gate_proj.weight"]
        sd[f"layers.{i}.feed_forward.w2.weight"] = hf[f"{p}.mlp.down_proj.weight"]
        sd[f"layers.{i}.feed_forward.w3.weight"] = hf[f"{p}.mlp.up_proj.weight"]
        sd[f"layers.{i}.attention_norm.weight"] = hf[f"{p}.input_layernorm.weight"]
        sd[f"layers.{i}.ffn_norm.weight"] = hf[f"{p}.post_attention_layernorm.weight"]
    sd["norm.weight"] = hf["model.norm.weight"]
    sd["output.weight"] = hf["lm_head.weight"]
    directory = os.path.join(OUT, name)
    os.makedirs(directory)
    for r, shard in enumerate(model_parallel_shards(sd, num_shards)):
        torch.save(shard, os.path.join(directory, f"consolidated.{r:02d}.pth"))
    with open(os.path.join(directory, "params.json"), "w") as f:
        json.dump(params, f)
    with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
        f.write(tokenizer)
    loaded = [torch.load(os.path.join(directory, f"consolidated.{r:02d}.pth"), map_location="cpu") for r in range(num_shards)]
    converted = convert(params, loaded, num_shards)
    # The round trip is exact: the script turns this checkpoint into the conventions' base, tensor for tensor.
    for k, v in converted.items():
        assert torch.equal(v.view(torch.int16), hf[k].view(torch.int16)), k
    return {
        "shards": num_shards,
        "tensors": [{"name": k, "dtype": DTYPE_NAMES[v.dtype], "shape": list(v.shape), "sha256": sha256(v)} for k, v in converted.items()],
    }


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    tokenizer = tokenizer_model()
    llama1 = {"dim": 64, "multiple_of": 256, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-06, "vocab_size": -1}
    gqa = {"dim": 64, "multiple_of": 32, "ffn_dim_multiplier": 1.3, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2,
           "norm_eps": 1e-05, "vocab_size": -1}
    expected = {
        "one-shard": write_fixture("one-shard", llama1, torch.float16, 1, 1, tokenizer),
        "two-shards": write_fixture("two-shards", llama1, torch.float16, 2, 2, tokenizer),
        "gqa-bf16": write_fixture("gqa-bf16", gqa, torch.bfloat16, 2, 3, tokenizer),
        "conventions-base": write_conventions_base("conventions-base", 2, tokenizer),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
