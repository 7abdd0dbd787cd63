/**
 * Every published additive convention, against what its publisher's own
 * script gives (test/fixtures/conventions, made with PyTorch by
 * scripts/make-convention-fixtures.py following each script line by line):
 * recognised from the files alone, every output tensor bit-identical to the
 * publisher's recovered state dict (as transformers >= 4.31 holds it: no
 * rotary inv_freq buffers), the right tensors kept and dropped, a forced
 * wrong convention refused.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { runCli } from "../helpers/cli.js";
import { readAll } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join(REPO_ROOT, "test/fixtures/conventions");
const BASES = { bin: join(FIXTURES, "base/bin"), safetensors: join(FIXTURES, "base/safetensors") } as const;

interface RecordedTensor { name: string; dtype: string; shape: number[]; sha256: string; rule: string }
interface Run { id: string; tensors: RecordedTensor[]; dropped: { name: string }[] }
interface Expected {
  runs: Run[];
  facts: { integrity?: { atol: number; with_inv_freq: { value?: number; f32_bits: string }; without_inv_freq?: { f32_bits: string } } };
}

async function expected(convention: string): Promise<Expected> {
  return JSON.parse(await readFile(join(FIXTURES, convention, "expected.json"), "utf8")) as Expected;
}

/** What the publisher's script leaves under transformers >= 4.31: the state dict without rotary buffers. */
async function modernRun(convention: string): Promise<Run> {
  return (await expected(convention)).runs.find((r) => r.id === "transformers-4.31/base/safetensors")!;
}

const CONVENTIONS = ["fastchat", "fastchat-v0", "alpaca", "llava", "ziya"] as const;

describe("published additive conventions, recognised and applied as their publishers' scripts do", () => {
  for (const convention of CONVENTIONS) {
    for (const [baseKind, base] of Object.entries(BASES)) {
      it(`${convention}: recognised without the flag, every tensor bit-identical to the publisher's script (base ${baseKind})`, async () => {
        const out = join(await makeTempDir(), "out");
        const result = await applyDelta({ base, delta: join(FIXTURES, convention, "delta"), target: out });
        expect(result.convention).toBe(convention);
        expect(result.verified).toBe(false);
        const run = await modernRun(convention);
        const got = await readAll(out);
        expect(got.map((t) => t.name).sort()).toEqual(run.tensors.map((t) => t.name).sort());
        for (const t of got) {
          const want = run.tensors.find((w) => w.name === t.name)!;
          expect({ dtype: t.dtype, shape: t.shape, sha256: sha256Bytes(t.data) }, `${t.name} (${want.rule})`).toEqual({ dtype: want.dtype, shape: want.shape, sha256: want.sha256 });
        }
        // No rotary buffer is written: they are computed by every loader since transformers 4.31.
        expect(got.some((t) => t.name.endsWith("rotary_emb.inv_freq"))).toBe(false);
      });
    }
  }

  it("fastchat leaves out the tensors only the delta has, as FastChat's apply_delta does, and says so", async () => {
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: BASES.safetensors, delta: join(FIXTURES, "fastchat/delta"), target: out });
    const run = await modernRun("fastchat");
    expect(run.dropped.map((d) => d.name)).toContain("v_head.summary.weight");
    expect((await readAll(out)).some((t) => t.name === "v_head.summary.weight")).toBe(false);
    expect(result.notes.join("\n")).toMatch(/left out as FastChat's apply_delta does: v_head\.summary\.weight/);
    expect(result.notes.join("\n")).toMatch(/rotary_emb\.inv_freq buffers/);
  });

  it("fastchat takes config.json from the base and the tokenizer from the delta, as FastChat saves them", async () => {
    const out = join(await makeTempDir(), "out");
    await applyDelta({ base: BASES.safetensors, delta: join(FIXTURES, "fastchat/delta"), target: out });
    expect(await readFile(join(out, "config.json"), "utf8")).toBe(await readFile(join(BASES.safetensors, "config.json"), "utf8"));
    expect(await readFile(join(out, "tokenizer_config.json"), "utf8")).toBe(await readFile(join(FIXTURES, "fastchat/delta/tokenizer_config.json"), "utf8"));
  });

  it("llava keeps the delta-only mm_projector, stored as the delta holds it", async () => {
    const out = join(await makeTempDir(), "out");
    await applyDelta({ base: BASES.bin, delta: join(FIXTURES, "llava/delta"), target: out });
    const names = (await readAll(out)).map((t) => t.name);
    expect(names).toContain("model.mm_projector.weight");
    expect(names).toContain("model.mm_projector.bias");
  });

  it.each([
    ["fastchat", "alpaca", /float32/],
    ["fastchat", "fastchat-v0", /not the base's plus one added token/],
    ["fastchat", "llava", /none of mm_vision_tower/],
    ["fastchat", "ziya", /does not grow/],
    ["alpaca", "fastchat", /FastChat's apply_delta refuses/],
    ["alpaca", "fastchat-v0", /half precision/],
    ["ziya", "fastchat-v0", /not the base's plus one added token/],
    ["llava", "delta-weights", /no delta\.json/],
  ])("refuses %s forced as --convention %s, saying why", (convention, forced, why) => {
    const run = runCli(["--base", BASES.safetensors, "--delta", join(FIXTURES, convention, "delta"), "--target", join(REPO_ROOT, "never-written"), "--convention", forced], "apply-delta");
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^error: --convention ${forced} does not fit .*`));
    expect(run.stderr).toMatch(why);
  });

  it("prints which convention it found and why, and reports it in --json", async () => {
    const out = join(await makeTempDir(), "out");
    const text = runCli(["--base", BASES.bin, "--delta", join(FIXTURES, "fastchat-v0/delta"), "--target", out], "apply-delta");
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^convention: fastchat-v0 \(.*"\[PAD\]" at row 512.*\)$/m);
    const json = runCli(["--base", BASES.bin, "--delta", join(FIXTURES, "fastchat-v0/delta"), "--target", out, "--json"], "apply-delta");
    expect((JSON.parse(json.stdout) as { convention: string }).convention).toBe("fastchat-v0");
  });
});

describe("Alpaca's integrity sum", () => {
  it("passes with the published constant, counting the rotary buffers the publisher's model held", async () => {
    const integrity = (await expected("alpaca")).facts.integrity!;
    const constant = Buffer.from(integrity.with_inv_freq.f32_bits.slice(2), "hex").readFloatBE(0);
    for (const base of Object.values(BASES)) {
      const out = join(await makeTempDir(), "out");
      const result = await applyDelta({ base, delta: join(FIXTURES, "alpaca/delta"), target: out, expectSum: constant });
      expect(result.notes.join("\n")).toMatch(/integrity sum checked against/);
    }
  });

  it("fails with exit 1 against a wrong constant, printing the sum it got, and leaves no file under a final name", async () => {
    const integrity = (await expected("alpaca")).facts.integrity!;
    const constant = Buffer.from(integrity.with_inv_freq.f32_bits.slice(2), "hex").readFloatBE(0);
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", BASES.bin, "--delta", join(FIXTURES, "alpaca/delta"), "--target", out, "--expect-sum", String(constant + 0.5)], "apply-delta");
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^error: the recovered model sums to ${constant.toString().slice(0, 6)}`));
    // Nothing at all: the target this run created goes with its job record.
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });
});

describe("full weights given as a delta", () => {
  it("is refused with exit 1 before any output file exists, saying they are already the model", async () => {
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", BASES.safetensors, "--delta", join(FIXTURES, "not-a-delta/delta"), "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/is already a model, not a delta: .*\(cosine 0\.99\d+.*delta-weights convert/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });
});
