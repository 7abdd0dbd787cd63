/**
 * What a delta's files say beyond its tensors, read as its publisher's script
 * reads them: the added tokens, wherever a tokenizer records them (a later
 * transformers keeps them in tokenizer.json and tokenizer_config.json, not in
 * added_tokens.json); the dtype the script loads the models in; and a
 * config.json that agrees with the tensors written. Fixtures:
 * test/fixtures/evidence (scripts/make-evidence-fixtures.py, PyTorch),
 * built on test/fixtures/conventions; the deltas tested are those shards
 * with the side files named in each test.
 */
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyDelta } from "../../src/delta/apply-delta.js";
import { TORCH_DTYPE } from "../../src/delta/engine/model-config.js";
import { runCli } from "../helpers/cli.js";
import { readAll } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const CONVENTIONS = join(REPO_ROOT, "test/fixtures/conventions");
const EVIDENCE = join(REPO_ROOT, "test/fixtures/evidence");
const BASE = join(CONVENTIONS, "base/safetensors");
const BASE_BF16 = join(EVIDENCE, "fastchat-bf16/base");
const BF16_DELTA = join(EVIDENCE, "fastchat-bf16/delta");

interface RecordedTensor { name: string; dtype: string; shape: number[]; sha256: string }
interface Run { id: string; convention: string; tensors: RecordedTensor[]; config: { vocab_size: number; torch_dtype: string } }

async function run(id: string): Promise<Run> {
  const expected = JSON.parse(await readFile(join(EVIDENCE, "expected.json"), "utf8")) as { runs: Run[] };
  return expected.runs.find((r) => r.id === id)!;
}

/** A delta directory: the weight files (and index) of `shardsOf`, plus the named side files from their folders. */
async function composeDelta(shardsOf: string, sideFiles: Record<string, string>): Promise<string> {
  const dir = join(await makeTempDir(), "delta");
  await mkdir(dir);
  for (const f of await readdir(shardsOf)) if (f.endsWith(".bin") || f.endsWith(".index.json")) await copyFile(join(shardsOf, f), join(dir, f));
  for (const [name, from] of Object.entries(sideFiles)) await copyFile(join(from, name), join(dir, name));
  return dir;
}

/** Every output tensor bit-identical to the publisher's script's, and the config agreeing with them. */
async function expectRecovered(out: string, want: Run): Promise<Record<string, unknown>> {
  const got = await readAll(out);
  expect(got.map((t) => t.name).sort()).toEqual(want.tensors.map((t) => t.name).sort());
  for (const t of got) {
    const w = want.tensors.find((x) => x.name === t.name)!;
    expect({ dtype: t.dtype, shape: t.shape, sha256: sha256Bytes(t.data) }, t.name).toEqual({ dtype: w.dtype, shape: w.shape, sha256: w.sha256 });
  }
  const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")) as Record<string, unknown>;
  const embedding = got.find((t) => t.name === "model.embed_tokens.weight")!;
  expect({ vocab_size: config.vocab_size, torch_dtype: config.torch_dtype }).toEqual({ vocab_size: want.config.vocab_size, torch_dtype: want.config.torch_dtype });
  expect(config.vocab_size).toBe(embedding.shape[0]);
  expect(config.torch_dtype).toBe((TORCH_DTYPE as Record<string, string>)[embedding.dtype]);
  return config;
}

const ALPACA_LATER = join(EVIDENCE, "alpaca-4.35");
const V0_LATER = join(EVIDENCE, "fastchat-v0-4.35");
const V0 = join(CONVENTIONS, "fastchat-v0/delta");

describe("added tokens, wherever the tokenizer files record them", () => {
  it.each([
    ["tokenizer.json, tokenizer_config.json and special_tokens_map.json (as transformers 4.35 saves them)", ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]],
    ["tokenizer.json's added_tokens alone", ["tokenizer.json"]],
    ["tokenizer_config.json's added_tokens_decoder alone", ["tokenizer_config.json"]],
  ])("an Alpaca diff without added_tokens.json, [PAD] in %s, is recovered by Alpaca's rule", async (_what, tokenizerFiles) => {
    const sides = Object.fromEntries(["config.json", "generation_config.json", ...tokenizerFiles].map((f) => [f, ALPACA_LATER]));
    const delta = await composeDelta(join(CONVENTIONS, "alpaca/delta"), sides);
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: BASE, delta, target: out });
    expect(result.convention).toBe("alpaca");
    expect(result.reason).toMatch(new RegExp(`"\\[PAD\\]" at row 512 \\(${tokenizerFiles[0]!.replace(".", "\\.")}`));
    await expectRecovered(out, await run("alpaca-4.35"));
    // The diff's config agrees with its tensors: copied as its publisher wrote it.
    expect(await readFile(join(out, "config.json"), "utf8")).toBe(await readFile(join(ALPACA_LATER, "config.json"), "utf8"));
  });

  it("refuses a delta whose tokenizer files place the added token at different ids, naming both files", async () => {
    const delta = await composeDelta(join(CONVENTIONS, "alpaca/delta"), { "config.json": ALPACA_LATER, "tokenizer.json": ALPACA_LATER, "tokenizer_config.json": ALPACA_LATER });
    const config = await readFile(join(delta, "tokenizer_config.json"), "utf8");
    await writeFile(join(delta, "tokenizer_config.json"), config.replace('"512": {', '"513": {'));
    const out = join(await makeTempDir(), "out");
    const cli = runCli(["--base", BASE, "--delta", delta, "--target", out], "apply-delta");
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/^error: .*its tokenizer files disagree: tokenizer\.json put? "\[PAD\]" at id 512, tokenizer_config\.json at id 513\n$/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });
});

describe("FastChat v0 without added_tokens.json", () => {
  it.each([
    ["its own side files but added_tokens.json (special_tokens_map.json's pad_token)", { "config.json": V0, "special_tokens_map.json": V0, "tokenizer_config.json": V0 }],
    ["its side files as transformers 4.35 saves them", { "config.json": V0_LATER, "tokenizer.json": V0_LATER, "tokenizer_config.json": V0_LATER, "special_tokens_map.json": V0_LATER }],
    ["no tokenizer file, config.json with vocab_size 513", { "config.json": V0 }],
  ])("with %s is recovered by the v0 rule, its config the base's with vocab_size 513 in float16", async (_what, sides) => {
    const delta = await composeDelta(V0, sides);
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: BASE, delta, target: out });
    expect(result.convention).toBe("fastchat-v0");
    await expectRecovered(out, await run("fastchat-v0-4.35"));
    // What v0.1.10's base.save_pretrained writes after resize_token_embeddings: the base's config, the vocabulary grown.
    const base = await readFile(join(BASE, "config.json"), "utf8");
    expect(await readFile(join(out, "config.json"), "utf8")).toBe(base.replace('"vocab_size": 512', '"vocab_size": 513'));
    expect(result.notes.join("\n")).toMatch(/config\.json from the base with vocab_size 512 -> 513/);
  });

  it("with nothing that says what its new row is, is refused with a line to pass --convention, and applied when it is passed", async () => {
    const delta = await composeDelta(V0, { "config.json": V0 });
    const config = JSON.parse(await readFile(join(delta, "config.json"), "utf8")) as Record<string, unknown>;
    delete config.vocab_size;
    await writeFile(join(delta, "config.json"), JSON.stringify(config, null, 2) + "\n");
    const out = join(await makeTempDir(), "out");
    const refused = runCli(["--base", BASE, "--delta", delta, "--target", out], "apply-delta");
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^error: .*one vocabulary row more than the base \(513 against 512\), but no tokenizer file says which token row 512 is .*pass --convention fastchat-v0\n$/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
    const forced = runCli(["--base", BASE, "--delta", delta, "--target", out, "--convention", "fastchat-v0"], "apply-delta");
    expect(forced.status, forced.stderr).toBe(0);
    await expectRecovered(out, await run("fastchat-v0-4.35"));
  });

  it("is refused when its config.json's vocab_size disagrees with its rows", async () => {
    const delta = await composeDelta(V0, { "config.json": V0, "special_tokens_map.json": V0 });
    await writeFile(join(delta, "config.json"), (await readFile(join(delta, "config.json"), "utf8")).replace('"vocab_size": 513', '"vocab_size": 512'));
    const cli = runCli(["--base", BASE, "--delta", delta, "--target", join(await makeTempDir(), "out"), "--convention", "fastchat-v0"], "apply-delta");
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/config\.json says vocab_size 512, but its model\.embed_tokens\.weight has 513 rows/);
  });
});

describe("dtypes as FastChat's script loads them (torch_dtype=torch.float16)", () => {
  it.each([
    ["a bfloat16 delta on a float16 base", "fastchat-bf16-delta", BASE, BF16_DELTA],
    ["a float16 delta on a bfloat16 base", "fastchat-bf16-base", BASE_BF16, join(CONVENTIONS, "fastchat/delta")],
    ["a bfloat16 delta on a bfloat16 base", "fastchat-bf16-both", BASE_BF16, BF16_DELTA],
  ])("%s: both rounded to float16, then added; float16 out, and config.json says so", async (_what, id, base, delta) => {
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base, delta, target: out });
    expect(result.convention).toBe("fastchat");
    await expectRecovered(out, await run(id));
    const baseConfig = await readFile(join(base, "config.json"), "utf8");
    // The base's config, as FastChat's base.save_pretrained writes it: torch_dtype from the fp16 model, nothing else changed.
    expect(await readFile(join(out, "config.json"), "utf8")).toBe(baseConfig.replace('"torch_dtype": "bfloat16"', '"torch_dtype": "float16"'));
  });

  it("reports the conversion and the config change in the summary", async () => {
    const out = join(await makeTempDir(), "out");
    const result = await applyDelta({ base: BASE_BF16, delta: BF16_DELTA, target: out });
    const notes = result.notes.join("\n");
    expect(notes).toMatch(/21 BF16 tensors of the delta converted to F16 before the rule, as the publisher's script loads them with torch_dtype float16/);
    expect(notes).toMatch(/config\.json from the base with torch_dtype "bfloat16" -> "float16"/);
  });
});

describe("a config that cannot describe its model", () => {
  it("an Alpaca diff whose config.json says vocab_size 512 for 513 rows is refused before anything is written", async () => {
    const delta = await composeDelta(join(CONVENTIONS, "alpaca/delta"), { "config.json": ALPACA_LATER, "tokenizer.json": ALPACA_LATER });
    await writeFile(join(delta, "config.json"), (await readFile(join(delta, "config.json"), "utf8")).replace('"vocab_size": 513', '"vocab_size": 512'));
    const out = join(await makeTempDir(), "out");
    const cli = runCli(["--base", BASE, "--delta", delta, "--target", out], "apply-delta");
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/^error: the delta's config\.json \(.*\) says vocab_size 512, but the model it came with has 513 embedding rows: transformers cannot load that model/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
    await rm(delta, { recursive: true });
  });
});
