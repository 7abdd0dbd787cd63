#!/usr/bin/env python3
"""Writes byte-codec fixtures in test/fixtures/codecs/: the XOR payloads of
Open-Assistant and Pygmalion and the `.enc` files of point-alpaca/BELLE, made
from real torch.save checkpoints, so that a decoder can be checked byte for byte.

The publishers' scripts were read, not copied; this file re-implements their
semantics and checks each result against an independent closed-form rule.

Sources followed (repository, path, commit, lines)
--------------------------------------------------
* LAION-AI/Open-Assistant scripts/xor-codec/xor_codec.py
  - 9a1e8d63be3adf1bdd9efe12bfe990cbb384d7d8 (the 83-line copy hosted with the
    oasst-*-xor payloads): xor_uncompressed lines 8-22 (the block loop),
    xor_dir lines 56-68 (copy added_tokens.json first, then XOR every payload
    file with the same-named base file, skip a file on any exception),
    __main__ lines 70-83 (decode=True, compress=False by default).
  - c10beb52d9c5615c2f90cd685f183f3364c7c6fe (first version, 76 lines): the same
    block loop (lines 6-20); xor_dir lines 54-61 had no added_tokens.json copy
    and no try/except.
  - cf0ba2f0a0611e3dd04c366391f17b9e7e28de61 (as merged; unchanged to HEAD): the
    same code, reformatted (xor_uncompressed 10-27, xor_dir 70-82, main 85-100).
* pointnetwork/point-alpaca encrypt.py, 66fa185b1aacac05193c54b0c277b380062af31c
  (its only version; HEAD ca8611d1 has it unchanged): xor_bytes lines 5-6,
  chunk sizes 11-12, SHA-256 of the whole input 19-29, output name 36, raw
  digest header 40, the chunk loop 43-54.
* pointnetwork/point-alpaca decrypt.py, HEAD (last changed in 73e03f01): name
  parsing 49-50 and 64, digest header 60, the same chunk loop 73-81,
  verification 108-112. Its first version (66fa185) named the output
  name.split(".")[0]; 9ee0219e fixed that.
* LianjiaTech/BELLE models/decrypt.py, e6d787b03187b7c1f60f83333830d328a773f22f
  (HEAD of the file): point-alpaca's decrypt run in one process; lines 43-44,
  50, 60, 64, 73-84, 109-113 have the same semantics.
* Pygmalion/Metharme: their revised xor_codec.py ("don't XOR the JSON files") is
  hosted only with the model and was not readable. Fixture 2 follows the file
  lists and hashes of those releases: payloads in xor_encoded_files/, JSON files
  in plain text, .bin shards and tokenizer.model XORed as above, no
  added_tokens.json.

Fixtures
--------
1. xor/ (Open-Assistant oasst-*-xor)
   base/        a tiny LLaMA-shaped fp16 "HF conversion": 3 torch.save shards +
                pytorch_model.bin.index.json, config.json,
                generation_config.json, tokenizer_config.json,
                special_tokens_map.json, tokenizer.model (8192 random bytes,
                a stand-in) and tokenizer.json (base only, as on OA's card:
                no payload names it, so nothing is made from it).
   target/      the fine-tune as the publisher had it: same names, tensors moved
                by a fine-tune-like step, 8 more vocabulary rows (so shards 1
                and 3, config.json, tokenizer_config.json and
                special_tokens_map.json are longer than the base's), a
                generation_config.json shorter than the base's, tokenizer.model
                identical to the base's, plus added_tokens.json.
   payload/     xor_codec.py run as `--encode` without --compress: every target
                file XOR the same-named base file; added_tokens.json in plain
                text (copied first; its XOR fails because the base has none).
   wrong-base/  the base with pytorch_model-00002-of-00003.bin re-saved with its
                tensors in name order: the same tensors, other bytes, the same
                length. Decoding with it gives a wrong shard that only the
                checksums reveal.
   md5sums-base.txt, md5sums-output.txt, sha256sums-output.txt in md5sum and
   sha256sum format ("<hex>  <name>"), as OA's cards list them.
2. xor-plain-json/ (PygmalionAI pygmalion/metharme)
   base/, target/ a 2-shard fp16 model (7B-like layout) with tokenizer.json;
                target's tokenizer.model differs from and is longer than the base's.
   payload/xor_encoded_files/  .bin shards and tokenizer.model XORed as in 1;
                every *.json in plain text.
   sha256sums-output.txt, sha256sums-base.txt.
   wrong-base-value/  the base with one fp16 value of pytorch_model-00002-of-00002.bin
                changed, saved as the base was: decoded with it, the shard is a valid
                torch.save archive passing every CRC-32, with one wrong value.
3. enc/ (point-alpaca, BELLE-LLaMA-*-enc)
   key/consolidated.00.pth  123,457 random bytes standing in for Meta's file.
   plain/       the files the publisher encrypted (expected outputs): a tiny
                fp32 LLaMA in 3 torch.save shards (two longer than the key, so
                the key is tiled, one shorter), index, JSON files,
                tokenizer.model stand-in, training_args.bin (torch.save).
   enc/         encrypt.py's output for each: <name>.<sha256 hex>.enc.
   bad/flipped-byte/   one .enc with one body byte flipped (decrypt's
                "Checksums do not match").
   bad/name-mismatch/  a correct .enc renamed so the hex in its name is not the
                digest in its header (the publishers' decrypt does not look
                at the name's hex: it succeeds).
   md5sums-enc.txt, md5sums-plain.txt as in point-alpaca's README.
expected.json: sizes and digests of every file, what each payload file is
(xor or plain copy), wrong-base and bad-.enc outcomes, and key-stream vectors
(below) for large cases that a test regenerates instead of committing.

The XOR rule (xor_codec.py, compress=False)
-------------------------------------------
For a file of L bytes (the target when encoding, the payload when decoding)
and the same-named base file B of L_B bytes:
    out[i] = in[i] XOR (B[i] if i < L_B else 0)        for 0 <= i < L
The output is exactly L bytes: base bytes past L are ignored; where the base is
shorter, the payload holds the target's bytes in plain text. The 4096-byte
blocks do not change this (reads of a regular file are full until EOF; the loop
stops after the first block shorter than 4096, so an L that is a multiple of
4096 ends with an empty read and writes nothing more). Encoding and decoding
are the same function when compress=False: `--encode` alone changes nothing.
A payload file without a same-named base file raises and is skipped (no output
file; the exception is raised opening the base, before the output is opened).
added_tokens.json is copied from the input directory before the loop, so it
stays plain text when the base has none; a base that had one would XOR it.

The .enc key stream (encrypt.py, decrypt.py)
--------------------------------------------
C = 10 MiB = 10,485,760 bytes; K = key length (K > 0); P = plain length.
encrypt.py reads the plain file and the key file in lockstep: for each plain
chunk (C bytes, the last one shorter) it reads C bytes of key from where the
last key read stopped; if that read returns nothing, it seeks the key to 0 and
reads C bytes again. The chunk is XORed with that key chunk repeated (tiled)
to the chunk's length, then truncated. A short key read (the key's last
K mod C bytes) is used as it is, tiled on its own: it is not completed with
bytes from the key's start. So, with n = ceil(K / C) key segments
    S_s = key[s*C : min((s+1)*C, K)]       s = 0 .. n-1
(all C bytes long except the last, of r = K - (n-1)*C bytes, 1 <= r <= C),
plain chunk c (plain bytes c*C .. c*C + C - 1) uses segment s = c mod n, and
    enc_body[c*C + j] = plain[c*C + j] XOR key[s*C + (j mod |S_s|)]
Subtleties, all from the loop (encrypt.py lines 43-54):
* Every file starts the key at offset 0 (key_file.seek(0), line 33).
* K < C (n = 1): the key restarts at offset 0 at every 10 MiB plain chunk:
  key index = (i mod C) mod K, not i mod K (they differ after the first
  chunk unless K divides C).
* K a multiple of C: every segment is full and key index = i mod K.
* K mod C != 0 and K > C: the short last segment (r bytes) is tiled over a
  whole chunk (C bytes, or the plain's shorter last chunk); the next chunk
  starts again at key offset 0.
* The plain's last chunk, shorter than C, uses the first bytes of its tiled
  segment (truncated); the key position has moved by a full read, unused.
* P <= C: one chunk, key index = i mod K for every K (what every committed
  fixture here exercises: P < 10 MiB).
* P = 0: the .enc is the 32-byte digest of the empty file and nothing else.
  K = 0: encrypt.py divides by zero (len(key) in xor_bytes).
Worked example, K = 15 MiB (15,728,640) and P = 25 MiB (26,214,400):
n = 2, S_0 = key[0, 10 MiB), S_1 = key[10 MiB, 15 MiB) (5 MiB long).
    plain [0, 10 MiB)       XOR key [0, 10 MiB)
    plain [10 MiB, 15 MiB)  XOR key [10 MiB, 15 MiB)
    plain [15 MiB, 20 MiB)  XOR key [10 MiB, 15 MiB) again (S_1 tiled),
                            not key [0, 5 MiB)
    plain [20 MiB, 25 MiB)  XOR key [0, 5 MiB) (chunk 2 uses S_0, truncated)
So plain byte 15,728,640 takes key byte 10,485,760, and plain byte 20,971,520
takes key byte 0. With K = 3,000,017 (< C) and P = 2 C + 1,234,567: plain
[0, C) takes key[i mod K], plain byte C takes key byte 0 (not key[C mod K] =
key[1,485,709]), plain [C, 2C) takes key[(i - C) mod K], plain [2C, P) takes
key[(i - 2C) mod K].
The file: name = <plain name>.<lowercase sha256 hex of the plain>.enc; bytes =
the 32 raw digest bytes, then the P XORed bytes (decrypt reads the body in
C-byte chunks from offset 32, so chunk boundaries are body offsets). decrypt.py
takes the name's hex as name.split(".")[-2] only to cut len(hex) + 5
characters off the name; it compares sha256(decrypted) with the header, never
with the name, and on a mismatch prints "Checksums do not match" and exits 1
after having written the output.

Key-stream vectors (expected.json "keystream_vectors"): key and plain are
prefixes of stream(label) = SHA-256(label || j as 8-byte little-endian) for
j = 0, 1, 2, ... concatenated (labels "delta-weights codec key" and
"delta-weights codec plain", UTF-8). Each vector gives K, P, the sha256 of
the key, the plain, the whole .enc file and its name, and sample
(plain offset, key offset) pairs.

Deterministic: fixed seeds and SHA-256 streams; torch.save (1.13) writes zip
entries with a fixed 1980 timestamp and names them after the file, so reruns
give identical bytes (the script checks by saving twice).
Needs torch (apt-get install python3-torch).
Run from the repository root: python3 scripts/make-codec-fixtures.py
"""
import collections
import hashlib
import io
import json
import os
import shutil
import sys
import zipfile

import torch

OUT = os.path.join("test", "fixtures", "codecs")

XOR_BLOCK = 4096  # xor_codec.py block_size
ENC_CHUNK = 10 * 1024 * 1024  # encrypt.py chunk_size and key_chunk_size
ENC_KEY_SIZE = 123_457  # prime: not a multiple of anything convenient
SIZE_LIMIT = 3 * 1000 * 1000

KEY_LABEL = "delta-weights codec key"
PLAIN_LABEL = "delta-weights codec plain"


# --- deterministic bytes -----------------------------------------------------

def stream(label, n):
    """SHA-256 counter stream: easy to regenerate in any language."""
    prefix = label.encode()
    out = bytearray()
    j = 0
    while len(out) < n:
        out += hashlib.sha256(prefix + j.to_bytes(8, "little")).digest()
        j += 1
    return bytes(out[:n])


def xor(a, b):
    """Bytewise XOR of two equal-length byte strings."""
    assert len(a) == len(b)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def digests(data):
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def listing(directory):
    return sorted(n for n in os.listdir(directory) if os.path.isfile(os.path.join(directory, n)))


# --- a tiny LLaMA, saved the way transformers 4.28 save_pretrained saves -----

def llama(g, vocab, hidden, inter, layers, heads, dtype):
    """A LLaMA-shaped state dict with the persistent rotary inv_freq buffers
    (fp32) that transformers 4.28-4.30 checkpoints carry."""
    def w(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    head_dim = hidden // heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    sd = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = w(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{name}.weight"] = w(hidden, hidden)
        sd[p + "self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        sd[p + "mlp.gate_proj.weight"] = w(inter, hidden)
        sd[p + "mlp.down_proj.weight"] = w(hidden, inter)
        sd[p + "mlp.up_proj.weight"] = w(inter, hidden)
        sd[p + "input_layernorm.weight"] = (1 + torch.randn(hidden, generator=g) * 0.05).to(dtype)
        sd[p + "post_attention_layernorm.weight"] = (1 + torch.randn(hidden, generator=g) * 0.05).to(dtype)
    sd["model.norm.weight"] = (1 + torch.randn(hidden, generator=g) * 0.05).to(dtype)
    sd["lm_head.weight"] = w(vocab, hidden)
    return sd


def fine_tune(g, base, extra_rows):
    """Every weight moved by 1e-2 of its tensor's RMS; `extra_rows` new
    vocabulary rows in embed_tokens and lm_head; buffers untouched."""
    target = collections.OrderedDict()
    for name, b in base.items():
        if name.endswith("inv_freq"):
            target[name] = b.clone()
            continue
        b32 = b.to(torch.float32)
        t = b32 + 1e-2 * b32.pow(2).mean().sqrt() * torch.randn(b.shape, generator=g)
        if name in ("model.embed_tokens.weight", "lm_head.weight") and extra_rows:
            t = torch.cat([t, 0.02 * torch.randn(extra_rows, t.shape[1], generator=g)])
        target[name] = t.to(b.dtype)
    return target


def shard_checkpoint(sd, max_shard_size):
    """transformers 4.28 modeling_utils.shard_checkpoint: a new shard starts
    when the next tensor would tip the current one over the limit."""
    blocks, current, size = [], collections.OrderedDict(), 0
    for name, t in sd.items():
        n = t.numel() * t.element_size()
        if size + n > max_shard_size and current:
            blocks.append(current)
            current, size = collections.OrderedDict(), 0
        current[name] = t
        size += n
    blocks.append(current)
    return blocks


def save_pretrained(directory, sd, max_shard_size, shards):
    blocks = shard_checkpoint(sd, max_shard_size)
    assert len(blocks) == shards, f"{directory}: {len(blocks)} shards, wanted {shards}"
    weight_map = {}
    for i, block in enumerate(blocks):
        file = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        path = os.path.join(directory, file)
        os.makedirs(directory, exist_ok=True)
        torch.save({k: v.clone() for k, v in block.items()}, path)
        weight_map.update({k: file for k in block})
        loaded = torch.load(path)
        assert list(loaded) == list(block) and all(torch.equal(loaded[k], block[k]) for k in block)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    write_json(os.path.join(directory, "pytorch_model.bin.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})


def write_json(path, obj):
    """As transformers writes config.json and the index: indent 2, sorted keys, newline."""
    write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_json_line(path, obj):
    """As 4.28 tokenizers wrote their JSON files: one line, no newline."""
    write(path, json.dumps(obj, ensure_ascii=False).encode())


def llama_config(vocab, hidden, inter, layers, heads, dtype, extra=None):
    config = {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": inter,
        "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": heads,
        "num_hidden_layers": layers, "pad_token_id": 0, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "torch_dtype": dtype, "transformers_version": "4.28.0.dev0", "use_cache": True, "vocab_size": vocab,
    }
    config.update(extra or {})
    return config


# --- xor_codec.py, compress=False --------------------------------------------

def xor_uncompressed(data, base):
    """xor_codec.py xor_uncompressed on byte strings: read 4096-byte blocks of
    both, pad a short base block with zeros or cut a long one to the data
    block, XOR, stop after the first short data block."""
    fd, fb = io.BytesIO(data), io.BytesIO(base)
    out = bytearray()
    while True:
        a = fd.read(XOR_BLOCK)
        b = fb.read(XOR_BLOCK)
        if len(b) < len(a):
            b = b + bytes(len(a) - len(b))
        b = b[:len(a)]
        out += xor(a, b)
        if len(a) < XOR_BLOCK:
            break
    # The closed form the README states.
    padded = base[:len(data)] + bytes(max(0, len(data) - len(base)))
    assert bytes(out) == xor(data, padded)
    return bytes(out)


def oa_xor_dir(dst, src, base_dir):
    """xor_codec.py xor_dir(decode=..., compress=False): added_tokens.json is
    copied first; every file of `src` is XORed with the same-named base file;
    a file whose base is missing raises and is skipped. Returns the skipped names."""
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "added_tokens.json"), os.path.join(dst, "added_tokens.json"))
    skipped = []
    for name in listing(src):
        base_path = os.path.join(base_dir, name)
        if not os.path.isfile(base_path):
            skipped.append(name)
            continue
        write(os.path.join(dst, name), xor_uncompressed(read(os.path.join(src, name)), read(base_path)))
    return skipped


def plain_json_xor_dir(dst, src, base_dir):
    """Pygmalion's revised codec as its releases show it: *.json in plain
    text, every other file XORed with the same-named base file."""
    os.makedirs(dst, exist_ok=True)
    for name in listing(src):
        data = read(os.path.join(src, name))
        if name.endswith(".json"):
            write(os.path.join(dst, name), data)
        else:
            write(os.path.join(dst, name), xor_uncompressed(data, read(os.path.join(base_dir, name))))


def sums_file(path, directory, algorithm):
    lines = [f"{hashlib.new(algorithm, read(os.path.join(directory, n))).hexdigest()}  {n}\n" for n in listing(directory)]
    write(path, "".join(lines).encode())


# --- encrypt.py / decrypt.py -------------------------------------------------

def xor_tiled(data, key):
    """encrypt.py xor_bytes: the key repeated to the data's length, then cut."""
    tiled = (key * (len(data) // len(key) + 1))[:len(data)]
    return xor(data, tiled)


def keyed_body(data, key):
    """encrypt.py lines 43-54: plain and key read in lockstep in 10 MiB
    chunks; an empty key read rewinds the key to 0 and reads again."""
    fin, fkey = io.BytesIO(data), io.BytesIO(key)
    out = bytearray()
    while True:
        chunk = fin.read(ENC_CHUNK)
        if not chunk:
            break
        key_chunk = fkey.read(ENC_CHUNK)
        if not key_chunk:
            fkey.seek(0)
            key_chunk = fkey.read(ENC_CHUNK)
        out += xor_tiled(chunk, key_chunk)
    return bytes(out)


def key_index(i, k):
    """The closed form: which key byte XORs plain byte i."""
    n = -(-k // ENC_CHUNK)
    c, j = divmod(i, ENC_CHUNK)
    s = c % n
    seg = min(ENC_CHUNK, k - s * ENC_CHUNK)
    return s * ENC_CHUNK + j % seg


def check_keyed_body(data, key, body, samples):
    for i in samples:
        if i < len(data):
            assert body[i] == data[i] ^ key[key_index(i, len(key))], i


def encrypt(name, data, key):
    """encrypt.py: (file name, file bytes)."""
    digest = hashlib.sha256(data)
    return f"{name}.{digest.hexdigest()}.enc", digest.digest() + keyed_body(data, key)


def decrypt(enc_name, enc, key):
    """decrypt.py (HEAD) / BELLE: the output name, the bytes, and whether the
    header matched. The name's hex is used only for its length."""
    checksum_hex = enc_name.split(".")[-2]
    out_name = enc_name[:-len(checksum_hex) - 5]
    expected = enc[:32]
    plain = keyed_body(enc[32:], key)
    return out_name, plain, hashlib.sha256(plain).digest() == expected


# --- fixture 1: Open-Assistant XOR -------------------------------------------

OA_ADDED = ["<|prompter|>", "<|assistant|>", "<|system|>", "<|prefix_begin|>", "<|prefix_end|>"]


def make_xor():
    root = os.path.join(OUT, "xor")
    base_dir, target_dir, payload_dir = (os.path.join(root, d) for d in ("base", "target", "payload"))
    shape = dict(hidden=32, inter=86, layers=3, heads=4)
    g = torch.Generator().manual_seed(1)
    base = llama(g, vocab=256, dtype=torch.float16, **shape)
    target = fine_tune(g, base, extra_rows=8)  # 256 + 5 added tokens, padded to a multiple of 8

    # -- the base conversion
    save_pretrained(base_dir, base, max_shard_size=40_000, shards=3)
    write_json(os.path.join(base_dir, "config.json"), llama_config(256, dtype="float16", **shape))
    write_json(os.path.join(base_dir, "generation_config.json"), {
        "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "transformers_version": "4.28.0.dev0"})
    write_json_line(os.path.join(base_dir, "tokenizer_config.json"), {
        "bos_token": "", "eos_token": "", "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "LlamaTokenizer", "unk_token": ""})
    write_json_line(os.path.join(base_dir, "special_tokens_map.json"), {})
    tokenizer_model = stream("delta-weights xor tokenizer.model", 2 * XOR_BLOCK)  # a multiple of the block
    write(os.path.join(base_dir, "tokenizer.model"), tokenizer_model)
    write_json_line(os.path.join(base_dir, "tokenizer.json"), {
        "version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}}})

    # -- the publisher's fine-tune
    save_pretrained(target_dir, target, max_shard_size=40_000, shards=3)
    write_json(os.path.join(target_dir, "config.json"), llama_config(264, dtype="float16", extra={
        "_name_or_path": "tiny-llama-sft", "pad_token_id": -1}, **shape))
    write_json(os.path.join(target_dir, "generation_config.json"), {
        "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.28.1"})
    write_json_line(os.path.join(target_dir, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
        "eos_token": "</s>", "model_max_length": 2048, "pad_token": None, "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>"})
    write_json_line(os.path.join(target_dir, "special_tokens_map.json"), {
        "additional_special_tokens": OA_ADDED, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
        "sep_token": "<s>", "unk_token": "<unk>"})
    write(os.path.join(target_dir, "tokenizer.model"), tokenizer_model)
    write_json_line(os.path.join(target_dir, "added_tokens.json"), {t: 256 + i for i, t in enumerate(OA_ADDED)})

    # -- the payload: xor_codec.py <payload> <target> <base> --encode
    skipped = oa_xor_dir(payload_dir, target_dir, base_dir)
    assert skipped == ["added_tokens.json"], skipped  # the one exception OA's card expects

    # -- a base converted differently: shard 2 re-saved, tensors in name order
    wrong_dir = os.path.join(root, "wrong-base")
    shutil.copytree(base_dir, wrong_dir)
    wrong_shard = "pytorch_model-00002-of-00003.bin"
    tensors = torch.load(os.path.join(base_dir, wrong_shard))
    torch.save(collections.OrderedDict(sorted(tensors.items())), os.path.join(wrong_dir, wrong_shard))
    resaved = torch.load(os.path.join(wrong_dir, wrong_shard))
    assert all(torch.equal(resaved[k], tensors[k]) for k in tensors) and set(resaved) == set(tensors)
    assert read(os.path.join(wrong_dir, wrong_shard)) != read(os.path.join(base_dir, wrong_shard))
    assert len(read(os.path.join(wrong_dir, wrong_shard))) == len(read(os.path.join(base_dir, wrong_shard)))

    sums_file(os.path.join(root, "md5sums-base.txt"), base_dir, "md5")
    sums_file(os.path.join(root, "md5sums-output.txt"), target_dir, "md5")
    sums_file(os.path.join(root, "sha256sums-output.txt"), target_dir, "sha256")

    # -- checks: the payload decodes to the target; what each payload file looks like
    decoded = os.path.join(root, ".decoded")
    assert oa_xor_dir(decoded, payload_dir, base_dir) == ["added_tokens.json"]
    assert listing(decoded) == listing(target_dir)
    for name in listing(target_dir):
        assert read(os.path.join(decoded, name)) == read(os.path.join(target_dir, name)), name
    shutil.rmtree(decoded)
    payload = {n: read(os.path.join(payload_dir, n)) for n in listing(payload_dir)}
    assert payload["tokenizer.model"] == bytes(len(tokenizer_model))
    for n, data in payload.items():
        if n.endswith(".bin"):
            assert not data.startswith(b"PK\x03\x04"), n
        if n.endswith(".json") and n != "added_tokens.json":
            try:
                json.loads(data)
                raise AssertionError(f"{n} payload parses as JSON")
            except ValueError:
                pass
    json.loads(payload["added_tokens.json"])

    files = {}
    for name in sorted(set(listing(base_dir)) | set(listing(target_dir))):
        entry = {}
        for label, d in (("base", base_dir), ("target", target_dir), ("payload", payload_dir)):
            p = os.path.join(d, name)
            entry[label] = digests(read(p)) if os.path.isfile(p) else None
        if entry["payload"] is not None:
            entry["payload_is"] = "plain" if name == "added_tokens.json" else "xor"
            if entry["base"] is not None:
                entry["base_shorter_than_target"] = entry["base"]["size"] < entry["target"]["size"]
                entry["base_longer_than_target"] = entry["base"]["size"] > entry["target"]["size"]
        files[name] = entry
    assert any(e.get("base_shorter_than_target") for e in files.values())
    assert any(e.get("base_longer_than_target") for e in files.values())

    wrong_out = xor_uncompressed(payload[wrong_shard], read(os.path.join(wrong_dir, wrong_shard)))
    assert hashlib.sha256(wrong_out).hexdigest() != files[wrong_shard]["target"]["sha256"]
    return {
        "what": "Open-Assistant xor_codec.py, compress=False: payload = target XOR same-named base file",
        "files": files,
        "base_only": [n for n, e in files.items() if e["payload"] is None],
        "wrong_base": {
            "differs": [wrong_shard],
            "how": "re-saved with torch.save, tensors in name order: same tensors, other bytes, same length",
            "sha256": hashlib.sha256(read(os.path.join(wrong_dir, wrong_shard))).hexdigest(),
            "decoded_sha256": {wrong_shard: hashlib.sha256(wrong_out).hexdigest()},
        },
    }


# --- fixture 2: Pygmalion XOR, JSON in plain text ----------------------------

def make_xor_plain_json():
    root = os.path.join(OUT, "xor-plain-json")
    base_dir, target_dir = os.path.join(root, "base"), os.path.join(root, "target")
    payload_dir = os.path.join(root, "payload", "xor_encoded_files")
    shape = dict(hidden=32, inter=86, layers=2, heads=4)
    g = torch.Generator().manual_seed(2)
    base = llama(g, vocab=256, dtype=torch.float16, **shape)
    target = fine_tune(g, base, extra_rows=0)

    tokenizer_json = {"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}}}
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    for directory, sd, extra, tok in ((base_dir, base, None, "base"), (target_dir, target, {"_name_or_path": "tiny-pygmalion"}, "target")):
        save_pretrained(directory, sd, max_shard_size=50_000, shards=2)
        write_json(os.path.join(directory, "config.json"), llama_config(256, dtype="float16", extra=extra, **shape))
        write_json(os.path.join(directory, "generation_config.json"), {
            "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "transformers_version": "4.28.0.dev0" if tok == "base" else "4.28.1"})
        write_json_line(os.path.join(directory, "special_tokens_map.json"), special)
        write_json_line(os.path.join(directory, "tokenizer_config.json"), dict(
            special, model_max_length=1000000000000000019884624838656 if tok == "base" else 2048,
            tokenizer_class="LlamaTokenizer"))
        write_json_line(os.path.join(directory, "tokenizer.json"), tokenizer_json)
    write(os.path.join(base_dir, "tokenizer.model"), stream("delta-weights pygmalion base tokenizer.model", 6000))
    write(os.path.join(target_dir, "tokenizer.model"), stream("delta-weights pygmalion target tokenizer.model", 7001))

    plain_json_xor_dir(payload_dir, target_dir, base_dir)
    sums_file(os.path.join(root, "sha256sums-output.txt"), target_dir, "sha256")
    sums_file(os.path.join(root, "sha256sums-base.txt"), base_dir, "sha256")

    decoded = os.path.join(root, ".decoded")
    plain_json_xor_dir(decoded, payload_dir, base_dir)
    for name in listing(target_dir):
        assert read(os.path.join(decoded, name)) == read(os.path.join(target_dir, name)), name
    shutil.rmtree(decoded)

    files = {}
    for name in sorted(set(listing(base_dir)) | set(listing(target_dir))):
        entry = {label: digests(read(os.path.join(d, name))) if os.path.isfile(os.path.join(d, name)) else None
                 for label, d in (("base", base_dir), ("target", target_dir), ("payload", payload_dir))}
        entry["payload_is"] = "plain" if name.endswith(".json") else "xor"
        if entry["payload_is"] == "plain":
            json.loads(read(os.path.join(payload_dir, name)))
        else:
            assert not read(os.path.join(payload_dir, name)).startswith(b"PK\x03\x04")
        files[name] = entry
    assert files["tokenizer.model"]["base"]["size"] < files["tokenizer.model"]["target"]["size"]
    return {"what": "Pygmalion/Metharme: xor_encoded_files/, *.json plain, other files XOR the same-named base file",
            "files": files,
            "wrong_base_value": make_wrong_base_value(root, base_dir, target_dir, payload_dir, "pytorch_model-00002-of-00002.bin")}


def make_wrong_base_value(root, base_dir, target_dir, payload_dir, shard):
    """wrong-base-value/: the base with one fp16 value of `shard` changed, saved
    as save_pretrained saves it. Base and target shards have the same layout
    (same length, same members), so the payload decoded with this base is a
    valid torch.save archive whose every member passes its CRC-32 (CRC-32 is
    linear over XOR), holding one wrong value: only a published digest can tell."""
    value_dir = os.path.join(root, "wrong-base-value")
    shutil.copytree(base_dir, value_dir)
    tensors = torch.load(os.path.join(base_dir, shard))
    changed_name = next(iter(tensors))
    changed = {k: v.clone() for k, v in tensors.items()}
    changed[changed_name].view(-1)[0] += 1
    torch.save(changed, os.path.join(value_dir, shard))  # as save_pretrained above: same name, same layout
    base_bytes, value_bytes = read(os.path.join(base_dir, shard)), read(os.path.join(value_dir, shard))
    assert len(value_bytes) == len(base_bytes)
    # the element's 2 bytes and its member's CRC-32, in the local header and the central directory
    assert sum(a != b for a, b in zip(base_bytes, value_bytes)) <= 10
    target_bytes = read(os.path.join(target_dir, shard))
    decoded = xor_uncompressed(read(os.path.join(payload_dir, shard)), value_bytes)
    assert decoded != target_bytes and len(decoded) == len(target_bytes)
    with zipfile.ZipFile(io.BytesIO(decoded)) as archive:
        assert archive.testzip() is None  # every member passes its CRC-32
    wrong = torch.load(io.BytesIO(decoded))
    right = torch.load(os.path.join(target_dir, shard))
    differing = [k for k in right if not torch.equal(wrong[k], right[k])]
    assert differing == [changed_name], differing
    return {
        "differs": [shard],
        "tensor": changed_name,
        "how": "one element increased by 1, saved as save_pretrained saves it: same layout and length as the base's file",
        "decoded_sha256": {shard: hashlib.sha256(decoded).hexdigest()},
        "decoded_passes_crc32": True,
    }


# --- fixture 3: point-alpaca .enc --------------------------------------------

def make_enc():
    root = os.path.join(OUT, "enc")
    key_path = os.path.join(root, "key", "consolidated.00.pth")
    plain_dir, enc_dir = os.path.join(root, "plain"), os.path.join(root, "enc")
    key = stream("delta-weights enc consolidated.00.pth", ENC_KEY_SIZE)
    write(key_path, key)

    # point-alpaca: an fp32 Alpaca-7B with a [PAD] token (vocab + 1), 3 shards
    shape = dict(hidden=48, inter=128, layers=3, heads=4)
    g = torch.Generator().manual_seed(3)
    model = llama(g, vocab=257, dtype=torch.float32, **shape)
    save_pretrained(plain_dir, model, max_shard_size=170_000, shards=3)
    write_json(os.path.join(plain_dir, "config.json"), llama_config(257, dtype="float32", extra={
        "_name_or_path": "tiny-llama", "pad_token_id": 0}, **shape))
    write_json(os.path.join(plain_dir, "generation_config.json"), {
        "_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
        "transformers_version": "4.27.0.dev0"})
    write_json_line(os.path.join(plain_dir, "added_tokens.json"), {"[PAD]": 256})
    write_json_line(os.path.join(plain_dir, "special_tokens_map.json"), {
        "bos_token": "</s>", "eos_token": "</s>", "pad_token": "[PAD]", "unk_token": "</s>"})
    write_json_line(os.path.join(plain_dir, "tokenizer_config.json"), {
        "bos_token": "", "eos_token": "", "model_max_length": 512, "padding_side": "right",
        "special_tokens_map_file": None, "tokenizer_class": "LlamaTokenizer", "unk_token": ""})
    write(os.path.join(plain_dir, "tokenizer.model"), stream("delta-weights enc tokenizer.model", 20_011))
    write_json(os.path.join(plain_dir, "trainer_state.json"), {
        "best_metric": None, "best_model_checkpoint": None, "epoch": 3.0, "global_step": 12,
        "log_history": [{"epoch": 1.0, "learning_rate": 2e-05, "loss": 1.25, "step": 4},
                        {"epoch": 3.0, "step": 12, "train_loss": 1.0, "train_runtime": 1.5}],
        "max_steps": 12, "num_train_epochs": 3, "total_flos": 0, "trial_name": None, "trial_params": None})
    torch.save({"learning_rate": 2e-05, "num_train_epochs": 3, "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 8, "fsdp": "full_shard auto_wrap", "seed": 42},
               os.path.join(plain_dir, "training_args.bin"))

    files = {}
    samples = [0, 1, ENC_KEY_SIZE - 1, ENC_KEY_SIZE, ENC_KEY_SIZE + 1, 2 * ENC_KEY_SIZE + 5]
    for name in listing(plain_dir):
        data = read(os.path.join(plain_dir, name))
        enc_name, enc = encrypt(name, data, key)
        write(os.path.join(enc_dir, enc_name), enc)
        check_keyed_body(data, key, enc[32:], samples)
        assert enc[32:] == xor(data, bytes(key[i % ENC_KEY_SIZE] for i in range(len(data))))  # P < 10 MiB
        assert decrypt(enc_name, enc, key) == (name, data, True)
        files[name] = {"enc_name": enc_name, "plain": digests(data), "enc": digests(enc),
                       "longer_than_key": len(data) > ENC_KEY_SIZE}
    assert sum(f["longer_than_key"] for f in files.values()) >= 2
    assert not all(f["longer_than_key"] for f in files.values() if f["enc_name"].startswith("pytorch_model-"))
    sums_file(os.path.join(root, "md5sums-enc.txt"), enc_dir, "md5")
    sums_file(os.path.join(root, "md5sums-plain.txt"), plain_dir, "md5")

    # -- bad variants
    bad = {}
    flip_name = "pytorch_model-00002-of-00003.bin"
    enc_name = files[flip_name]["enc_name"]
    enc = bytearray(read(os.path.join(enc_dir, enc_name)))
    flip_at = 32 + ENC_KEY_SIZE + 1000  # in the body, where the key has been tiled
    enc[flip_at] ^= 0x01
    write(os.path.join(root, "bad", "flipped-byte", enc_name), bytes(enc))
    out_name, out, ok = decrypt(enc_name, bytes(enc), key)
    assert out_name == flip_name and not ok
    bad["flipped-byte"] = {
        "file": enc_name, "byte_offset_in_file": flip_at, "xor_mask": 1,
        "decrypted_sha256": hashlib.sha256(out).hexdigest(),
        "publisher_decrypt": "writes the output, prints 'Checksums do not match', exits 1"}

    mis_name = "config.json"
    real = files[mis_name]["enc_name"]
    hexpart = real.split(".")[-2]
    wrong_hex = ("0" if hexpart[0] != "0" else "1") + hexpart[1:]
    renamed = f"{mis_name}.{wrong_hex}.enc"
    data = read(os.path.join(enc_dir, real))
    write(os.path.join(root, "bad", "name-mismatch", renamed), data)
    out_name, out, ok = decrypt(renamed, data, key)
    assert out_name == mis_name and ok and out == read(os.path.join(plain_dir, mis_name))
    bad["name-mismatch"] = {
        "file": renamed, "header_sha256": data[:32].hex(), "name_sha256": wrong_hex,
        "publisher_decrypt": "succeeds: it checks the header against the output and never reads the name's hex"}

    return {"what": "point-alpaca encrypt.py: <name>.<sha256>.enc = sha256(plain) || plain XOR key stream",
            "chunk": ENC_CHUNK, "key": dict(digests(key), path="key/consolidated.00.pth"),
            "files": files, "bad": bad}


def keystream_vectors():
    """Large cases for a test to regenerate: key = stream(KEY_LABEL)[:K],
    plain = stream(PLAIN_LABEL)[:P]."""
    mib = 1024 * 1024
    cases = [
        ("key 15 MiB, plain 25 MiB: the short last key segment is tiled over a whole chunk", 15 * mib, 25 * mib),
        ("key shorter than a chunk: the key restarts at every 10 MiB", 3_000_017, 2 * ENC_CHUNK + 1_234_567),
        ("key one byte longer than a chunk: chunk 1 is one key byte repeated", ENC_CHUNK + 1, 25 * mib),
        ("key a multiple of the chunk: a plain repeating key", 2 * ENC_CHUNK, 25 * mib + 3),
    ]
    key_all = stream(KEY_LABEL, max(k for _, k, _ in cases))
    plain_all = stream(PLAIN_LABEL, max(p for _, _, p in cases))
    vectors = []
    for what, k, p in cases:
        key, plain = key_all[:k], plain_all[:p]
        name, enc = encrypt("payload.bin", plain, key)
        boundaries = sorted({0, 1, ENC_CHUNK - 1, ENC_CHUNK, ENC_CHUNK + 1, 3 * mib - 1, 15 * mib, 20 * mib - 1,
                             2 * ENC_CHUNK, 2 * ENC_CHUNK + 1, k - 1, k, k + 1, p - 1})
        samples = [i for i in boundaries if 0 <= i < p]
        check_keyed_body(plain, key, enc[32:], samples + list(range(0, p, 997_001)))
        vectors.append({
            "what": what, "key_size": k, "plain_size": p,
            "key_sha256": hashlib.sha256(key).hexdigest(), "plain_sha256": hashlib.sha256(plain).hexdigest(),
            "enc_name": name, "enc_size": len(enc), "enc_sha256": hashlib.sha256(enc).hexdigest(),
            "plain_offset_to_key_offset": [[i, key_index(i, k)] for i in samples],
        })
    return {"generator": "stream(label)[:n], stream = SHA-256(label UTF-8 || j as 8-byte little-endian), j = 0, 1, ...",
            "key_label": KEY_LABEL, "plain_label": PLAIN_LABEL, "vectors": vectors}


# --- main --------------------------------------------------------------------

def check_torch_save_is_deterministic():
    sd = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "inv_freq": torch.ones(2)}
    a, b = io.BytesIO(), io.BytesIO()
    torch.save(sd, a)
    torch.save(sd, b)
    assert a.getvalue() == b.getvalue()


def main():
    if not os.path.isdir("scripts"):
        sys.exit("run from the repository root")
    check_torch_save_is_deterministic()
    os.makedirs(OUT, exist_ok=True)
    for entry in os.listdir(OUT):  # everything but the hand-written README.md
        path = os.path.join(OUT, entry)
        if entry != "README.md":
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    # Plain JSON must reach a checkout byte for byte (no line-ending conversion).
    write(os.path.join(OUT, ".gitattributes"), b"* -text\n")
    expected = {
        "torch": torch.__version__,
        "xor": make_xor(),
        "xor-plain-json": make_xor_plain_json(),
        "enc": make_enc(),
        "keystream_vectors": keystream_vectors(),
    }
    write(os.path.join(OUT, "expected.json"), (json.dumps(expected, indent=1) + "\n").encode())

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    assert total < SIZE_LIMIT, f"fixtures are {total} bytes"
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
