#!/usr/bin/env python3
"""Writes the PyTorch checkpoint fixtures in test/fixtures/pytorch/ with real
torch.save, and expected.json: per file, its tensors in state-dict order with
dtype, shape and the sha256 of the bytes torch.load gives back (contiguous,
row-major, little-endian).

Deterministic (fixed seeds). Needs torch (apt-get install python3-torch).
Run from the repository root: python3 scripts/make-pytorch-fixtures.py

Hostile checkpoints are genuine torch.save archives whose pickle was made to
do harm; the script proves each payload is live by unpickling it with
Python's own pickle in a scratch directory and checking the marker file it
creates (so a test that finds no marker after our reader ran means something).
"""
import collections
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib

import torch

OUT = os.path.join("test", "fixtures", "pytorch")
MARKER = "delta-weights-payload-ran"


def tensor_bytes(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


DTYPE_NAMES = {
    torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def describe(state_dict):
    """What our reader must report, computed from what torch.load returns."""
    return [
        {
            "name": name,
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "sha256": hashlib.sha256(tensor_bytes(t)).hexdigest(),
        }
        for name, t in state_dict.items()
        if isinstance(t, torch.Tensor)
    ]


expected = {}


def save(name, obj, tensors_of=lambda loaded: loaded):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path)
    loaded = torch.load(path)
    expected[name] = describe(tensors_of(loaded))
    return path


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- well-formed checkpoints -------------------------------------------------

def make_dtypes():
    g = gen(1)
    base = torch.randn(3, 5, generator=g)
    sd = collections.OrderedDict()
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
    sd["empty"] = torch.zeros(0, 4, dtype=torch.float16)
    sd["step"] = 7  # a non-tensor value: readers skip it
    sd["big_i64"] = torch.tensor([2**63 - 1, -2**63], dtype=torch.int64)
    save("dtypes.bin", sd)


def make_views():
    g = gen(2)
    sd = {}
    embed = torch.randn(6, 4, generator=g, dtype=torch.float16)
    sd["embed.weight"] = embed
    sd["lm_head.weight"] = embed  # tied: one storage, two names
    rows = torch.randn(10, 4, generator=g)
    sd["rows"] = rows
    sd["rows_2_to_5"] = rows[2:5]  # storage offset, contiguous
    sd["cols_1_to_3"] = rows[:, 1:3]  # offset and row stride 4: not contiguous
    sd["transposed"] = torch.randn(5, 7, generator=g).t()
    sd["permuted"] = torch.randn(2, 3, 4, generator=g, dtype=torch.bfloat16).permute(2, 0, 1)
    # An expanded view (stride 0) repeats storage elements, which the reader
    # refuses (hostile/expanded-view.bin); cloned, it owns its elements.
    sd["expanded_then_cloned"] = torch.randn(3, 1, generator=g).expand(3, 4).clone()
    sd["every_other"] = torch.arange(20, dtype=torch.int32)[1::2]
    # Large enough that small chunk sizes need many gather blocks and runs.
    sd["big_transposed"] = torch.randn(64, 48, generator=g).t()
    sd["big_transposed_f16"] = torch.randn(33, 17, generator=g, dtype=torch.float16).t()
    save("views.bin", sd)
    # Newer pickle protocols (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL).
    for protocol in (4, 5):
        name = f"protocol{protocol}.bin"
        torch.save({"rows_2_to_5": sd["rows_2_to_5"], "transposed": sd["transposed"], "embed.weight": embed},
                   os.path.join(OUT, name), pickle_protocol=protocol)
        expected[name] = describe(torch.load(os.path.join(OUT, name)))
    # Also under a different archive folder: torch names it after the file
    # stem, or "archive" when saving to a buffer.
    buffer = io.BytesIO()
    torch.save({"x": sd["transposed"], "y": sd["rows_2_to_5"]}, buffer)
    with open(os.path.join(OUT, "buffer-saved.bin"), "wb") as f:
        f.write(buffer.getvalue())
    expected["buffer-saved.bin"] = describe(torch.load(os.path.join(OUT, "buffer-saved.bin")))


class RMSNorm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))


class Attention(torch.nn.Module):
    def __init__(self, dim, kv_dim):
        super().__init__()
        self.q_proj = torch.nn.Linear(dim, dim, bias=False)
        self.k_proj = torch.nn.Linear(dim, kv_dim, bias=False)
        self.v_proj = torch.nn.Linear(dim, kv_dim, bias=False)
        self.o_proj = torch.nn.Linear(dim, dim, bias=False)
        # Early LLaMA checkpoints saved this buffer too.
        self.register_buffer("rotary_inv_freq", 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8)))


class MLP(torch.nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = torch.nn.Linear(dim, hidden, bias=False)
        self.up_proj = torch.nn.Linear(dim, hidden, bias=False)
        self.down_proj = torch.nn.Linear(hidden, dim, bias=False)


class Layer(torch.nn.Module):
    def __init__(self, dim, kv_dim, hidden):
        super().__init__()
        self.self_attn = Attention(dim, kv_dim)
        self.mlp = MLP(dim, hidden)
        self.input_layernorm = RMSNorm(dim)
        self.post_attention_layernorm = RMSNorm(dim)


class Model(torch.nn.Module):
    def __init__(self, vocab, dim, kv_dim, hidden, layers):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(vocab, dim)
        self.layers = torch.nn.ModuleList([Layer(dim, kv_dim, hidden) for _ in range(layers)])
        self.norm = RMSNorm(dim)


class CausalLM(torch.nn.Module):
    def __init__(self, vocab=32, dim=16, kv_dim=8, hidden=24, layers=2):
        super().__init__()
        self.model = Model(vocab, dim, kv_dim, hidden, layers)
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)


def make_llama():
    torch.manual_seed(3)
    model = CausalLM()
    # A state_dict() is an OrderedDict with `_metadata`: BUILD in the pickle.
    save("llama-state-dict.bin", model.state_dict())
    # keep_vars=True keeps nn.Parameter objects: _rebuild_parameter.
    save("llama-parameters.bin", model.state_dict(keep_vars=True))
    # A training checkpoint: the weights one level down, under "state_dict".
    save("training-checkpoint.bin", {"epoch": 3, "state_dict": model.state_dict()}, lambda c: c["state_dict"])

    # Sharded the way transformers' save_pretrained writes .bin shards.
    half = {k: v.to(torch.float16) for k, v in CausalLM().state_dict().items()}
    names = list(half)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    total = 0
    for i, shard_names in enumerate(shards):
        file = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        save(os.path.join("sharded", file), {k: half[k] for k in shard_names})
        for k in shard_names:
            weight_map[k] = file
            total += half[k].numel() * half[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(OUT, "sharded", "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


# --- re-zipping helpers --------------------------------------------------------

def read_entries(path):
    with zipfile.ZipFile(path) as z:
        return [(info.filename, z.read(info.filename)) for info in z.infolist()]


def write_zip(path, entries, compress=False):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in entries:
            # a fixed timestamp keeps the output byte-for-byte reproducible
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            z.writestr(info, data)


def write_zip64(path, entries):
    """A ZIP64 archive of stored entries, every size and offset in ZIP64 extra
    fields and the end record saturated, the way a > 4 GB torch.save looks,
    at a few KB. Data is aligned to 64 bytes like torch's writer does."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        name_bytes = name.encode()
        offset = len(out)
        crc = zlib.crc32(data)
        local_zip64 = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        unpadded = len(out) + 30 + len(name_bytes) + len(local_zip64) + 4
        pad = (-unpadded) % 64
        local_extra = local_zip64 + struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name_bytes), len(local_extra))
        out += name_bytes + local_extra
        assert len(out) % 64 == 0
        out += data
        central_extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(name_bytes), len(central_extra), 0, 0, 0, 0, 0xFFFFFFFF)
        central += name_bytes + central_extra
    directory_offset = len(out)
    out += central
    zip64_end = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), directory_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(out)


def make_zip_variants():
    source = os.path.join(OUT, "views.bin")
    entries = read_entries(source)
    path = os.path.join(OUT, "zip64.bin")
    write_zip64(path, entries)
    with zipfile.ZipFile(path) as z:  # Python's zipfile agrees it is a valid archive
        assert [i.filename for i in z.infolist()] == [n for n, _ in entries]
    loaded = torch.load(path)  # and torch's own reader loads it
    assert describe(loaded) == expected["views.bin"]
    expected["zip64.bin"] = describe(loaded)

    # Python's zipfile, stored: no 64-byte alignment, a different writer.
    path = os.path.join(OUT, "python-zipfile.bin")
    write_zip(path, read_entries(os.path.join(OUT, "dtypes.bin")))
    expected["python-zipfile.bin"] = describe(torch.load(path))

    write_zip(os.path.join(OUT, "compressed.bin"), read_entries(os.path.join(OUT, "dtypes.bin")), compress=True)

    prefix = entries[0][0].split("/")[0]
    write_zip(os.path.join(OUT, "big-endian.bin"), entries + [(f"{prefix}/byteorder", b"big")])
    path = os.path.join(OUT, "byteorder-little.bin")
    write_zip(path, entries + [(f"{prefix}/byteorder", b"little")])
    expected["byteorder-little.bin"] = describe(torch.load(path))

    # (The legacy format keys storages by memory address: this one file
    # differs from run to run; tests only check that it is refused.)
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, os.path.join(OUT, "legacy-format.bin"),
               _use_new_zipfile_serialization=False)


# --- hostile checkpoints -------------------------------------------------------

class CallsSystem:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class CallsEval:
    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {MARKER}')",))


class ForgedView:
    """Pickles like a tensor, with geometry that reaches past its storage."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce_ex__(self, protocol):
        storage, offset, size, stride = self.args
        return (torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, collections.OrderedDict()))


class StubUnpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        _, storage_type, _, _, numel = pid
        return storage_type(numel)


def prove_payload_runs(pickle_bytes):
    """Unpickles with Python's pickle in a scratch dir: the marker must appear."""
    scratch = tempfile.mkdtemp()
    cwd = os.getcwd()
    try:
        os.chdir(scratch)
        StubUnpickler(io.BytesIO(pickle_bytes)).load()
        assert os.path.exists(MARKER), "payload did not run"
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch)


def replace_pickle(path, transform):
    entries = read_entries(path)
    entries = [(n, transform(d) if n.endswith("/data.pkl") else d) for n, d in entries]
    write_zip(path, entries)
    return dict(entries)


def make_hostile():
    hostile = os.path.join(OUT, "hostile")
    os.makedirs(hostile, exist_ok=True)
    weight = torch.arange(4, dtype=torch.float32)

    # posix.system is how Python pickles os.system on Linux.
    path = os.path.join(hostile, "posix-system.bin")
    torch.save({"weight": weight, "payload": CallsSystem()}, path)
    prove_payload_runs(next(d for n, d in read_entries(path) if n.endswith("/data.pkl")))

    # The same archive naming os.system itself (GLOBAL is newline-terminated,
    # so the name can be swapped in place).
    path = os.path.join(hostile, "os-system.bin")
    torch.save({"weight": weight, "payload": CallsSystem()}, path)
    entries = replace_pickle(path, lambda d: d.replace(b"cposix\nsystem\n", b"cos\nsystem\n"))
    data = next(d for n, d in entries.items() if n.endswith("/data.pkl"))
    assert b"cos\nsystem\n" in data
    prove_payload_runs(data)

    # Protocol 2 names builtins "__builtin__" (Python 2 compatible); Python 3's
    # unpickler maps it back. One genuine, one naming builtins.eval.
    path = os.path.join(hostile, "builtin-eval.bin")
    torch.save({"weight": weight, "payload": CallsEval()}, path)
    data = next(d for n, d in read_entries(path) if n.endswith("/data.pkl"))
    assert b"c__builtin__\neval\n" in data
    prove_payload_runs(data)

    path = os.path.join(hostile, "builtins-eval.bin")
    torch.save({"weight": weight, "payload": CallsEval()}, path)
    entries = replace_pickle(path, lambda d: d.replace(b"c__builtin__\neval\n", b"cbuiltins\neval\n"))
    data = next(d for n, d in entries.items() if n.endswith("/data.pkl"))
    assert b"cbuiltins\neval\n" in data
    prove_payload_runs(data)

    storage = torch.arange(4, dtype=torch.float32).storage()
    torch.save({"weight": ForgedView(storage, 0, (5,), (1,))}, os.path.join(hostile, "view-past-storage.bin"))
    torch.save({"weight": ForgedView(storage, 3, (2,), (1,))}, os.path.join(hostile, "offset-past-storage.bin"))
    torch.save({"weight": ForgedView(storage, 0, (2, 2), (1, 3))}, os.path.join(hostile, "stride-past-storage.bin"))
    for name in ("view-past-storage.bin", "offset-past-storage.bin", "stride-past-storage.bin"):
        try:  # torch itself refuses these views
            torch.load(os.path.join(hostile, name))
            raise AssertionError(f"torch accepted {name}")
        except RuntimeError:
            pass

    # Views whose elements overlap in storage: torch loads them (torch.save
    # keeps the view), but a state dict never has one and safetensors
    # refuses them; read, a 1-element storage could stand for 2^33 elements.
    torch.save({"weight": torch.arange(3, dtype=torch.float32).reshape(3, 1).expand(3, 4)}, os.path.join(hostile, "expanded-view.bin"))
    torch.save({"weight": torch.arange(40, dtype=torch.int64).as_strided((4, 5), (3, 2), 1)}, os.path.join(hostile, "overlapping-view.bin"))
    torch.save({"weight": torch.arange(12, dtype=torch.float32).unfold(0, 4, 2)}, os.path.join(hostile, "unfolded-view.bin"))
    for name in ("expanded-view.bin", "overlapping-view.bin", "unfolded-view.bin"):
        torch.load(os.path.join(hostile, name))  # torch itself accepts these

    path = os.path.join(hostile, "empty-pickle.bin")
    torch.save({"weight": weight}, path)
    replace_pickle(path, lambda d: b"")

    path = os.path.join(hostile, "not-a-pickle.bin")
    torch.save({"weight": weight}, path)
    replace_pickle(path, lambda d: b"this is not a pickle, it is plain text\n")

    # A storage entry missing from the archive.
    path = os.path.join(hostile, "missing-storage.bin")
    torch.save({"weight": weight}, path)
    write_zip(path, [(n, d) for n, d in read_entries(path) if "/data/" not in n])


def main():
    if not os.path.isdir("scripts"):
        sys.exit("run from the repository root")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    make_dtypes()
    make_views()
    make_llama()
    make_zip_variants()
    make_hostile()
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        f.write(json.dumps({"torch": torch.__version__, "files": expected}, indent=1) + "\n")


if __name__ == "__main__":
    main()
