#!/usr/bin/env python3
"""Writes test/fixtures/evidence/: what a publisher's files look like when they
were saved by another transformers generation or in another dtype than the
ones test/fixtures/conventions was made with, and what each publisher's script
leaves from them, computed with PyTorch (CPU) by emulating that script's
arithmetic on state dicts, as scripts/make-convention-fixtures.py does (its
helpers are reused; no transformers, no tokenizers needed).

Built from the committed fixtures in test/fixtures/conventions (the base and
the deltas), so it needs no ../shared/realdata. Deterministic. Run from the
repository root with torch (run with torch 1.13 on CPU):
    python3 scripts/make-evidence-fixtures.py

Publisher scripts read (repository, path, commit):
  lm-sys/FastChat fastchat/model/apply_delta.py at HEAD (0283a0bb) lines
      125-144: `from_pretrained(delta_path, torch_dtype=torch.float16)` and
      the same for the base, so a bfloat16 (or float32) delta or base is
      rounded to fp16 before `param.data += delta`; `base.save_pretrained`.
  lm-sys/FastChat tag v0.1.10 (f34f28ce) apply_delta.py lines 14-40: the same
      fp16 loads; base tokenizer gets [PAD], resize_token_embeddings (the
      config's vocab_size becomes 513), new rows zeroed; base.save_pretrained.
  tatsu-lab/stanford_alpaca weight_diff.py recover(): fp32 loads, smart resize
      with the mean row, `add_` over the diff's keys.

What transformers >= 4.34 saves for a tokenizer (tokenization_utils_base.py
save_pretrained, PreTrainedTokenizerFast._save_pretrained; 4.35.2 here):
  tokenizer_config.json  json.dumps(indent=2, sort_keys=True, ensure_ascii=False)
                         + "\\n", with "added_tokens_decoder": {id: AddedToken
                         state (content, lstrip, normalized, rstrip,
                         single_word, special)} for every added token, special
                         tokens as strings, tokenizer_class without "Fast".
  special_tokens_map.json  the same dumps; AddedToken objects without "special",
                         tokens added as strings stay strings.
  tokenizer.json         the tokenizers library's pretty JSON (2-space indent,
                         insertion order, no final newline): version, truncation,
                         padding, added_tokens [{id, content, single_word,
                         lstrip, rstrip, normalized, special}], normalizer,
                         pre_tokenizer, post_processor, decoder, model (here the
                         LlamaConverter layout, with a 512-piece byte-fallback
                         BPE vocabulary standing in for LLaMA's 32000).
  added_tokens.json      written only beside a slow tokenizer's files: a fast
                         tokenizer loaded from tokenizer.json alone
                         (can_save_slow_tokenizer False) saves none, so [PAD]
                         is recorded only in the three files above.

Fixtures:
  alpaca-4.35/     the side files of the Alpaca diff (conventions/alpaca/delta)
                   as transformers 4.35.2 saves them: config.json,
                   generation_config.json and the three tokenizer files, no
                   added_tokens.json. Tests put them beside the diff's shards.
  fastchat-v0-4.35/  the same for the FastChat v0 delta (conventions/fastchat-v0),
                   its special tokens as Vicuna v0 had them.
  fastchat-bf16/delta  a FastChat delta stored in bfloat16 (made from bf16
                   models: target.to(bf16) - base.to(bf16) in bf16; the target
                   is FastChat's fp16 recovery of conventions/fastchat), saved as
                   transformers >= 4.31 saves .bin shards (no inv_freq).
  fastchat-bf16/base   the conventions base in bfloat16, as a bf16 conversion
                   saves it (config torch_dtype bfloat16).
  expected.json    per run: the recovered tensors (state dict of transformers
                   >= 4.31) and what the config must say; also FastChat v0's
                   result for test/fixtures/legacy/bf16 (scripts/make-legacy-fixtures.py
                   made that delta's new row as v0's make_delta does).
"""
import collections
import importlib.util
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("conventions", os.path.join(HERE, "make-convention-fixtures.py"))
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)

CONV = os.path.join("test", "fixtures", "conventions")
OUT = os.path.join("test", "fixtures", "evidence")
GENERATOR = "scripts/make-evidence-fixtures.py"
LATER = "4.35.2"


def added_token_state(content, special=True, normalized=False):
    """tokenizers' AddedToken.__getstate__ (0.14/0.15), keys as json sort_keys leaves them."""
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False, "special": special}


def tokenizer_json(specials, added):
    """tokenizer.json as LlamaConverter (transformers 4.35) and tokenizers 0.15 write it.
    `specials`: [(id, token)] of the base vocabulary; `added`: [(id, token)] added later."""
    vocab = collections.OrderedDict([("<unk>", 0), ("<s>", 1), ("</s>", 2)])
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    merges = []
    for c in ["\u2581"] + list(letters):
        vocab[c] = len(vocab)
    pieces = [("\u2581", c) for c in letters] + [(a, b) for a in letters for b in letters]
    for a, b in pieces:
        if len(vocab) == 512:
            break
        vocab[a + b] = len(vocab)
        merges.append(f"{a} {b}")
    assert len(vocab) == 512
    entries = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
               for i, t in sorted(specials + added)]
    return collections.OrderedDict([
        ("version", "1.0"),
        ("truncation", None),
        ("padding", None),
        ("added_tokens", entries),
        ("normalizer", {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}),
        ("pre_tokenizer", None),
        ("post_processor", {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}),
        ("decoder", {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
        ("model", collections.OrderedDict([
            ("type", "BPE"), ("dropout", None), ("unk_token", "<unk>"), ("continuing_subword_prefix", None),
            ("end_of_word_suffix", None), ("fuse_unk", True), ("byte_fallback", True), ("vocab", vocab), ("merges", merges)])),
    ])


def write_later_tokenizer(directory, bos, eos, unk, pad, model_max_length):
    """A LlamaTokenizerFast that got `pad` from add_special_tokens({"pad_token": pad}), saved by 4.35."""
    base_specials = [(0, "<unk>"), (1, "<s>"), (2, "</s>")]
    added = [(512, pad)]
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(tokenizer_json(base_specials, added), indent=2, ensure_ascii=False))
    decoder = {i: added_token_state(t) for i, t in base_specials + added}
    C.write_json(os.path.join(directory, "tokenizer_config.json"), {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "legacy": False,
        "model_max_length": model_max_length,
        "pad_token": pad,
        "padding_side": "right",
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": unk,
        "use_default_system_prompt": False,
    })
    state = lambda t: {k: v for k, v in added_token_state(t).items() if k != "special"}
    C.write_json(os.path.join(directory, "special_tokens_map.json"),
                 {"bos_token": state(bos), "eos_token": state(eos), "pad_token": pad, "unk_token": state(unk)})


def later_config(published):
    """A config.json as 4.35.2's save_pretrained writes the same model's config."""
    with open(published) as f:
        c = json.load(f)
    c.update(attention_bias=False, pretraining_tp=1, rope_scaling=None, rope_theta=10000.0, transformers_version=LATER)
    c.pop("max_sequence_length", None)
    return c


def modern(sd):
    """The state dict transformers >= 4.31 holds: no rotary buffers, 4.31 order."""
    return collections.OrderedDict((k, v) for k, v in sd.items() if not C.is_inv_freq(k))


def order431(sd, m):
    keys = C.model_keys(C.V431, m.layers)
    assert sorted(keys) == sorted(sd), (sorted(set(keys) ^ set(sd)))
    return collections.OrderedDict((k, sd[k]) for k in keys)


def tensors(sd):
    return [C.describe(t, k) for k, t in sd.items()]


def fastchat_apply(base, delta, grow_zero=False):
    """FastChat apply_delta: both state dicts as from_pretrained(torch_dtype=float16) holds them, base += delta."""
    b = collections.OrderedDict((k, v.to(torch.float16) if v.is_floating_point() else v.clone()) for k, v in base.items())
    d = collections.OrderedDict((k, v.to(torch.float16) if v.is_floating_point() else v) for k, v in delta.items())
    if grow_zero:  # v0.1.10: resize_token_embeddings, new rows set to 0
        for k in (C.EMBED, C.HEAD):
            grown = torch.zeros(d[k].shape, dtype=b[k].dtype)
            grown[: b[k].shape[0]] = b[k]
            b[k] = grown
    out = collections.OrderedDict()
    for name, p in b.items():
        assert name in d
        p = p.clone()
        p += d[name]
        out[name] = p
    return out


def alpaca_apply(base, diff):
    """Alpaca recover(): fp32 loads, base grown by its mean row (embed and lm_head each), diff + base over the diff's keys."""
    b = collections.OrderedDict((k, v.float()) for k, v in base.items())
    for k in (C.EMBED, C.HEAD):
        if diff[k].shape[0] > b[k].shape[0]:
            mean = b[k].mean(dim=0, keepdim=True)
            b[k] = torch.cat([b[k], mean.expand(diff[k].shape[0] - b[k].shape[0], -1)])
    out = collections.OrderedDict()
    for name, d in diff.items():
        p = d.float().clone()
        p.add_(b[name])
        out[name] = p
    return out


def differing_fraction(a, b):
    """Elements whose values differ (compared as float64), over all elements."""
    n = sum(t.numel() for t in a.values())
    diff = sum(int((a[k].double() != b[k].double()).sum()) for k in a)
    return diff, n


def main():
    if not os.path.isdir("scripts"):
        sys.exit("run from the repository root")
    base_st = C.load_dir(os.path.join(CONV, "base", "safetensors"))
    with open(os.path.join(CONV, "base", "safetensors", "config.json")) as f:
        m = C.Model(json.load(f))
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    runs = []

    # --- Alpaca diff, side files saved by 4.35 --------------------------------
    d = os.path.join(OUT, "alpaca-4.35")
    os.makedirs(d)
    config = later_config(os.path.join(CONV, "alpaca", "delta", "config.json"))
    C.write_json(os.path.join(d, "config.json"), config)
    C.write_json(os.path.join(d, "generation_config.json"), C.generation_config(LATER))
    write_later_tokenizer(d, "<s>", "</s>", "<unk>", "[PAD]", 512)
    diff = modern(C.load_dir(os.path.join(CONV, "alpaca", "delta")))
    out = order431(alpaca_apply(base_st, diff), m)
    runs.append({"id": "alpaca-4.35", "base": "conventions/base/safetensors",
                 "delta": "conventions/alpaca/delta shards + alpaca-4.35 side files",
                 "script": "tatsu-lab/stanford_alpaca weight_diff.py recover()", "convention": "alpaca",
                 "tensors": tensors(out), "config": {"from": "delta", "vocab_size": 513, "torch_dtype": "float32"}})

    # --- FastChat v0 delta, side files saved by 4.35 ----------------------------
    d = os.path.join(OUT, "fastchat-v0-4.35")
    os.makedirs(d)
    config = later_config(os.path.join(CONV, "fastchat-v0", "delta", "config.json"))
    C.write_json(os.path.join(d, "config.json"), config)
    C.write_json(os.path.join(d, "generation_config.json"), C.generation_config(LATER))
    write_later_tokenizer(d, "</s>", "</s>", "</s>", "[PAD]", 2048)
    v0 = C.load_dir(os.path.join(CONV, "fastchat-v0", "delta"))
    out = order431(modern(fastchat_apply(base_st, v0, grow_zero=True)), m)
    runs.append({"id": "fastchat-v0-4.35", "base": "conventions/base/safetensors",
                 "delta": "conventions/fastchat-v0/delta shards, with or without its own side files",
                 "script": "lm-sys/FastChat apply_delta.py @ v0.1.10", "convention": "fastchat-v0",
                 "tensors": tensors(out), "config": {"from": "base", "vocab_size": 513, "torch_dtype": "float16"}})

    # --- FastChat delta in bfloat16; a bfloat16 base ---------------------------
    fc = C.load_dir(os.path.join(CONV, "fastchat", "delta"))
    fc_modern = collections.OrderedDict((k, v) for k, v in modern(fc).items() if k in base_st)
    target = fastchat_apply(base_st, fc_modern)  # what FastChat recovers: the fine-tuned model, fp16
    base_bf16 = collections.OrderedDict((k, v.to(torch.bfloat16)) for k, v in base_st.items())
    delta_bf16 = collections.OrderedDict()
    for k in C.model_keys(C.V431, m.layers):  # make_delta with bf16 loads under transformers >= 4.31
        t = target[k].to(torch.bfloat16)
        t -= base_bf16[k]
        delta_bf16[k] = t
    d = os.path.join(OUT, "fastchat-bf16", "delta")
    C.save_pretrained(d, delta_bf16, "120KB", "bin")
    C.write_model_files(d, C.llama_config(m, 512, "bfloat16", "4.31.0", "vicuna-tiny-v1.1-bf16"),
                        dict(special={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}))
    assert all(C.sha(v) == C.sha(delta_bf16[k]) for k, v in C.load_dir(d).items())
    b = os.path.join(OUT, "fastchat-bf16", "base")
    C.save_pretrained(b, base_bf16, "200KB", "safetensors")
    C.write_model_files(b, C.llama_config(m, 512, "bfloat16", LATER, attention_bias=False, pretraining_tp=1,
                                          rope_scaling=None, rope_theta=10000.0),
                        dict(special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))

    measured = {}
    for run_id, base_name, base_sd, delta_name, delta_sd in [
        ("fastchat-bf16-delta", "conventions/base/safetensors", base_st, "fastchat-bf16/delta", delta_bf16),
        ("fastchat-bf16-base", "fastchat-bf16/base", base_bf16, "conventions/fastchat/delta", fc_modern),
        ("fastchat-bf16-both", "fastchat-bf16/base", base_bf16, "fastchat-bf16/delta", delta_bf16),
    ]:
        out = order431(fastchat_apply(base_sd, delta_sd), m)
        runs.append({"id": run_id, "base": base_name, "delta": delta_name, "script": "lm-sys/FastChat apply_delta.py (HEAD)",
                     "convention": "fastchat", "tensors": tensors(out),
                     "config": {"from": "base", "vocab_size": 512, "torch_dtype": "float16"}})
        if delta_sd is delta_bf16:
            # What adding in the delta's own dtype (bf16) gives instead.
            naive = collections.OrderedDict()
            for k, v in delta_sd.items():
                t = v.clone()
                t += base_sd[k].to(torch.bfloat16)
                naive[k] = t
            diff, n = differing_fraction(naive, out)
            measured[run_id] = {"bf16_arithmetic_differs_from_fastchat": diff, "of": n, "percent": round(100 * diff / n, 2)}

    # --- test/fixtures/legacy/bf16: half precision, one row more, config vocab_size 513 ----
    # Its new row was made as FastChat v0 makes it (target - a zero row), so FastChat
    # v0's script recovers it: both loaded as fp16, the base grown by a zero row.
    legacy = os.path.join("test", "fixtures", "legacy", "bf16")
    out = fastchat_apply(C.load_dir(os.path.join(legacy, "base-bin")), C.load_dir(os.path.join(legacy, "delta-bin")), grow_zero=True)
    runs.append({"id": "legacy-bf16", "base": "legacy/bf16/base-bin", "delta": "legacy/bf16/delta-bin (or delta-safetensors)",
                 "script": "lm-sys/FastChat apply_delta.py @ v0.1.10", "convention": "fastchat-v0", "tensors": tensors(out),
                 "config": {"from": "delta (the base has none)", "vocab_size": 513, "torch_dtype": "float16"}})

    C.write_json(os.path.join(OUT, "expected.json"), {
        "about": "Later-saved side files and other dtypes for the published conventions; recovered tensors as transformers >= 4.31 holds them.",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "runs": runs,
        "measured": measured,
    })
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"{OUT}: {size} bytes; {json.dumps(measured)}")


if __name__ == "__main__":
    main()
