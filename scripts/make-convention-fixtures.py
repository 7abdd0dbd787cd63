#!/usr/bin/env python3
"""Writes test/fixtures/conventions/: tiny deltas published the way six LLaMA-era
publishers published theirs, and what each publisher's own recovery script
leaves, computed with PyTorch (CPU) by emulating that script's arithmetic on
state dicts (no transformers, no tokenizers). The TypeScript implementation is
checked bit for bit against expected.json.

Needs torch (this was run with torch 1.13 on CPU). Deterministic (fixed seeds;
run twice, same bytes). Run from the repository root:
    python3 scripts/make-convention-fixtures.py
The tiny base is derived at generation time from
../shared/realdata/tiny-llama-bf16/model.safetensors (hidden 64, 2 layers,
4 heads / 2 KV heads, intermediate 176, vocabulary 512); only outputs are
committed.

Publisher scripts read (repository, path, commit):
  lm-sys/FastChat  fastchat/model/apply_delta.py at f4758176 (unchanged to HEAD
      0e6d3e4b): apply_delta() lines 125-144 (base and delta loaded fp16, line 139
      asserts every BASE state-dict key is in the delta, line 140 adds in place,
      line 143 saves the base model); apply_delta_low_cpu_mem() lines 70-122
      (torch.load of glob("pytorch_model-*.bin"), in-place add in stored dtypes,
      line 107); make_delta.py at c1985314 lines 14-37. HEAD pyproject:
      transformers>=4.31.0.
  lm-sys/FastChat  tag v0.1.10 (f34f28ce) apply_delta.py lines 14-40 (base
      tokenizer gets [PAD], base resized, new rows set to 0 (lines 27-31), then
      the v1.1 loop); make_delta.py lines 14-44 (same zero rows, then target -=
      base).
  tatsu-lab/stanford_alpaca  weight_diff.py at 7a95b21 (unchanged to HEAD
      761dc5b): make_diff() lines 24-67, recover() lines 70-150 (fp32 loads lines
      96-107, smart resize when the raw tokenizer has no pad token lines 112-117,
      `for key in state_dict_recovered: add_(raw)` lines 122-125, integrity check
      `sum(t.sum() for t in state dict)` against 50637.1836, atol 1e-2, lines
      127-132); train.py at 3783d18 smart_tokenizer_and_embedding_resize() lines
      65-85 (mean over dim 0 of the old rows, input and output embeddings each
      their own).
  haotian-liu/LLaVA  llava/model/apply_delta.py and make_delta.py at 6e38fbf
      (unchanged to HEAD c121f04): apply lines 13-37 (iterates the DELTA's state
      dict; mm_projector.{weight,bias} only in the delta are kept; same shape ->
      delta += base; embed_tokens/lm_head -> delta[:b0, :b1] += base; saves the
      delta model), make lines 13-41; llava/model/llava.py at 6e38fbf lines
      40-52 (mm_projector = nn.Linear(mm_hidden_size, hidden_size), registered
      after the LLaMA layers and norm). HEAD pyproject: transformers==4.37.2.
  IDEA-CCNL/Fengshenbang-LM  fengshen/utils/apply_delta.py and make_delta.py at
      dfe4f4c (unchanged to HEAD c8fb7b8): apply_delta() lines 129-154 (iterates
      the delta; names containing "embed_tokens", "lm_head.weight" or
      "self_attn.rotary_emb.inv_freq" are kept as stored, every other tensor
      delta += base in fp16; saves the delta model); apply_delta_low_cpu_mem()
      lines 72-126 (iterates the BASE files' keys, replaces the three kinds by the
      delta's, adds the rest; index total_size summed over the base tensors,
      line 113); make_delta.py lines 16-47 (max_shard_size "1GB").

How transformers loads matters (state-dict keys, order, dtypes), so every
recovery is computed for two library generations:
  transformers 4.28-4.30 (the era of all six releases; with accelerate 0.18):
      every layer has a persistent fp32 buffer self_attn.rotary_emb.inv_freq,
      in the state dict after o_proj; LlamaMLP registers gate, down, up. A model
      whose files lack inv_freq computes it at init,
      1.0 / (10000 ** (arange(0, head_dim, 2).float() / head_dim)), exactly in
      fp32. One whose files carry it, loaded with torch_dtype=float16, gets the
      stored value rounded to fp16 and back to fp32 (from_pretrained casts every
      floating tensor to torch_dtype; accelerate 0.18 set_module_tensor_to_device
      then casts back to the fp32 buffer's dtype). Keys in a file that the model
      does not have are dropped at load.
  transformers >= 4.31: inv_freq is not in the state dict (non-persistent), a
      file's inv_freq keys are dropped at load; LlamaMLP registers gate, up,
      down. FastChat HEAD requires >= 4.31 and LLaVA HEAD pins 4.37.2.

Fixtures (each convention directory has delta/ as published and expected.json):
  base/bin          the base as a transformers-4.28 conversion would write it:
                    fp16 + fp32 inv_freq buffers, 2 .bin shards + index, 4.28
                    key order. base/safetensors: the same fp16 weights as a later
                    conversion writes them: no inv_freq, 2 safetensors shards +
                    index, >= 4.31 key order. Weights: realdata bf16 values with a
                    0.4 % multiplicative jitter, rounded to fp16, so that they use
                    all 11 significant bits as a real fp16 LLaMA does.
  fastchat          FastChat v1.1 (Vicuna v1.1): fp16 delta, vocabulary = base's;
                    zero fp32 inv_freq buffers (transformers 4.28 made them); one
                    delta-only tensor (v_head.summary.weight, a trl value head left
                    in an RLHF checkpoint) that FastChat drops.
  fastchat-v0       FastChat v0 (Vicuna v0, StableVicuna): fp16, vocabulary base+1
                    with [PAD] at the new id; the base is grown by a ZERO row before
                    the fp16 add; the delta's pad rows hold -0.0 elements, which
                    come back +0.0 (+0.0 + -0.0 = +0.0).
  alpaca            Stanford Alpaca weight_diff.py: fp32 diff, vocabulary base+1
                    with [PAD]; the raw model is upcast to fp32 and grown by one
                    row equal to torch's own mean(dim=0) of the old rows (embed
                    and lm_head separately); fp32 add over the diff's keys; the
                    integrity sum is recorded as this fixture's "published
                    constant" (with and without inv_freq).
  llava             LLaVA v1-1 delta: fp16, vocabulary base+3 (<im_patch>,
                    <im_start>, <im_end>) with the extra rows stored absolute (one
                    -0.0, which survives); model.mm_projector.{weight,bias} only in
                    the delta, copied; config with mm_vision_tower, use_mm_proj,
                    mm_hidden_size.
  ziya              Ziya (Fengshenbang): fp16, vocabulary 640 against the base's
                    512; embed_tokens, lm_head and inv_freq stored absolute and
                    copied, every other tensor fp16 add; many small shards (the
                    analogue of Ziya's 1 GB shards).
  not-a-delta       full fine-tuned weights published as if they were a delta (like
                    the WizardVicunaLM 13B release, CONVENTIONS.md 3.13): config torch_dtype float32, shards
                    holding both float32 and bfloat16 tensors, vocabulary = base's.
                    No recovery; expected.json has per-tensor cosine and norm ratio
                    against the base (every convention's expected.json has them for
                    its own delta, so tests can check detection margins).

Fine-tune noise: 5e-3 of each tensor's RMS (see NOISE); the delta-to-base norm
ratio is therefore ~5e-3 per tensor.

Published-file formats follow transformers 4.28: shards split by
shard_checkpoint (state-dict order, a new shard when the next tensor would
exceed max_shard_size, sizes in bytes with "KB" = 1000), torch.save of a plain
dict per shard, pytorch_model.bin.index.json and the other JSON files as
json.dumps(indent=2, sort_keys=True) + "\\n" (added_tokens.json too: Alpaca's is
21 bytes, LLaVA v0's 88).
"""
import collections
import hashlib
import json
import math
import os
import shutil
import struct
import sys

import torch

REALDATA = os.path.join("..", "shared", "realdata", "tiny-llama-bf16")
OUT = os.path.join("test", "fixtures", "conventions")
GENERATOR = "scripts/make-convention-fixtures.py"

DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}

V428, V431 = "transformers-4.28", "transformers-4.31"
# The fine-tune step: NOISE x each tensor's RMS, Gaussian. At 1e-3, fp16
# (target - base) + base gives back the target for every element of this model
# (measured: 0 of 158k; 2e-3: 1); at 5e-3 about 0.08 % come back 1 ulp off,
# the low end of what real fine-tunes show, so the fixtures exercise it.
NOISE = 5e-3

# --- bytes, hashes, safetensors (same approach as make-legacy-fixtures.py) ---


def tensor_bytes(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def sha(t):
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def f32_bits(x):
    return "0x%08x" % struct.unpack("<I", struct.pack("<f", x))[0]


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


def write_safetensors(path, tensors, metadata=None):
    """Byte-compatible with Hugging Face's serializer (see make-legacy-fixtures.py)."""
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


def write_json(path, obj):
    """transformers' to_json_string / index / tokenizer files: indent 2, sorted keys, final newline."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def describe(t, name, **extra):
    d = {"name": name, "dtype": NAMES[t.dtype], "shape": list(t.shape), "sha256": sha(t)}
    d.update(extra)
    return d


def file_list(directory):
    files = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return files


# --- transformers 4.28 save_pretrained --------------------------------------


def size_to_int(text):
    """transformers convert_file_size_to_int: "KB" is 10**3 bytes."""
    units = {"GB": 10**9, "MB": 10**6, "KB": 10**3}
    return int(text[:-2]) * units[text[-2:]]


def shard_checkpoint(state_dict, max_shard_size):
    """transformers 4.28 shard_checkpoint: in state-dict order, start a new shard
    when the next tensor would take the current one over max_shard_size."""
    limit = size_to_int(max_shard_size)
    shards, size = [collections.OrderedDict()], 0
    for name, t in state_dict.items():
        n = t.numel() * t.element_size()
        assert n <= limit, "4.28 would write an empty first shard; pick a larger max_shard_size"
        if size + n > limit:
            shards.append(collections.OrderedDict())
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def save_pretrained(directory, state_dict, max_shard_size, fmt="bin"):
    os.makedirs(directory, exist_ok=True)
    shards = shard_checkpoint(state_dict, max_shard_size)
    count = len(shards)
    weight_map = {}
    for i, part in enumerate(shards):
        if fmt == "bin":
            file = "pytorch_model.bin" if count == 1 else f"pytorch_model-{i + 1:05d}-of-{count:05d}.bin"
            torch.save({k: v.clone().contiguous() for k, v in part.items()}, os.path.join(directory, file))
        else:
            file = "model.safetensors" if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            write_safetensors(os.path.join(directory, file), part, {"format": "pt"})
        for k in part:
            weight_map[k] = file
    if count > 1:
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        write_json(os.path.join(directory, "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"), index)


def load_dir(directory):
    """Every tensor of a published directory, shard by shard in index order of files, as stored."""
    index_bin = os.path.join(directory, "pytorch_model.bin.index.json")
    index_st = os.path.join(directory, "model.safetensors.index.json")
    out = collections.OrderedDict()
    if os.path.exists(index_bin):
        files = sorted(set(json.load(open(index_bin))["weight_map"].values()))
        for file in files:
            out.update(torch.load(os.path.join(directory, file)))
    else:
        files = sorted(set(json.load(open(index_st))["weight_map"].values()))
        for file in files:
            out.update(read_safetensors(os.path.join(directory, file)))
    return out


# --- the model: names and state-dict order ----------------------------------

PER_LAYER = {
    V428: ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
           "self_attn.rotary_emb.inv_freq", "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight",
           "input_layernorm.weight", "post_attention_layernorm.weight"],
    V431: ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
           "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
           "input_layernorm.weight", "post_attention_layernorm.weight"],
}
MM = ["model.mm_projector.weight", "model.mm_projector.bias"]
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def model_keys(version, layers, mm_projector=False):
    keys = [EMBED]
    for i in range(layers):
        keys += [f"model.layers.{i}.{p}" for p in PER_LAYER[version]]
    keys.append("model.norm.weight")
    if mm_projector:  # LlavaLlamaModel registers it after LlamaModel's modules
        keys += MM
    keys.append(HEAD)
    return keys


def is_inv_freq(name):
    return name.endswith("self_attn.rotary_emb.inv_freq")


class Model:
    def __init__(self, real_config):
        self.hidden = real_config["hidden_size"]
        self.heads = real_config["num_attention_heads"]
        self.kv_heads = real_config["num_key_value_heads"]
        self.layers = real_config["num_hidden_layers"]
        self.intermediate = real_config["intermediate_size"]
        self.head_dim = self.hidden // self.heads
        # transformers 4.28 LlamaRotaryEmbedding.__init__ (base=10000), fp32
        self.inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        assert self.inv_freq.dtype == torch.float32

    def keys(self, version, mm_projector=False):
        return model_keys(version, self.layers, mm_projector)

    def load(self, files, version, torch_dtype, mm_projector=False):
        """from_pretrained(path, torch_dtype=..., low_cpu_mem_usage=True): the model's
        state dict (keys and order of `version`) and the file keys dropped."""
        sd = collections.OrderedDict()
        for k in self.keys(version, mm_projector):
            if k in files:
                t = files[k]
                if t.is_floating_point():
                    t = t.to(torch_dtype)  # _load_state_dict_into_meta_model
                if is_inv_freq(k):
                    t = t.to(torch.float32)  # accelerate 0.18: value.to(old_value.dtype), the fp32 buffer
                sd[k] = t.clone()
            elif is_inv_freq(k):
                sd[k] = self.inv_freq.clone()  # computed at init
            else:
                raise KeyError(f"{k} missing from the checkpoint")
        dropped = [k for k in files if k not in sd]
        return sd, dropped


# --- configs and tokenizer files ---------------------------------------------


def llama_config(m, vocab, torch_dtype, transformers_version, name_or_path=None, **over):
    c = {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": m.hidden,
        "initializer_range": 0.02,
        "intermediate_size": m.intermediate,
        "max_position_embeddings": 2048,
        "model_type": "llama",
        "num_attention_heads": m.heads,
        "num_hidden_layers": m.layers,
        # LLaMA-1 had no grouped-query attention; the tiny realdata model does,
        # so the configs say so (k_proj/v_proj are [32, 64]).
        "num_key_value_heads": m.kv_heads,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "transformers_version": transformers_version,
        "use_cache": True,
        "vocab_size": vocab,
    }
    if name_or_path:
        c["_name_or_path"] = name_or_path
    c.update(over)
    return c


def generation_config(transformers_version, bos=1, eos=2, pad=0):
    return {"_from_model_config": True, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
            "transformers_version": transformers_version}


def added_token(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_tokenizer(directory, special, added=None, pad=None, model_max_length=2048, padding_side=None):
    config = {
        "bos_token": added_token("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": added_token("</s>"),
        "model_max_length": model_max_length,
        "pad_token": pad,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": added_token("<unk>"),
    }
    if padding_side:
        config["padding_side"] = padding_side
    write_json(os.path.join(directory, "tokenizer_config.json"), config)
    write_json(os.path.join(directory, "special_tokens_map.json"), special)
    if added:
        write_json(os.path.join(directory, "added_tokens.json"), added)


def write_model_files(directory, config, tokenizer=None):
    write_json(os.path.join(directory, "config.json"), config)
    write_json(os.path.join(directory, "generation_config.json"),
               generation_config(config["transformers_version"], config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]))
    if tokenizer is not None:
        write_tokenizer(directory, **tokenizer)


# --- noise and statistics ------------------------------------------------------


def rms(t):
    return t.float().pow(2).mean().sqrt().item()


def finetune(b, g, scale=NOISE):
    """fp32 fine-tuned value: the base plus a step of `scale` x the tensor's RMS."""
    b32 = b.float()
    return b32 + scale * rms(b32) * torch.randn(b.shape, generator=g)


def stats(stored, base):
    """Cosine and norm ratio of a stored tensor against the base, over the
    overlapping block, in float64 (6 significant digits)."""
    s, b = stored.double(), base.double()
    if s.dim() == 2 and s.shape != b.shape:
        s = s[: b.shape[0], : b.shape[1]]
    ns, nb = s.norm().item(), b.norm().item()
    cos = None if ns == 0 or nb == 0 else float("%.6g" % ((s * b).sum().item() / (ns * nb)))
    return {"cosine": cos, "norm_ratio": float("%.6g" % (ns / nb))}


def detection(delta_files, base_bin, absolute):
    per = {}
    for name, t in delta_files.items():
        if name not in base_bin:
            per[name] = {"stored": "absolute", "in_base": False}
            continue
        s = stats(t, base_bin[name])
        s["stored"] = "absolute" if absolute(name) else "diff"
        if t.shape != base_bin[name].shape:
            s["rows_beyond_base"] = t.shape[0] - base_bin[name].shape[0]
        per[name] = s
    diffs = [v for v in per.values() if v.get("stored") == "diff" and v.get("cosine") is not None]
    absolutes = [v for v in per.values() if v.get("stored") == "absolute" and v.get("cosine") is not None]
    summary = {}
    if diffs:
        summary["max_abs_cosine_of_diffs"] = max(abs(v["cosine"]) for v in diffs)
        summary["max_norm_ratio_of_diffs"] = max(v["norm_ratio"] for v in diffs)
    if absolutes:
        summary["min_cosine_of_absolutes"] = min(v["cosine"] for v in absolutes)
        summary["min_norm_ratio_of_absolutes"] = min(v["norm_ratio"] for v in absolutes)
    return {"against": "base/bin (stored values; overlapping block for grown tensors)", "summary": summary, "tensors": per}


def differing(recovered, target):
    per, total = {}, 0
    for name, r in recovered.items():
        if name in target and target[name].shape == r.shape and target[name].dtype == r.dtype:
            n = int((r.reshape(-1).view(torch.int16 if r.element_size() == 2 else torch.int32)
                     != target[name].reshape(-1).view(torch.int16 if r.element_size() == 2 else torch.int32)).sum())
            if n:
                per[name] = n
                total += n
    return {"elements": total, "of": sum(r.numel() for r in recovered.values()), "tensors": per}


def run(run_id, script, transformers, base, iterates, recovered, rules, dropped, target, notes=None, saves=None):
    r = {
        "id": run_id,
        "script": script,
        "transformers": transformers,
        "base": base,
        "iterates": iterates,
        "saves": saves,
        "tensors": [describe(t, k, rule=rules[k]) for k, t in recovered.items()],
        "dropped": dropped,
        "differs_from_target": differing(recovered, target),
    }
    if notes:
        r["notes"] = notes
    return r


def neg_zero_positions(t):
    flat = t.reshape(-1)
    return [int(i) for i in ((flat == 0) & torch.signbit(flat)).nonzero().reshape(-1)]


# --- the shared base -------------------------------------------------------------


def make_base(real, m):
    g = torch.Generator().manual_seed(1000)
    weights = collections.OrderedDict()
    for k in m.keys(V428):
        if is_inv_freq(k):
            continue
        r = real[k].float()
        weights[k] = (r * (1 + 0.004 * torch.randn(r.shape, generator=g))).to(torch.float16)
    bin_sd = collections.OrderedDict()
    for k in m.keys(V428):
        bin_sd[k] = m.inv_freq.clone() if is_inv_freq(k) else weights[k]
    st_sd = collections.OrderedDict((k, weights[k]) for k in m.keys(V431))
    return bin_sd, st_sd


def write_base(m, bin_sd, st_sd):
    d_bin = os.path.join(OUT, "base", "bin")
    d_st = os.path.join(OUT, "base", "safetensors")
    save_pretrained(d_bin, bin_sd, "200KB", "bin")
    write_model_files(d_bin, llama_config(m, 512, "float16", "4.28.0.dev0"),
                      dict(special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    save_pretrained(d_st, st_sd, "200KB", "safetensors")
    write_model_files(d_st, llama_config(m, 512, "float16", "4.35.2", attention_bias=False, pretraining_tp=1,
                                         rope_scaling=None, rope_theta=10000.0),
                      dict(special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    via_f16 = m.inv_freq.to(torch.float16).to(torch.float32)
    expected = {
        "about": "The shared base. bin: a transformers-4.28 conversion (fp16 weights, fp32 rotary_emb.inv_freq buffers, 4.28 key order, "
                 "2 shards). safetensors: the same fp16 weights as a later conversion writes them (no inv_freq, >= 4.31 key order, "
                 "2 shards, __metadata__ {format: pt}). Weights: realdata tiny-llama-bf16 x (1 + 0.004 N(0,1)), rounded to fp16.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "inv_freq": {
            "formula": "1.0 / (10000 ** (torch.arange(0, %d, 2).float() / %d))" % (m.head_dim, m.head_dim),
            "f32_le_hex": tensor_bytes(m.inv_freq).hex(),
            "sha256": sha(m.inv_freq),
            "through_f16": {"about": "the value transformers 4.28 + accelerate 0.18 holds after loading a stored inv_freq with torch_dtype=float16",
                            "f32_le_hex": tensor_bytes(via_f16).hex(), "sha256": sha(via_f16)},
        },
        "bin": {"files": file_list(d_bin), "tensors": [describe(t, k) for k, t in bin_sd.items()]},
        "safetensors": {"files": file_list(d_st), "tensors": [describe(t, k) for k, t in st_sd.items()]},
    }
    write_json(os.path.join(OUT, "base", "expected.json"), expected)


# --- conventions -------------------------------------------------------------------


def publish(name, delta_sd, max_shard_size, config, tokenizer):
    d = os.path.join(OUT, name, "delta")
    save_pretrained(d, delta_sd, max_shard_size, "bin")
    write_model_files(d, config, tokenizer)
    loaded = load_dir(d)
    assert list(loaded) == list(delta_sd) and all(sha(loaded[k]) == sha(delta_sd[k]) for k in delta_sd)
    return d, loaded


def delta_section(d, delta_sd, max_shard_size):
    return {
        "dir": "delta",
        "max_shard_size": max_shard_size,
        "files": file_list(d),
        "tensors": [describe(t, k) for k, t in delta_sd.items()],
    }


def fastchat(m, base_bin, base_st):
    """FastChat v1.1 (Vicuna v1.1)."""
    g = torch.Generator().manual_seed(1001)
    target = collections.OrderedDict()
    for k in m.keys(V428):
        target[k] = m.inv_freq.clone() if is_inv_freq(k) else finetune(base_bin[k], g).to(torch.float16)
    # make_delta (transformers 4.28): every target key, target -= base in place
    delta = collections.OrderedDict()
    for k, t in target.items():
        d = t.clone()
        d -= base_bin[k]
        delta[k] = d
    delta["v_head.summary.weight"] = (0.02 * torch.randn(1, m.hidden, generator=g)).to(torch.float16)
    assert all(int(delta[k].abs().max()) == 0 for k in delta if is_inv_freq(k))

    mss = "120KB"
    d, files = publish("fastchat", delta, mss,
                       llama_config(m, 512, "float16", "4.28.0.dev0", "vicuna-tiny-v1.1-fp16"),
                       dict(special={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}))

    runs = []
    script = "lm-sys/FastChat fastchat/model/apply_delta.py apply_delta() (f4758176 = HEAD)"
    for version, base_name, base_files in [(V428, "base/bin", base_bin), (V428, "base/safetensors", base_st), (V431, "base/safetensors", base_st)]:
        b, _ = m.load(base_files, version, torch.float16)
        dl, dropped = m.load(files, version, torch.float16)
        out, rules = collections.OrderedDict(), {}
        for name, p in b.items():  # line 138-140
            assert name in dl
            p = p.clone()
            p += dl[name]
            out[name] = p
            rules[name] = "add"
        notes = None
        if version == V428:
            notes = ("inv_freq = the base model's buffer + 0: " +
                     ("the stored fp32 value rounded through fp16 by the loader (from_pretrained casts it to torch_dtype, "
                      "accelerate 0.18 casts it back to the fp32 buffer's dtype)" if base_name == "base/bin"
                      else "computed at init (the base files have none), exact fp32"))
        runs.append(run(f"{version}/{base_name}", script, version, base_name,
                        "base model state dict (asserts each key is in the delta)", out, rules,
                        [{"name": k, "why": "not a key of the model: dropped by from_pretrained"} for k in dropped],
                        target, notes, saves="base model (config and generation_config from the base), delta tokenizer"))

    # --low-cpu-mem: torch.load of the base's pytorch_model-*.bin files, add in stored dtypes
    out, rules = collections.OrderedDict(), {}
    for name, p in base_bin.items():
        p = p.clone()
        p += files[name]
        out[name] = p
        rules[name] = "add"
    runs.append(run("low-cpu-mem/base/bin", "lm-sys/FastChat fastchat/model/apply_delta.py apply_delta_low_cpu_mem() (f4758176 = HEAD)",
                    None, "base/bin", "base files' keys (glob order of the 4 GiB re-split parts; here one part per file, listed sorted)",
                    out, rules, [{"name": "v_head.summary.weight", "why": "never looked up: only base keys are iterated"}], target,
                    "file level, no transformers involved: inv_freq = stored base value + 0, exact",
                    saves="pytorch_model-{i}.bin (0-based) + index {weight_map, metadata.total_size}; config and tokenizer from the delta"))

    expected = {
        "convention": "fastchat",
        "about": "FastChat v1.1 (Vicuna v1.1) fp16 additive delta.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "publisher": {
            "recover": "lm-sys/FastChat fastchat/model/apply_delta.py @ f4758176 (HEAD 0e6d3e4b): apply_delta lines 125-144; apply_delta_low_cpu_mem lines 70-122",
            "make": "lm-sys/FastChat fastchat/model/make_delta.py @ c1985314 lines 14-37",
        },
        "delta": delta_section(d, delta, mss),
        "target": {"about": "the fine-tuned model the publisher held (not published)", "tensors": [describe(t, k) for k, t in target.items()]},
        "runs": runs,
        "facts": {
            "vocab": {"base_rows": 512, "delta_rows": 512},
            "delta_only": ["v_head.summary.weight"],
            "inv_freq_in_delta": "zero fp32 buffers (target - base under transformers 4.28)",
            "low_cpu_mem_with_safetensors_base": "glob('pytorch_model-*.bin') finds nothing: an empty output (index with no weights), no error",
        },
        "detection": detection(files, base_bin, lambda k: k == "v_head.summary.weight"),
    }
    write_json(os.path.join(OUT, "fastchat", "expected.json"), expected)


def fastchat_v0(m, base_bin, base_st):
    """FastChat v0 (Vicuna v0, StableVicuna): zero pad row."""
    g = torch.Generator().manual_seed(1002)
    target = collections.OrderedDict()
    for k in m.keys(V428):
        if is_inv_freq(k):
            target[k] = m.inv_freq.clone()
            continue
        t = finetune(base_bin[k], g)
        if k in (EMBED, HEAD):  # [PAD] trained from a mean-initialised row
            b = base_bin[k].float()
            pad = b.mean(dim=0, keepdim=True) + NOISE * rms(b) * torch.randn(1, m.hidden, generator=g)
            t = torch.cat([t, pad])
        t = t.to(torch.float16)
        if k in (EMBED, HEAD):
            t[-1, 5] = -0.0
            t[-1, 40] = -0.0
        target[k] = t
    # make_delta at v0.1.10: base resized to 513 rows, the new row zeroed, target -= base
    delta = collections.OrderedDict()
    for k, t in target.items():
        b = base_bin[k]
        if k in (EMBED, HEAD):
            b = torch.cat([b, torch.zeros(1, m.hidden, dtype=b.dtype)])
        d = t.clone()
        d -= b
        delta[k] = d
    neg = {k: neg_zero_positions(delta[k][-1]) for k in (EMBED, HEAD)}
    assert all(len(v) >= 2 for v in neg.values())

    mss = "120KB"
    d, files = publish("fastchat-v0", delta, mss,
                       llama_config(m, 513, "float16", "4.28.0.dev0", "vicuna-tiny-v0-fp16", max_sequence_length=2048),
                       dict(special={"bos_token": "</s>", "eos_token": "</s>", "pad_token": "[PAD]", "unk_token": "</s>"},
                            added={"[PAD]": 512}))

    runs = []
    script = "lm-sys/FastChat fastchat/model/apply_delta.py @ v0.1.10"
    for version, base_name, base_files in [(V428, "base/bin", base_bin), (V428, "base/safetensors", base_st), (V431, "base/safetensors", base_st)]:
        b, _ = m.load(base_files, version, torch.float16)
        dl, dropped = m.load(files, version, torch.float16)
        # resize_token_embeddings(len(tokenizer) = 513): old rows kept; new row
        # random, then set to 0 (lines 27-31)
        for k in (EMBED, HEAD):
            grown = torch.empty(513, m.hidden, dtype=b[k].dtype).normal_(0, 0.02, generator=g)
            grown[:512] = b[k]
            grown[-1:] = 0
            b[k] = grown
        out, rules = collections.OrderedDict(), {}
        for name, p in b.items():
            assert name in dl
            p = p.clone()
            p += dl[name]
            out[name] = p
            rules[name] = "grow-zero-add" if name in (EMBED, HEAD) else "add"
        for k in (EMBED, HEAD):
            assert neg_zero_positions(out[k][-1]) == [] and torch.equal(out[k][-1].abs(), dl[k][-1].abs())
        notes = None
        if version == V428:
            notes = ("inv_freq = the base model's buffer + 0: " +
                     ("the stored fp32 value rounded through fp16 by the loader (from_pretrained casts it to torch_dtype, "
                      "accelerate 0.18 casts it back to the fp32 buffer's dtype)" if base_name == "base/bin"
                      else "computed at init (the base files have none), exact fp32"))
        runs.append(run(f"{version}/{base_name}", script, version, base_name,
                        "base model state dict after resizing embed_tokens and lm_head to 513 rows with a zero row", out, rules,
                        [{"name": k, "why": "not a key of the model: dropped by from_pretrained"} for k in dropped],
                        target, notes, saves="base model (its config with vocab_size 513), delta tokenizer"))

    expected = {
        "convention": "fastchat-v0",
        "about": "FastChat v0 (Vicuna v0 / StableVicuna) fp16 delta with a [PAD] row; the base is grown by a zero row before the add.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "publisher": {
            "recover": "lm-sys/FastChat fastchat/model/apply_delta.py @ v0.1.10 (f34f28ce) lines 14-40",
            "make": "lm-sys/FastChat fastchat/model/make_delta.py @ v0.1.10 lines 14-44",
        },
        "delta": delta_section(d, delta, mss),
        "target": {"about": "the fine-tuned model the publisher held (not published)", "tensors": [describe(t, k) for k, t in target.items()]},
        "runs": runs,
        "facts": {
            "vocab": {"base_rows": 512, "delta_rows": 513, "pad_token": "[PAD]", "pad_id": 512},
            "grown": {EMBED: {"new_rows": [512], "fill": "+0.0"}, HEAD: {"new_rows": [512], "fill": "+0.0"}},
            "stored_absolute": {"rows": {EMBED: [512], HEAD: [512]}, "why": "delta row = target row - 0"},
            "negative_zero": {"delta_row_512_positions": neg,
                              "recovered": "+0.0 at those positions (+0.0 + -0.0 = +0.0 in IEEE RNE); every other bit of row 512 equals the delta's"},
        },
        "detection": detection(files, base_bin, lambda k: False),
    }
    write_json(os.path.join(OUT, "fastchat-v0", "expected.json"), expected)


def smart_resize(weight):
    """train.py smart_tokenizer_and_embedding_resize for one new token, on an fp32
    weight: resize (old rows copied), then the new row = mean(dim=0) of the old rows."""
    grown = torch.zeros(weight.shape[0] + 1, weight.shape[1], dtype=weight.dtype)
    grown[:-1] = weight
    avg = grown[:-1].mean(dim=0, keepdim=True)
    grown[-1:] = avg
    return grown


def alpaca(m, base_bin, base_st):
    g = torch.Generator().manual_seed(1003)
    # the tuned model (fp32), trained from the raw model resized with a mean [PAD] row
    raw_resized = {k: smart_resize(base_bin[k].float()) for k in (EMBED, HEAD)}
    tuned = collections.OrderedDict()
    for k in m.keys(V428):
        if is_inv_freq(k):
            tuned[k] = m.inv_freq.clone()
        elif k in (EMBED, HEAD):
            tuned[k] = finetune(raw_resized[k], g)
        else:
            tuned[k] = finetune(base_bin[k], g)
    # make_diff: raw fp32 (+ smart resize), tuned -= raw in fp32 for every tuned key
    diff = collections.OrderedDict()
    for k, t in tuned.items():
        raw = raw_resized[k] if k in raw_resized else base_bin[k].float()
        d = t.clone()
        d.add_(-raw)
        diff[k] = d

    mss = "250KB"
    d, files = publish("alpaca", diff, mss,
                       llama_config(m, 513, "float32", "4.28.0.dev0", "alpaca-tiny-sft"),
                       dict(special={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "[PAD]", "unk_token": "<unk>"},
                            added={"[PAD]": 512}, model_max_length=512, padding_side="right"))

    runs, sums, pad_rows = [], {}, {}
    script = "tatsu-lab/stanford_alpaca weight_diff.py recover() @ 7a95b21 (= HEAD 761dc5b)"
    for version, base_name, base_files in [(V428, "base/bin", base_bin), (V428, "base/safetensors", base_st), (V431, "base/safetensors", base_st)]:
        raw, _ = m.load(base_files, version, torch.float32)
        rec, dropped = m.load(files, version, torch.float32)
        for k in (EMBED, HEAD):  # lines 112-117
            raw[k] = smart_resize(raw[k])
            pad_rows[k] = raw[k][-1].clone()
        rules = {}
        for key in rec:  # lines 122-125
            rec[key].add_(raw[key])
            rules[key] = "grow-mean-add" if key in (EMBED, HEAD) else "add"
        allsum = 0  # line 129: Python sum() from int 0, fp32 tensor adds in state-dict order
        per_tensor = collections.OrderedDict()
        for key in rec:
            s = rec[key].sum()
            per_tensor[key] = {"value": s.item(), "f32_bits": f32_bits(s.item())}
            allsum = allsum + s
        assert allsum.dtype == torch.float32
        sums[f"{version}/{base_name}"] = {"value": allsum.item(), "f32_bits": f32_bits(allsum.item()), "order": list(rec),
                                          "per_tensor_sums": per_tensor}
        runs.append(run(f"{version}/{base_name}", script, version, base_name,
                        "diff model state dict (fp32), raw model resized with mean [PAD] rows", rec, rules,
                        [{"name": k, "why": "not a key of the model: dropped by from_pretrained"} for k in dropped],
                        tuned, "fp32 loads: inv_freq keeps its exact fp32 value whether stored or computed" if version == V428 else None,
                        saves="diff model (config from the diff), diff tokenizer; only with --path_tuned"))
    assert sums[f"{V428}/base/bin"]["value"] == sums[f"{V428}/base/safetensors"]["value"]

    # the same sum without inv_freq, still in 4.28 order (what a tool that drops
    # the buffers but keeps 4.28's order would get)
    s428 = sums[f"{V428}/base/bin"]
    acc = torch.tensor(0.0)
    first = True
    for key, v in s428["per_tensor_sums"].items():
        if is_inv_freq(key):
            continue
        t = torch.tensor(v["value"], dtype=torch.float32)
        acc = t.clone() if first else acc + t
        first = False
    inv_total = sum(v["value"] for k, v in s428["per_tensor_sums"].items() if is_inv_freq(k))

    # mean rows: torch's fp32 reduction vs a float64 mean rounded once
    mean_facts = {}
    for k in (EMBED, HEAD):
        exact = base_bin[k].double().mean(dim=0).float()
        mean_facts[k] = {"f32_le_hex": tensor_bytes(pad_rows[k]).hex(), "sha256": sha(pad_rows[k]),
                         "elements_differing_from_float64_mean_rounded_to_f32": int((exact != pad_rows[k]).sum())}

    expected = {
        "convention": "alpaca",
        "about": "Stanford Alpaca weight_diff.py: fp32 diff, [PAD] row; raw upcast to fp32 and grown by a mean row, fp32 add, integrity sum.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "publisher": {
            "recover": "tatsu-lab/stanford_alpaca weight_diff.py @ 7a95b21 (HEAD 761dc5b) recover() lines 70-150",
            "make": "tatsu-lab/stanford_alpaca weight_diff.py make_diff() lines 24-67",
            "resize": "tatsu-lab/stanford_alpaca train.py @ 3783d18 smart_tokenizer_and_embedding_resize() lines 65-85",
        },
        "delta": delta_section(d, diff, mss),
        "target": {"about": "the tuned model the publisher held (fp32, not published)", "tensors": [describe(t, k) for k, t in tuned.items()]},
        "runs": runs,
        "facts": {
            "vocab": {"base_rows": 512, "diff_rows": 513, "pad_token": "[PAD]", "pad_id": 512},
            "grown": {k: {"new_rows": [512], "fill": "mean(dim=0) of rows 0..511 of the fp32 raw tensor (torch CPU)", **mean_facts[k]}
                      for k in (EMBED, HEAD)},
            "integrity": {
                "about": "sum(state_dict[k].sum() for k in state_dict) over the recovered model, Python sum from int 0, "
                         "each step an fp32 tensor add, in state-dict order; the check is allclose(sum, constant, atol=1e-2, rtol=0). "
                         "These values are this fixture's 'published constant' (upstream's for alpaca-7b is 50637.1836).",
                "atol": 1e-2,
                "rtol": 0,
                "with_inv_freq": {"run": f"{V428}/base/bin", **{k: v for k, v in s428.items()}},
                "without_inv_freq": {"run": f"{V431}/base/safetensors", **sums[f"{V431}/base/safetensors"]},
                "without_inv_freq_in_4_28_order": {"value": acc.item(), "f32_bits": f32_bits(acc.item()),
                                                   "about": "4.28 order with the inv_freq terms skipped; no real run does this"},
                "inv_freq_terms_total": inv_total,
            },
        },
        "detection": detection(files, base_bin, lambda k: False),
    }
    write_json(os.path.join(OUT, "alpaca", "expected.json"), expected)


def llava(m, base_bin, base_st):
    g = torch.Generator().manual_seed(1004)
    mm_hidden = 128
    target = collections.OrderedDict()
    for k in m.keys(V428, mm_projector=True):
        if is_inv_freq(k):
            target[k] = m.inv_freq.clone()
        elif k in MM:
            shape = (m.hidden, mm_hidden) if k.endswith("weight") else (m.hidden,)
            target[k] = (0.02 * torch.randn(shape, generator=g)).to(torch.float16)
        elif k in (EMBED, HEAD):
            b = base_bin[k].float()
            new = b.mean(dim=0, keepdim=True) + 0.5 * rms(b) * torch.randn(3, m.hidden, generator=g)
            t = torch.cat([finetune(base_bin[k], g), new]).to(torch.float16)
            t[513, 7] = -0.0
            target[k] = t
        else:
            target[k] = finetune(base_bin[k], g).to(torch.float16)
    # make_delta: for target keys; mm_projector skipped (absolute); same shape
    # -> -= base; embed/lm_head -> [:b0, :b1] -= base
    delta = collections.OrderedDict()
    for k, t in target.items():
        d = t.clone()
        if k in MM:
            pass
        elif d.shape == base_bin[k].shape:
            d -= base_bin[k]
        else:
            b = base_bin[k]
            d[: b.shape[0], : b.shape[1]] -= b
        delta[k] = d
    neg = {k: neg_zero_positions(delta[k][512:]) for k in (EMBED, HEAD)}

    mss = "120KB"
    config = llama_config(m, 515, "float16", "4.28.0.dev0", "LLaVA-tiny-v1", architectures=["LlavaLlamaForCausalLM"],
                          model_type="llava", bos_token_id=0, eos_token_id=1, pad_token_id=-1, max_sequence_length=2048,
                          mm_hidden_size=mm_hidden, mm_use_im_start_end=True, mm_vision_select_layer=-2,
                          mm_vision_tower="openai/clip-vit-large-patch14", tune_mm_mlp_adapter=False, use_cache=False,
                          use_mm_proj=True)
    d, files = publish("llava", delta, mss, config,
                       dict(special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
                            added={"<im_end>": 514, "<im_patch>": 512, "<im_start>": 513}, padding_side="right"))

    runs = []
    script = "haotian-liu/LLaVA llava/model/apply_delta.py @ 6e38fbf (= HEAD c121f04)"
    for version, base_name, base_files in [(V428, "base/bin", base_bin), (V428, "base/safetensors", base_st), (V431, "base/safetensors", base_st)]:
        b, _ = m.load(base_files, version, torch.float16)
        dl, dropped = m.load(files, version, torch.float16, mm_projector=True)
        rules = {}
        for name, param in dl.items():  # lines 23-33
            if name not in b:
                assert name in MM
                rules[name] = "copy"
                continue
            if param.shape == b[name].shape:
                param += b[name]
                rules[name] = "add"
            else:
                assert name in (EMBED, HEAD)
                bp = b[name]
                param[: bp.shape[0], : bp.shape[1]] += bp
                rules[name] = "add-rows"  # rows [:512] base + delta, rows 512.. the delta's as stored
        for k in (EMBED, HEAD):
            assert neg_zero_positions(dl[k][512:]) == neg[k]
        notes = None
        if version == V428:
            notes = ("inv_freq = 0 + the base model's buffer: " +
                     ("the stored fp32 value rounded through fp16 by the loader (from_pretrained casts it to torch_dtype, "
                      "accelerate 0.18 casts it back to the fp32 buffer's dtype)" if base_name == "base/bin"
                      else "computed at init (the base files have none), exact fp32"))
        runs.append(run(f"{version}/{base_name}", script, version, base_name, "delta model state dict (LlavaLlamaForCausalLM)",
                        dl, rules, [{"name": k, "why": "not a key of the model: dropped by from_pretrained"} for k in dropped],
                        target, notes, saves="delta model (config from the delta), delta tokenizer"))

    expected = {
        "convention": "llava",
        "about": "LLaVA v1-1 fp16 delta: vocabulary base+3 with absolute extra rows, mm_projector only in the delta (copied).",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "publisher": {
            "recover": "haotian-liu/LLaVA llava/model/apply_delta.py @ 6e38fbf (HEAD c121f04) lines 13-37",
            "make": "haotian-liu/LLaVA llava/model/make_delta.py @ 6e38fbf lines 13-41",
            "model": "haotian-liu/LLaVA llava/model/llava.py @ 6e38fbf lines 40-52",
        },
        "delta": delta_section(d, delta, mss),
        "target": {"about": "the fine-tuned model the publisher held (not published)", "tensors": [describe(t, k) for k, t in target.items()]},
        "runs": runs,
        "facts": {
            "vocab": {"base_rows": 512, "delta_rows": 515, "added_tokens": {"<im_patch>": 512, "<im_start>": 513, "<im_end>": 514}},
            "stored_absolute": {"rows": {EMBED: [512, 513, 514], HEAD: [512, 513, 514]}, "tensors": MM},
            "delta_only": MM,
            "mm_projector": {"weight_shape": [m.hidden, mm_hidden], "bias_shape": [m.hidden], "mm_hidden_size": mm_hidden},
            "negative_zero": {"positions_in_rows_512_and_up": neg, "recovered": "kept: rows 512.. are not touched"},
        },
        "detection": detection(files, base_bin, lambda k: k in MM),
    }
    write_json(os.path.join(OUT, "llava", "expected.json"), expected)


ZIYA_ABSOLUTE = ("embed_tokens", "lm_head.weight", "self_attn.rotary_emb.inv_freq")


def ziya_absolute(name):
    return any(s in name for s in ZIYA_ABSOLUTE)


def ziya(m, base_bin, base_st):
    g = torch.Generator().manual_seed(1005)
    vocab = 640
    target = collections.OrderedDict()
    for k in m.keys(V428):
        if is_inv_freq(k):
            # make_delta loads the target with torch_dtype=float16 under
            # transformers 4.28-4.30: a stored inv_freq comes back through fp16
            target[k] = m.inv_freq.to(torch.float16).to(torch.float32)
        elif k in (EMBED, HEAD):
            # continued pre-training with a larger vocabulary moves the old
            # rows further; the new rows are new tokens
            old = finetune(base_bin[k], g, 0.05)
            new = rms(base_bin[k]) * torch.randn(vocab - 512, m.hidden, generator=g)
            target[k] = torch.cat([old, new]).to(torch.float16)
        else:
            target[k] = finetune(base_bin[k], g).to(torch.float16)
    delta = collections.OrderedDict()
    for k, t in target.items():  # make_delta lines 31-39
        d = t.clone()
        if not ziya_absolute(k):
            d -= base_bin[k]
        delta[k] = d

    mss = "90KB"
    d, files = publish("ziya", delta, mss,
                       llama_config(m, vocab, "float16", "4.29.0.dev0", "ziya-tiny-v1"),
                       dict(special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    shards = sorted(f for f in os.listdir(d) if f.endswith(".bin"))
    assert len(shards) >= 4

    runs = []
    script = "IDEA-CCNL/Fengshenbang-LM fengshen/utils/apply_delta.py apply_delta() @ dfe4f4c (= HEAD c8fb7b8)"
    for version, base_name, base_files in [(V428, "base/bin", base_bin), (V428, "base/safetensors", base_st), (V431, "base/safetensors", base_st)]:
        dl, dropped = m.load(files, version, torch.float16)
        b, _ = m.load(base_files, version, torch.float16)
        rules = {}
        for name, param in dl.items():  # lines 142-148
            assert name in b
            if ziya_absolute(name):
                rules[name] = "copy"
                continue
            param += b[name]
            rules[name] = "add"
        runs.append(run(f"{version}/{base_name}", script, version, base_name, "delta model state dict", dl, rules,
                        [{"name": k, "why": "not a key of the model: dropped by from_pretrained"} for k in dropped], target,
                        "inv_freq = the delta's stored value (already fp16-representable, so the loader's fp16 round trip keeps it)"
                        if version == V428 else None, saves="delta model (config from the delta), delta tokenizer"))

    # --low-cpu-mem: base files' keys; the three kinds replaced by the delta's
    out, rules, total_size = collections.OrderedDict(), {}, 0
    for name, param in base_bin.items():
        if ziya_absolute(name):
            out[name] = files[name].clone()
            rules[name] = "copy"
        else:
            p = param.clone()
            p += files[name]
            out[name] = p
            rules[name] = "add"
        total_size += param.numel() * param.element_size()  # line 113: the base tensor
    true_size = sum(t.numel() * t.element_size() for t in out.values())
    runs.append(run("low-cpu-mem/base/bin", "IDEA-CCNL/Fengshenbang-LM fengshen/utils/apply_delta.py apply_delta_low_cpu_mem() @ dfe4f4c",
                    None, "base/bin", "base files' keys (glob order of the 4 GiB re-split parts; listed sorted)", out, rules, [], target,
                    "file level: embed_tokens/lm_head/inv_freq replaced by the delta's stored tensors, the rest base += delta in stored dtypes",
                    saves="pytorch_model-{i}.bin (0-based) + index; config and tokenizer from the delta"))

    expected = {
        "convention": "ziya",
        "about": "Ziya (Fengshenbang) fp16 delta: embed_tokens, lm_head, inv_freq stored absolute and copied; the rest fp16 add; many shards.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "publisher": {
            "recover": "IDEA-CCNL/Fengshenbang-LM fengshen/utils/apply_delta.py @ dfe4f4c (HEAD c8fb7b8): apply_delta lines 129-154, apply_delta_low_cpu_mem lines 72-126",
            "make": "IDEA-CCNL/Fengshenbang-LM fengshen/utils/make_delta.py @ dfe4f4c lines 16-47 (max_shard_size '1GB')",
        },
        "delta": delta_section(d, delta, mss),
        "target": {"about": "the fine-tuned model the publisher held (not published)", "tensors": [describe(t, k) for k, t in target.items()]},
        "runs": runs,
        "facts": {
            "vocab": {"base_rows": 512, "delta_rows": vocab},
            "stored_absolute": {"rule": "name contains 'embed_tokens', 'lm_head.weight' or 'self_attn.rotary_emb.inv_freq'",
                                "tensors": [k for k in delta if ziya_absolute(k)]},
            "shards": len(shards),
            "low_cpu_mem_index_total_size": {"written": total_size, "true": true_size,
                                             "why": "line 113 adds the size of the BASE tensor, before it is replaced by the larger absolute one"},
        },
        "detection": detection(files, base_bin, ziya_absolute),
    }
    write_json(os.path.join(OUT, "ziya", "expected.json"), expected)


def not_a_delta(m, base_bin, base_st):
    g = torch.Generator().manual_seed(1006)
    full = collections.OrderedDict()
    for k in m.keys(V428):
        if is_inv_freq(k):
            full[k] = m.inv_freq.clone()
            continue
        t = finetune(base_bin[k], g)
        # mixed storage: attention and MLP matrices and lm_head bf16, the rest fp32
        full[k] = t.to(torch.bfloat16) if ("_proj." in k or k == HEAD) else t
    mss = "150KB"
    d, files = publish("not-a-delta", full, mss,
                       llama_config(m, 512, "float32", "4.28.1", "wizard-vicuna-tiny-600-step", use_cache=False),
                       dict(special={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}))
    per_shard = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".bin"):
            dtypes = sorted({NAMES[t.dtype] for t in torch.load(os.path.join(d, f)).values()})
            assert dtypes == ["BF16", "F32"], (f, dtypes)
            per_shard[f] = dtypes
    expected = {
        "convention": "not-a-delta",
        "about": "Full fine-tuned weights published as if they were a delta (like the WizardVicunaLM 13B release): nothing to recover; "
                 "adding the base would count it twice.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "publisher": {"recover": None, "make": None},
        "delta": delta_section(d, full, mss),
        "runs": [],
        "facts": {
            "vocab": {"base_rows": 512, "delta_rows": 512},
            "config_torch_dtype": "float32",
            "shard_dtypes": per_shard,
            "why_not_a_delta": "every tensor has cosine ~1 and norm ratio ~1 against the base (a diff has cosine ~0 and ratio ~1e-3); "
                               "norm weights, ~1 in a model and ~0 in a diff, show it most clearly",
        },
        "detection": detection(files, base_bin, lambda k: True),
    }
    write_json(os.path.join(OUT, "not-a-delta", "expected.json"), expected)


def total_size(path):
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs)


def main():
    if not os.path.isdir("scripts"):
        sys.exit("run from the repository root")
    real = read_safetensors(os.path.join(REALDATA, "model.safetensors"))
    with open(os.path.join(REALDATA, "config.json")) as f:
        m = Model(json.load(f))
    torch.manual_seed(0)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    base_bin, base_st = make_base(real, m)
    write_base(m, base_bin, base_st)
    # what was written reads back as what was computed
    for directory, sd in (("bin", base_bin), ("safetensors", base_st)):
        loaded = load_dir(os.path.join(OUT, "base", directory))
        assert sorted(loaded) == sorted(sd) and all(sha(loaded[k]) == sha(sd[k]) for k in sd)
    base_bin = load_dir(os.path.join(OUT, "base", "bin"))
    base_st = load_dir(os.path.join(OUT, "base", "safetensors"))

    fastchat(m, base_bin, base_st)
    fastchat_v0(m, base_bin, base_st)
    alpaca(m, base_bin, base_st)
    llava(m, base_bin, base_st)
    ziya(m, base_bin, base_st)
    not_a_delta(m, base_bin, base_st)
    size = total_size(OUT)
    print(f"{OUT}: {size} bytes")
    assert size < 4 * 10**6


if __name__ == "__main__":
    main()
