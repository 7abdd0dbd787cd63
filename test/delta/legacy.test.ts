import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { readAll } from "../helpers/finetune.js";
import { runCli } from "../helpers/cli.js";
import { REPO_ROOT, REALDATA, hasRealdata } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** Legacy FastChat-style deltas and PyTorch's own apply_delta results (scripts/make-legacy-fixtures.py). */
const FIXTURES = join(REPO_ROOT, "test/fixtures/legacy");

interface Recorded { dtype: string; shape: number[]; sha256: string }
interface Expected { dtypes: Record<string, { recovered: Record<string, Recorded>; recovered_elements_differing_from_target: number }> }

const expected = JSON.parse(await readFile(join(FIXTURES, "expected.json"), "utf8")) as Expected;

/**
 * These deltas store their new vocabulary row whole (as FastChat v0's
 * make_delta does, over a zero row) and say vocab_size 513: FastChat v0's
 * script recovers them, loading both models in float16. For F16 that is
 * this fixture's own delta + base; for BF16 both are rounded to F16 first,
 * which scripts/make-evidence-fixtures.py computes with PyTorch.
 */
const V0_BF16 = (JSON.parse(await readFile(join(REPO_ROOT, "test/fixtures/evidence/expected.json"), "utf8")) as { runs: { id: string; tensors: (Recorded & { name: string })[] }[] })
  .runs.find((r) => r.id === "legacy-bf16")!.tensors;

const CASES: { dtype: string; base: string; delta: string }[] = [
  { dtype: "f16", base: "f16/base-bin", delta: "f16/delta-bin" },
  { dtype: "f16", base: "f16/base-safetensors", delta: "f16/delta-bin" },
  { dtype: "f16", base: "f16/base-bin", delta: "f16/delta-safetensors" },
  { dtype: "bf16", base: "bf16/base-bin", delta: "bf16/delta-bin" },
  { dtype: "bf16", base: "REALDATA", delta: "bf16/delta-safetensors" },
];

describe("legacy deltas (no delta.json) give exactly PyTorch's delta + base", () => {
  for (const c of CASES) {
    it.skipIf(c.base === "REALDATA" && !hasRealdata)(`${c.dtype}: base ${c.base}, delta ${c.delta} (vocabulary 513 on 512, other shard layouts)`, async () => {
      const out = join(await makeTempDir(), "out");
      const base = c.base === "REALDATA" ? join(REALDATA, "tiny-llama-bf16/model.safetensors") : join(FIXTURES, c.base);
      const result = await applyDelta({ base, delta: join(FIXTURES, c.delta), target: out });
      expect(result.kind).toBe("legacy");
      expect(result.verified).toBe(false);
      expect(result.convention).toBe("fastchat-v0");
      const want = c.dtype === "bf16" ? Object.fromEntries(V0_BF16.map((t) => [t.name, t])) : expected.dtypes[c.dtype]!.recovered;
      const got = await readAll(out);
      expect(got.map((t) => t.name).sort()).toEqual(Object.keys(want).sort());
      for (const t of got) {
        const w = want[t.name]!;
        expect({ dtype: t.dtype, shape: t.shape, sha256: sha256Bytes(t.data) }, t.name).toEqual({ dtype: w.dtype, shape: w.shape, sha256: w.sha256 });
      }
      // In half precision FastChat's arithmetic is not exact: why a legacy result cannot be verified.
      if (c.dtype !== "f32") expect(expected.dtypes[c.dtype]!.recovered_elements_differing_from_target).toBeGreaterThan(0);
    });
  }

  it("f32, its new row stored whole with no token recorded for it, follows no publisher's rule and is refused", async () => {
    // FastChat's scripts load float16 and its v1.1 one stops on a grown vocabulary;
    // Alpaca's diffs hold the new row minus the mean row, so adding the mean to a whole row would be wrong.
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", join(FIXTURES, "f32/base-bin"), "--delta", join(FIXTURES, "f32/delta-bin"), "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^error: .* follows no delta convention this tool knows \(.*alpaca: its vocabulary grows from 512 to 513 rows without one added token for the new row; fastchat: the vocabulary grows from 512 to 513 rows, which FastChat's apply_delta refuses/);
  });

  it("is reported unverified, sharded like the delta, in safetensors, with the delta's config", async () => {
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", join(FIXTURES, "f16/base-bin"), "--delta", join(FIXTURES, "f16/delta-bin"), "--target", out], "apply-delta");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^unverified/);
    const index = JSON.parse(await readFile(join(out, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set([1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`)));
    expect(await readFile(join(out, "config.json"), "utf8")).toBe(await readFile(join(FIXTURES, "f16/delta-bin/config.json"), "utf8"));
  });

  it("is verified against a sha256sum list, and a wrong entry is refused by name", async () => {
    const work = await makeTempDir();
    const args = (out: string, sums: string) => ["--base", join(FIXTURES, "bf16/base-bin"), "--delta", join(FIXTURES, "bf16/delta-bin"), "--target", out, "--checksums", sums];
    const first = join(work, "first");
    expect(runCli(["--base", join(FIXTURES, "bf16/base-bin"), "--delta", join(FIXTURES, "bf16/delta-bin"), "--target", first], "apply-delta").status).toBe(0);
    // The list a publisher would make with coreutils.
    const listed = spawnSync("sh", ["-c", "sha256sum *"], { cwd: first, encoding: "utf8" });
    expect(listed.status).toBe(0);
    await writeFile(join(work, "SHA256SUMS"), listed.stdout);

    const ok = runCli(args(join(work, "second"), join(work, "SHA256SUMS")), "apply-delta");
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^verified against the checksum list/);

    const wrong = listed.stdout.replace(/^[0-9a-f]{64}(?= {2}model-00002)/m, "0".repeat(64));
    expect(wrong).not.toBe(listed.stdout);
    await writeFile(join(work, "BAD256SUMS"), wrong);
    const bad = runCli(args(join(work, "third"), join(work, "BAD256SUMS")), "apply-delta");
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^error: .*model-00002-of-00003\.safetensors.*does not match/);
    expect(spawnSync("ls", [join(work, "third")], { encoding: "utf8" }).stdout).not.toMatch(/^model-00002-of-00003\.safetensors$/m);
  });
});
