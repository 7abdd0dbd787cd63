/**
 * Hostile PyTorch checkpoints: each is refused with a one-line PytorchError
 * naming the file and the rule, and no payload ever runs. The payload
 * fixtures are genuine torch.save archives whose pickle runs
 * `touch delta-weights-payload-ran` under Python's pickle (the generator
 * proves it); after our reader has seen them, no such file exists.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openPytorchFile } from "../../src/formats/registry.js";
import { PytorchError, type PytorchRule } from "../../src/errors.js";
import { fixture } from "../pytorch/fixtures.js";

const MARKER = "delta-weights-payload-ran";

async function refusal(file: string): Promise<PytorchError> {
  try {
    const opened = await openPytorchFile(file);
    // Opening must fail; if it did not, reading every tensor must.
    for (const t of opened.tensors) for await (const _ of opened.readTensor(t.name)) void _;
    await opened.close();
  } catch (err) {
    expect(err).toBeInstanceOf(PytorchError);
    const error = err as PytorchError;
    expect(error.code).toBe("E_PYTORCH");
    expect(error.message).not.toContain("\n");
    expect(error.message).toContain(file);
    return error;
  }
  throw new Error(`${file} was not refused`);
}

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "pytorch-hostile-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("pickles that try to run code", () => {
  const cases: [string, PytorchRule, RegExp][] = [
    ["hostile/os-system.bin", "pickle-forbidden-global", /os\.system, which is not allowed/],
    ["hostile/posix-system.bin", "pickle-forbidden-global", /posix\.system, which is not allowed/],
    ["hostile/builtins-eval.bin", "pickle-forbidden-global", /builtins\.eval, which is not allowed/],
    ["hostile/builtin-eval.bin", "pickle-forbidden-global", /__builtin__\.eval, which is not allowed/],
  ];
  for (const [name, rule, message] of cases) {
    it(`refuses ${name} at its GLOBAL, naming it, and runs nothing`, async () => {
      const error = await refusal(fixture(name));
      expect(error.rule).toBe(rule);
      expect(error.message).toMatch(message);
      expect(existsSync(MARKER)).toBe(false);
      expect(existsSync(path.join(path.dirname(fixture(name)), MARKER))).toBe(false);
    });
  }
});

describe("malformed checkpoints", () => {
  const cases: [string, PytorchRule, RegExp][] = [
    ["hostile/view-past-storage.bin", "tensor-past-storage", /tensor "weight" is a view past its storage: it needs element 4 of storage "0", which has 4/],
    ["hostile/offset-past-storage.bin", "tensor-past-storage", /tensor "weight" is a view past its storage/],
    ["hostile/stride-past-storage.bin", "tensor-past-storage", /tensor "weight" is a view past its storage/],
    ["hostile/expanded-view.bin", "tensor-overlapping", /tensor "weight" is a view whose elements overlap in storage \(shape \[3, 4\], strides \[1, 0\]: dimension 1, of size 4, has stride 0\)/],
    ["hostile/overlapping-view.bin", "tensor-overlapping", /tensor "weight" is a view whose elements overlap in storage \(shape \[4, 5\], strides \[3, 2\]: dimension 0's stride 3 does not step past/],
    ["hostile/unfolded-view.bin", "tensor-overlapping", /tensor "weight" is a view whose elements overlap in storage/],
    ["hostile/empty-pickle.bin", "pickle-truncated", /data\.pkl is empty/],
    ["hostile/not-a-pickle.bin", "pickle-protocol", /data\.pkl is not a pickle/],
    ["hostile/missing-storage.bin", "storage-missing", /refers to storage "0" but the archive has no/],
    ["compressed.bin", "zip-unsupported", /is compressed \(method 8\)/],
    ["big-endian.bin", "byteorder-unsupported", /big-endian/],
    ["legacy-format.bin", "checkpoint-legacy", /legacy PyTorch format \(torch < 1\.6\).*re-save it with a newer torch/],
  ];
  for (const [name, rule, message] of cases) {
    it(`refuses ${name} by the rule ${rule}`, async () => {
      const error = await refusal(fixture(name));
      expect(error.rule).toBe(rule);
      expect(error.message).toMatch(message);
    });
  }

  it("refuses random bytes", async () => {
    // A fixed-seed generator: the same bytes every run.
    let seed = 0x12345678;
    const bytes = new Uint8Array(100_000).map(() => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed >>> 24;
    });
    const file = path.join(scratch, "random.bin");
    await writeFile(file, bytes);
    const error = await refusal(file);
    expect(error.rule).toBe("zip-not-zip");
    expect(error.message).toMatch(/not a zip archive/);
  });

  it("refuses an empty file", async () => {
    const file = path.join(scratch, "empty.bin");
    await writeFile(file, new Uint8Array(0));
    const error = await refusal(file);
    expect(error.rule).toBe("checkpoint-empty");
    expect(error.message).toMatch(/is empty/);
  });

  it("refuses a checkpoint truncated at any point", async () => {
    const whole = await readFile(fixture("views.bin"));
    const file = path.join(scratch, "truncated.bin");
    // Every cut removes at least the end record; many also cut entries.
    for (let cut = 0; cut < whole.length; cut += 97) {
      await writeFile(file, whole.subarray(0, cut));
      await refusal(file);
    }
    await writeFile(file, whole.subarray(0, whole.length - 1));
    await refusal(file);
  });
});
