/**
 * Checkpoints small on disk that would make the reader build far more than
 * their size (the mutation fuzzer's finds): each is refused with a one-line
 * PytorchError by a bound in limits.ts, before memory grows past it. Real
 * state dicts, built as torch.save writes them, stay far inside every bound.
 */
import { describe, expect, it } from "vitest";
import { PytorchError } from "../../src/errors.js";
import { MAX_PICKLE_ALLOCATION_BYTES, MAX_PICKLE_BYTES, MAX_TENSORS_PER_FILE, MAX_ZIP_ENTRIES } from "../../src/limits.js";
import { readCheckpoint } from "../../src/pytorch/checkpoint.js";
import { PickleGlobal, unpickle, type UnpickleHooks } from "../../src/pytorch/unpickler.js";
import { checkpointZip, concatBytes, memoryReader, P, storedZip, tensorDictPickle, torchSaveStateDictPickle } from "../pytorch/build.js";

const FILE = "hostile.bin";

async function refusal(bytes: Uint8Array, reads: number[] = []): Promise<PytorchError> {
  try {
    await readCheckpoint(memoryReader(bytes, reads), bytes.length, FILE);
  } catch (err) {
    expect(err).toBeInstanceOf(PytorchError);
    const error = err as PytorchError;
    expect(error.message).toMatch(/^Failed to read hostile\.bin: /);
    expect(error.message).not.toContain("\n");
    return error;
  }
  throw new Error("not refused");
}

const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);
const weightPickle = tensorDictPickle([{ name: "weight", storageType: "FloatStorage", key: "0", numel: 4, offset: 0, shape: [4], strides: [1] }]);

/** Hooks that accept what a state dict holds, as checkpoint.ts does, without checking storages. */
const stateDictHooks: UnpickleHooks = {
  allowGlobal: () => true,
  persistentLoad: (pid) => pid,
  reduce: (callable: PickleGlobal, args) => (callable.name === "OrderedDict" ? new Map() : { args }),
  build: () => undefined,
};

/** A LLaMA-shaped state dict of `layers` layers (9 tensors each, plus 3), as torch.save writes it. */
function llamaStateDict(layers: number) {
  const tensors: { name: string; storageType: string; numel: number; shape: number[]; strides: number[] }[] = [];
  const add = (name: string, shape: number[]) =>
    tensors.push({ name, storageType: "HalfStorage", numel: shape.reduce((a, b) => a * b, 1), shape, strides: shape.length === 2 ? [shape[1]!, 1] : [1] });
  add("model.embed_tokens.weight", [32000, 8192]);
  for (let l = 0; l < layers; l++) {
    for (const p of ["q_proj", "k_proj", "v_proj", "o_proj"]) add(`model.layers.${l}.self_attn.${p}.weight`, [8192, 8192]);
    for (const p of ["gate_proj", "up_proj", "down_proj"]) add(`model.layers.${l}.mlp.${p}.weight`, [28672, 8192]);
    add(`model.layers.${l}.input_layernorm.weight`, [8192]);
    add(`model.layers.${l}.post_attention_layernorm.weight`, [8192]);
  }
  add("model.norm.weight", [8192]);
  add("lm_head.weight", [32000, 8192]);
  return tensors;
}

describe("pickles that build far more than their size", () => {
  it("rejects a 6 MB pickle that builds 3 million empty dicts, within the allocation budget", async () => {
    // PROTO, EMPTY_LIST, then EMPTY_DICT APPEND three million times: 6 MB
    const body = new Uint8Array(6_000_000);
    for (let i = 0; i < body.length; i += 2) body.set([0x7d, 0x61], i);
    const zip = checkpointZip(P.pickle(P.proto(), P.emptyList(), body, P.stop()));
    global.gc?.();
    const before = process.memoryUsage().heapUsed;
    const error = await refusal(zip);
    expect(error.message).toMatch(/data\.pkl builds more objects than the limit of \d+ bytes allows/);
    // ~700 MB before the budget; now the budget (64 MB) plus slack
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(2 * MAX_PICKLE_ALLOCATION_BYTES);
  });

  it("reads a LLaMA-70B-shaped state dict, as torch.save writes it, on a twentieth of the budget", () => {
    const tensors = llamaStateDict(80);
    expect(tensors.length).toBe(723);
    const pickle = torchSaveStateDictPickle(tensors);
    const dict = unpickle(pickle, FILE, stateDictHooks, { maxAllocationBytes: MAX_PICKLE_ALLOCATION_BYTES / 20 }) as Map<string, unknown>;
    expect(dict.size).toBe(723);
  });
});

describe("large non-tensor values", () => {
  it("rejects a 150 MB bytes value: data.pkl is over MAX_PICKLE_BYTES, refused before it is read", async () => {
    const size = MAX_PICKLE_BYTES + 1;
    // {"blob": b"\0" * n, "weight": tensor}, with the blob just past the cap
    const blob = new Uint8Array(size);
    const head = P.pickle(P.proto(3), P.emptyDict(), P.str("blob"), [0x42, size & 0xff, (size >> 8) & 0xff, (size >> 16) & 0xff, size >>> 24]);
    const pickle = concatBytes([head, blob, P.pickle(P.setitem()), weightPickle.subarray(3, -1), P.pickle(P.stop())]);
    expect(pickle.length).toBeGreaterThan(MAX_PICKLE_BYTES);
    const reads: number[] = [];
    const error = await refusal(checkpointZip(pickle, { "0": f32(4) }), reads);
    expect(error.message).toMatch(/data\.pkl is \d+ bytes, more than the limit of 33554432/);
    expect(Math.max(...reads)).toBeLessThan(100_000);
  });

  it("skips a large bytes value inside the cap without copying it, and loads the tensors", async () => {
    const size = 8 * 1024 * 1024;
    const head = P.pickle(P.proto(3), P.emptyDict(), P.str("blob"), [0x42, size & 0xff, (size >> 8) & 0xff, (size >> 16) & 0xff, size >>> 24]);
    const pickle = concatBytes([head, new Uint8Array(size), P.pickle(P.setitem()), weightPickle.subarray(3, -1), P.pickle(P.stop())]);
    const zip = checkpointZip(pickle, { "0": f32(4) });
    const checkpoint = await readCheckpoint(memoryReader(zip), zip.length, FILE);
    expect(checkpoint.tensors.map((t) => t.name)).toEqual(["weight"]);
  });
});

describe("zip archives of many entries", () => {
  it("rejects more entries than MAX_ZIP_ENTRIES before reading the directory (500,000 empty entries took 259 MB)", async () => {
    const extra = Array.from({ length: MAX_ZIP_ENTRIES - 1 }, (_, i) => ({ name: `archive/x/${i}`, data: new Uint8Array(0) }));
    const zip = storedZip([{ name: "archive/data.pkl", data: weightPickle }, { name: "archive/data/0", data: f32(4) }, ...extra]);
    const reads: number[] = [];
    const error = await refusal(zip, reads);
    expect(error.message).toMatch(new RegExp(`zip archive declares ${MAX_ZIP_ENTRIES + 1} entries, more than the limit of ${MAX_ZIP_ENTRIES}`));
    expect(Math.max(...reads)).toBeLessThan(100_000);
  });

  it("reads an archive of exactly MAX_ZIP_ENTRIES entries", async () => {
    const extra = Array.from({ length: MAX_ZIP_ENTRIES - 2 }, (_, i) => ({ name: `archive/x/${i}`, data: new Uint8Array(0) }));
    const zip = storedZip([{ name: "archive/data.pkl", data: weightPickle }, { name: "archive/data/0", data: f32(4) }, ...extra]);
    const checkpoint = await readCheckpoint(memoryReader(zip), zip.length, FILE);
    expect(checkpoint.tensors.map((t) => t.name)).toEqual(["weight"]);
  });
});

describe("tensors per file", () => {
  const tensors = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `model.layers.${i >> 7}.experts.${i & 127}.weight`, storageType: "HalfStorage", numel: 1, shape: [1], strides: [1] }));
  /** A torch.save-shaped state dict of n one-element tensors, each on its own storage. */
  const stateDictZip = (n: number) =>
    storedZip([
      { name: "archive/data.pkl", data: torchSaveStateDictPickle(tensors(n)) },
      ...Array.from({ length: n }, (_, i) => ({ name: `archive/data/${i}`, data: new Uint8Array(2) })),
      { name: "archive/version", data: new TextEncoder().encode("3\n") },
    ]);

  it("reads MAX_TENSORS_PER_FILE tensors, as torch.save writes them, within the allocation budget", async () => {
    const zip = stateDictZip(MAX_TENSORS_PER_FILE);
    const checkpoint = await readCheckpoint(memoryReader(zip), zip.length, FILE);
    expect(checkpoint.tensors.length).toBe(MAX_TENSORS_PER_FILE);
  });

  it("rejects a state dict of more than MAX_TENSORS_PER_FILE tensors", async () => {
    const error = await refusal(stateDictZip(MAX_TENSORS_PER_FILE + 1));
    expect(error.message).toMatch(new RegExp(`holds more than ${MAX_TENSORS_PER_FILE} tensors, the limit for one file`));
  });
});
