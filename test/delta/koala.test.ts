/**
 * Koala's EasyLM streaming diffs, against fixtures written as EasyLM's
 * checkpointer writes them and recovered by the arithmetic of EasyLM's
 * three scripts in PyTorch (scripts/make-koala-fixtures.py).
 */
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { looksLikeEasyLmCheckpoint, scanEasyLmCheckpoint } from "../../src/easylm/streaming-checkpoint.js";
import { convertModel } from "../../src/model/convert.js";
import { inspectModel } from "../../src/model/inspect.js";
import { openModel } from "../../src/model/open-model.js";
import { openRandomAccessFile } from "../../src/io/random-access-file.js";
import { attentionHeads, mapToHuggingFace, recovered } from "../../src/delta/easylm/koala.js";
import { readAll } from "../helpers/finetune.js";
import { runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FIXTURES = join(REPO_ROOT, "test/fixtures/koala");
const DIFF = join(FIXTURES, "delta/koala_tiny_diff_v2");
const META_BASE = join(REPO_ROOT, "test/fixtures/meta/two-shards");
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as {
  records: { key: string; dtype: string; shape: number[]; sha256: string }[];
  tensors: { name: string; dtype: string; shape: number[]; sha256: string }[];
};
const DTYPE = { bfloat16: "BF16", float16: "F16", float32: "F32" } as Record<string, string>;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function scan(path: string) {
  const bytes = readFileSync(path);
  return scanEasyLmCheckpoint(async (p, n) => {
    if (p + n > bytes.length) throw new Error("read past the end");
    return bytes.subarray(p, p + n);
  }, bytes.length, path);
}

describe("EasyLM streaming checkpoint reader", () => {
  it("plans every record from its header: key path, dtype, shape, where its bytes are", async () => {
    const bytes = readFileSync(DIFF);
    const records = await scan(DIFF);
    expect(records.map((r) => ({ key: r.key.join("/"), dtype: r.dtype, shape: r.shape }))).toEqual(EXPECTED.records.map((r) => ({ key: r.key, dtype: DTYPE[r.dtype], shape: r.shape })));
    records.forEach((r, i) => expect(sha256(bytes.subarray(r.dataStart, r.dataStart + r.byteLength))).toBe(EXPECTED.records[i]!.sha256));
  });

  it("reads the float16 base convert_torch_to_easylm writes", async () => {
    const records = await scan(join(FIXTURES, "easylm-base"));
    expect(records.every((r) => r.dtype === "F16")).toBe(true);
    expect(records.find((r) => r.key.join("/") === "lm_head/kernel")?.shape).toEqual([64, 96]);
  });

  it("recognises the format from its first bytes, and nothing else", () => {
    expect(looksLikeEasyLmCheckpoint(readFileSync(DIFF).subarray(0, 4096))).toBe(true);
    expect(looksLikeEasyLmCheckpoint(readFileSync(join(META_BASE, "consolidated.00.pth")).subarray(0, 4096))).toBe(false);
    expect(looksLikeEasyLmCheckpoint(new TextEncoder().encode('{"dim": 64}'))).toBe(false);
  });

  it("rejects a truncated file, naming the record", async () => {
    const dir = await makeTempDir();
    const path = join(dir, "diff");
    copyFileSync(DIFF, path);
    truncateSync(path, readFileSync(DIFF).length - 100);
    await expect(scan(path)).rejects.toThrow(/"lm_head\/kernel" runs past the end of the file \(100 bytes missing\): the file is truncated/);
  });

  it("rejects a record whose byte count disagrees with its shape", async () => {
    const bytes = Buffer.from(readFileSync(DIFF));
    // the embedding's shape [96, 64] is at bytes 0x24-0x26 (0x92 0x60 0x40): make it [96, 65]
    expect([...bytes.subarray(0x24, 0x27)]).toEqual([0x92, 0x60, 0x40]);
    bytes[0x26] = 0x41;
    const dir = await makeTempDir();
    writeFileSync(join(dir, "diff"), bytes);
    await expect(scan(join(dir, "diff"))).rejects.toThrow(/"transformer\/wte\/embedding" holds 12288 bytes, but \[96, 65\] bfloat16 is 12480/);
  });
});

describe("koala's streaming arithmetic block by block", () => {
  it("gives the same bytes in blocks of a row (a head for q/k) as in one block", async () => {
    const base = await openModel(META_BASE);
    const diff = await openRandomAccessFile(DIFF);
    try {
      const tensors = mapToHuggingFace(DIFF, await scan(DIFF), base, await attentionHeads(base));
      for (const t of tensors) {
        const parts: Uint8Array[] = [];
        for await (const chunk of recovered(t, base, diff, () => undefined, 1)) parts.push(chunk);
        const want = EXPECTED.tensors.find((w) => w.name === t.name)!;
        expect(parts.length, t.name).toBe(t.shape.length === 2 ? t.shape[0]! / (t.headRows ?? 1) : 1);
        expect(sha256(Buffer.concat(parts)), t.name).toBe(want.sha256);
      }
    } finally {
      await diff.close();
      await base.close();
    }
  });
});

describe("inspect lists an EasyLM checkpoint", () => {
  it("by its key paths, named as a file or as the folder holding it", async () => {
    for (const src of [DIFF, join(FIXTURES, "delta")]) {
      const result = await inspectModel(src);
      expect(result.format).toBe("easylm");
      expect(result.files).toEqual(["koala_tiny_diff_v2"]);
      expect(result.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }))).toEqual(EXPECTED.records.map((r) => ({ name: r.key, dtype: DTYPE[r.dtype], shape: r.shape })));
    }
  });
});

describe("koala: recovered straight to the Hugging Face layout, as EasyLM's three scripts do", () => {
  async function check(out: string) {
    const got = await readAll(out);
    expect(got.map((t) => t.name).sort()).toEqual(EXPECTED.tensors.map((t) => t.name).sort());
    for (const t of got) {
      const want = EXPECTED.tensors.find((w) => w.name === t.name)!;
      expect({ dtype: t.dtype, shape: t.shape, sha256: sha256(t.data) }, t.name).toEqual({ dtype: want.dtype, shape: want.shape, sha256: want.sha256 });
    }
  }

  it("from a Meta checkpoint: every tensor bit for bit, unverified, config and tokenizer from the base", async () => {
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: META_BASE, delta: join(FIXTURES, "delta"), target: out });
    expect(result.convention).toBe("koala");
    expect(result.verified).toBe(false);
    expect(result.notes.join("\n")).toMatch(/Koala's publishers printed no hashes/);
    // the summary's verdict says unverified once; no note repeats it
    expect(result.notes.join("\n")).not.toMatch(/unverified/);
    await check(out);
    const written = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"];
    expect(readdirSync(out).sort()).toEqual([...written, "koala-recovery.sha256"].sort());
    // the recorded digests are the files' own, in sha256sum's format
    const listed = readFileSync(join(out, "koala-recovery.sha256"), "utf8");
    expect(listed).toBe(written.map((f) => `${sha256(readFileSync(join(out, f)))}  ${f}\n`).join(""));
    // the command the summary gives, with DIR the target (a list path is read from the working directory)
    const command = /delta-weights (verify DIR --checksums DIR\/koala-recovery\.sha256)/.exec(result.notes.join("\n"))?.[1];
    expect(command).toBeDefined();
    const verify = runCli(command!.split(" ").map((arg) => arg.replace("DIR", out)));
    expect(verify.status, verify.stderr).toBe(0);
  });

  it("with a checksums list naming every file of the model: verified, the run's own digests file being a record", async () => {
    const first = join(await makeTempDir(), "first");
    await applyDelta({ base: META_BASE, delta: join(FIXTURES, "delta"), target: first });
    const list = join(first, "..", "model.sha256");
    writeFileSync(list, readFileSync(join(first, "koala-recovery.sha256")));
    const result = await applyDelta({ base: META_BASE, delta: join(FIXTURES, "delta"), target: join(first, "..", "second"), checksums: list });
    expect(result.unchecked).toEqual([]);
    expect(result.verified).toBe(true);
  });

  it("from the Hugging Face conversion of the same checkpoint: the same bytes", async () => {
    const work = await makeTempDir();
    await convertModel(META_BASE, join(work, "hf"));
    await applyDelta({ base: join(work, "hf"), delta: join(FIXTURES, "delta"), target: join(work, "out") });
    await check(join(work, "out"));
    // a rerun rewrites and records the same digests
    const first = readFileSync(join(work, "out", "koala-recovery.sha256"), "utf8");
    await applyDelta({ base: join(work, "hf"), delta: join(FIXTURES, "delta"), target: join(work, "out") });
    expect(readFileSync(join(work, "out", "koala-recovery.sha256"), "utf8")).toBe(first);
  });

  it("refuses a base of another size, naming the tensor", async () => {
    const out = join(await makeTempDir(), "out");
    await expect(applyDelta({ base: join(REPO_ROOT, "test/fixtures/meta/conventions-base"), delta: join(FIXTURES, "delta"), target: out })).rejects.toThrow(/the diff is for another model size/);
  });

  it("refuses a folder with several diffs, naming them", async () => {
    const dir = join(await makeTempDir(), "koala");
    mkdirSync(dir);
    copyFileSync(DIFF, join(dir, "koala_7b_diff_v2"));
    copyFileSync(DIFF, join(dir, "koala_13b_diff_v2"));
    await expect(applyDelta({ base: META_BASE, delta: dir, target: join(dir, "..", "out") })).rejects.toThrow(/holds 2 EasyLM checkpoints \(koala_13b_diff_v2, koala_7b_diff_v2\)/);
  });
});
