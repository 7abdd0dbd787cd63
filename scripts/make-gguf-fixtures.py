#!/usr/bin/env python3
"""Writes test/fixtures/gguf/: a tiny LLaMA model (random weights, fixed seed)
with a real SentencePiece tokenizer, and expected.json, the oracle the GGUF
tests compare against:

- the tokenizer as SentencePiece itself reads it (piece, score, type of every
  id) and the ids it gives for the prompts (llama.cpp must tokenize alike);
- the greedy continuation of each prompt by a PyTorch reference forward pass
  of the model (float32 arithmetic on the float16 weights), with the margin
  between the top two logits at every step;
- the same continuation with the weights llama.cpp holds after Q8_0
  quantization (dequantized again), for the Q8_0 output;
- the sha256 of every tensor's bytes as llama.cpp's converter would write
  them for each --outtype (the q/k rows permuted as its LlamaModel.permute
  does; F16 as numpy's astype; BF16 and Q8_0 by gguf-py's own quants.py).

The tokenizer is trained as LLaMA's was: BPE, byte_fallback, split digits,
identity normalization, a dummy prefix, <unk>/<s>/</s> at 0/1/2.

Deterministic. Needs torch, numpy and sentencepiece (Debian's python3-torch,
python3-sentencepiece) and gguf-py (llama.cpp's `gguf` package, 0.19.0: a
directory or the wheel, given by --gguf-py, else importable).
Run from the repository root: python3 scripts/make-gguf-fixtures.py [--gguf-py PATH]
"""
import argparse
import hashlib
import io
import json
import os
import struct
import sys

import numpy as np
import sentencepiece as spm
import torch

OUT = os.path.join("test", "fixtures", "gguf")

parser = argparse.ArgumentParser()
parser.add_argument("--gguf-py", help="gguf-py directory or wheel (llama.cpp's gguf package)")
args = parser.parse_args()
if args.gguf_py:
    sys.path.insert(0, args.gguf_py)
import gguf  # noqa: E402
import gguf.quants  # noqa: E402

CORPUS = """\
The quick brown fox jumps over the lazy dog near the river bank.
A model that is recovered from its delta must be the very model its publisher had.
Llamas live in the high mountains of South America and carry loads for farmers.
In 1987 the library held 12345 books, and by 2023 it held 67890 of them.
She sells sea shells by the sea shore, and the shells she sells are surely sea shells.
Numbers like 3.14159 and 2.71828 appear in many places in mathematics.
The weather today is sunny with a light breeze from the west.
Tokens are pieces of text; a tokenizer splits words into pieces it knows.
Café, naïve, résumé and jalapeño keep their accents when they are encoded.
日本語のテキストもバイトに分けて表されます。
Every tensor is written in the order the file lists it, aligned to thirty-two bytes.
The cat sat on the mat and watched the birds in the garden all afternoon.
Once upon a time there was a small village at the edge of a great forest.
Programmers write code, test it, and fix the bugs that the tests find.
The river flows to the sea, and the sea returns the water to the clouds.
"""

# Candidates; a prompt is kept when every greedy step of the reference wins by
# at least MIN_MARGIN (llama.cpp's float16 activations move logits by far less).
CANDIDATES = [
    "The quick brown fox",
    "Once upon a time",
    "Llamas live in",
    "In 1987 the library",
    "Café and 日本",
    "The river flows",
    "Programmers write code",
    "She sells sea shells",
    "Numbers like 3.14",
    "The cat sat on the mat",
]
MIN_MARGIN = 0.3

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 160,
    "max_position_embeddings": 256,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pad_token_id": None,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.40.0",
    "use_cache": True,
}

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'USER: ' + message['content'] + '\\n' }}{% else %}"
    "{{ 'ASSISTANT: ' + message['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "added_tokens_decoder": {
        "0": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
        "1": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
        "2": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
    },
    "bos_token": "<s>",
    "chat_template": CHAT_TEMPLATE,
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "legacy": False,
    "model_max_length": 256,
    "pad_token": None,
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
    "use_default_system_prompt": False,
}

SPECIAL_TOKENS_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

STEPS = 10


def train_tokenizer():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def make_weights(vocab):
    g = torch.Generator().manual_seed(20240521)
    c = CONFIG
    h, ff, n_head, n_kv = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = h // n_head

    def rand(*shape, std):
        return (torch.randn(*shape, generator=g) * std).to(torch.float16)

    w = {"model.embed_tokens.weight": rand(vocab, h, std=1.0)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + torch.randn(h, generator=g) * 0.1).to(torch.float16)
        w[p + "self_attn.q_proj.weight"] = rand(n_head * hd, h, std=h ** -0.5)
        w[p + "self_attn.k_proj.weight"] = rand(n_kv * hd, h, std=h ** -0.5)
        w[p + "self_attn.v_proj.weight"] = rand(n_kv * hd, h, std=h ** -0.5)
        w[p + "self_attn.o_proj.weight"] = rand(h, n_head * hd, std=h ** -0.5)
        w[p + "post_attention_layernorm.weight"] = (1 + torch.randn(h, generator=g) * 0.1).to(torch.float16)
        w[p + "mlp.gate_proj.weight"] = rand(ff, h, std=h ** -0.5)
        w[p + "mlp.up_proj.weight"] = rand(ff, h, std=h ** -0.5)
        w[p + "mlp.down_proj.weight"] = rand(h, ff, std=ff ** -0.5)
    w["model.norm.weight"] = (1 + torch.randn(h, generator=g) * 0.1).to(torch.float16)
    # Peaked logits: greedy choices with clear margins, so llama.cpp's
    # float16 activations cannot flip them.
    w["lm_head.weight"] = rand(vocab, h, std=2.0)
    return w


def write_safetensors(path, tensors):
    """A safetensors file laid out as Hugging Face's serializer lays one out (one dtype: by name)."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        data = tensors[name].contiguous().numpy().tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(w, ids):
    """LLaMA as transformers computes it (rotate_half rotary on the stored q/k rows), in float32."""
    c = CONFIG
    h, n_head, n_kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = h // n_head
    eps = c["rms_norm_eps"]
    f = {k: v.to(torch.float32) for k, v in w.items()}
    T = len(ids)
    x = f["model.embed_tokens.weight"][torch.tensor(ids)]
    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, f[p + "input_layernorm.weight"], eps)
        q = (a @ f[p + "self_attn.q_proj.weight"].T).view(T, n_head, hd).transpose(0, 1)
        k = (a @ f[p + "self_attn.k_proj.weight"].T).view(T, n_kv, hd).transpose(0, 1)
        v = (a @ f[p + "self_attn.v_proj.weight"].T).view(T, n_kv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(n_head // n_kv, dim=0)
        v = v.repeat_interleave(n_head // n_kv, dim=0)
        att = (q @ k.transpose(1, 2)) / (hd ** 0.5) + mask
        o = (att.softmax(-1) @ v).transpose(0, 1).reshape(T, h)
        x = x + o @ f[p + "self_attn.o_proj.weight"].T
        m = rms_norm(x, f[p + "post_attention_layernorm.weight"], eps)
        gate = m @ f[p + "mlp.gate_proj.weight"].T
        up = m @ f[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ f[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, f["model.norm.weight"], eps)
    return x @ f["lm_head.weight"].T


def greedy(w, ids, steps):
    ids = list(ids)
    out, margins = [], []
    for _ in range(steps):
        logits = forward(w, ids)[-1]
        top = torch.topk(logits, 2)
        out.append(int(top.indices[0]))
        margins.append(round(float(top.values[0] - top.values[1]), 4))
        ids.append(out[-1])
    return out, margins


# The converter's tensor names and q/k permutation (convert_hf_to_gguf.py LlamaModel).
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(name):
    if name in NAMES:
        return NAMES[name]
    parts = name.split(".")
    return f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:-1])]}.{parts[-1]}"


def permute(weights, n_head, n_head_kv):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def converted(w, outtype):
    """(gguf name, ggml type name, bytes) per tensor, as prepare_tensors writes them."""
    out = []
    qtypes = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
              "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    for name in sorted(w):
        t = w[name]
        if name.endswith("q_proj.weight"):
            t = permute(t, CONFIG["num_attention_heads"], CONFIG["num_attention_heads"])
        if name.endswith("k_proj.weight"):
            t = permute(t, CONFIG["num_attention_heads"], CONFIG["num_key_value_heads"])
        new = gguf_name(name)
        data = t.numpy()
        qtype = gguf.GGMLQuantizationType.F32 if data.ndim <= 1 or new.endswith("_norm.weight") else qtypes[outtype]
        q = gguf.quants.quantize(data, qtype)
        out.append((new, qtype.name, q.tobytes(), t, qtype))
    return out


def main():
    os.makedirs(os.path.join(OUT, "model"), exist_ok=True)
    sp_bytes = train_tokenizer()
    with open(os.path.join(OUT, "model", "tokenizer.model"), "wb") as f:
        f.write(sp_bytes)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(sp_bytes)
    vocab = sp.vocab_size()
    CONFIG["vocab_size"] = vocab

    w = make_weights(vocab)
    write_safetensors(os.path.join(OUT, "model", "model.safetensors"), w)
    with open(os.path.join(OUT, "model", "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(OUT, "model", "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "model", "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_TOKENS_MAP, f, indent=2)
        f.write("\n")

    def piece_type(i):
        if sp.IsUnknown(i):
            return 2
        if sp.IsControl(i):
            return 3
        if sp.IsUnused(i):
            return 5
        if sp.IsByte(i):
            return 6
        return 1

    tokenizer = {
        "pieces": [sp.IdToPiece(i) for i in range(vocab)],
        "scores": [sp.GetScore(i) for i in range(vocab)],
        "types": [piece_type(i) for i in range(vocab)],
    }

    prompts = []
    q8_weights = {}
    # The Q8_0 model as llama.cpp holds it: each matrix quantized and dequantized again
    # (quantizing before or after the q/k row permutation gives the same blocks: a row stays whole).
    for name in w:
        t = w[name]
        data = t.numpy()
        if data.ndim >= 2:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            q8_weights[name] = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float32))
        else:
            q8_weights[name] = t.to(torch.float32)
    for text in CANDIDATES:
        ids = [sp.bos_id()] + sp.EncodeAsIds(text)
        tokens, margins = greedy(w, ids, STEPS)
        if min(margins) < MIN_MARGIN:
            print("left out (a close call):", text, margins)
            continue
        q8_tokens, q8_margins = greedy(q8_weights, ids, STEPS)
        prompts.append({"text": text, "ids": ids, "greedy": tokens, "margins": margins,
                        "q8_0_greedy": q8_tokens, "q8_0_margins": q8_margins})

    tensors = {}
    for outtype in ("f32", "f16", "bf16", "q8_0"):
        tensors[outtype] = [{"name": new, "type": tname, "sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                            for new, tname, b, _, _ in converted(w, outtype)]

    expected = {
        "gguf_py": gguf.__name__ + " " + getattr(gguf, "__version__", "0.19.0"),
        "config": CONFIG,
        "tokenizer": tokenizer,
        "prompts": prompts,
        "tensors": tensors,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for p in prompts:
        print(p["text"], p["ids"], p["greedy"], "min margin", min(p["margins"]), "q8 same:", p["q8_0_greedy"] == p["greedy"], min(p["q8_0_margins"]))


main()
