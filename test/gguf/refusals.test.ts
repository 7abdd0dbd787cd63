import { spawnSync } from "node:child_process";
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { ModelError, UsageError } from "../../src/errors.js";
import { convertModel } from "../../src/model/convert.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";
import { oneErrorLine, runCli } from "../helpers/cli.js";

const MODEL = join(REPO_ROOT, "test", "fixtures", "gguf", "model");

/** A copy of the tiny LLaMA with `change` applied to its files. */
async function variant(change: (dir: string) => void): Promise<{ dir: string; out: string }> {
  const root = await makeTempDir();
  const dir = join(root, "model");
  cpSync(MODEL, dir, { recursive: true });
  change(dir);
  return { dir, out: join(root, "out.gguf") };
}

function editConfig(dir: string, edit: (config: Record<string, unknown>) => void): void {
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  edit(config);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
}

describe("GGUF output refuses, by name and before any output, what it does not write as llama.cpp's converter does", () => {
  it("refuses another architecture", async () => {
    const { dir, out } = await variant((d) => editConfig(d, (c) => { c.architectures = ["GPTNeoXForCausalLM"]; }));
    const refused = convertModel(dir, out);
    await expect(refused).rejects.toThrow(/LLaMA-family models .* not GPTNeoXForCausalLM/);
    await expect(refused).rejects.toMatchObject({ rule: "gguf-architecture" });
    expect(existsSync(out)).toBe(false);
  });

  it("refuses a BPE tokenizer (tokenizer.json without tokenizer.model)", async () => {
    const { dir, out } = await variant((d) => {
      rmSync(join(d, "tokenizer.model"));
      writeFileSync(join(d, "tokenizer.json"), JSON.stringify({ model: { type: "BPE" } }));
    });
    const err = await convertModel(dir, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).rule).toBe("gguf-tokenizer");
    expect((err as Error).message).toMatch(/no tokenizer\.model: GGUF output is written for SentencePiece tokenizers only \(it has only tokenizer\.json, a BPE tokenizer/);
    expect(readdirSync(join(dir, ".."))).toEqual(["model"]);
  });

  it("a refused Q8_0 convert leaves nothing running: the library caller's process ends by itself", async () => {
    // Q8_0 output starts its worker thread before the model is planned; a refusal must not leave it holding the process.
    const { dir, out } = await variant((d) => editConfig(d, (c) => { c.architectures = ["GPTNeoXForCausalLM"]; }));
    const script = `import { convertModel } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, "dist", "api.js")).href)};
      await convertModel(${JSON.stringify(dir)}, ${JSON.stringify(out)}, { outtype: "q8_0" }).catch((e) => console.log(e.rule));`;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
    expect(run.signal, "still running after 20 s").toBeNull();
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe("gguf-architecture");
    expect(readdirSync(join(dir, ".."))).toEqual(["model"]);
  });

  it("refuses rope scaling it does not write", async () => {
    const { dir, out } = await variant((d) => editConfig(d, (c) => { c.rope_scaling = { type: "linear", factor: 2 }; }));
    const refused = convertModel(dir, out);
    await expect(refused).rejects.toThrow(/rope scaling \(linear\)/);
    await expect(refused).rejects.toMatchObject({ rule: "gguf-architecture" });
    expect(existsSync(out)).toBe(false);
  });

  it("refuses a tensor the LLaMA graph has no name for", async () => {
    const { dir, out } = await variant((d) => editConfig(d, (c) => { c.num_hidden_layers = 2; }));
    // Rename a tensor in the safetensors header (same length, so offsets stay valid).
    const path = join(dir, "model.safetensors");
    const bytes = readFileSync(path);
    const text = bytes.toString("latin1").replace("model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.xx_proj.weight");
    writeFileSync(path, Buffer.from(text, "latin1"));
    const refused = convertModel(dir, out);
    await expect(refused).rejects.toThrow(/tensor "model\.layers\.1\.mlp\.xx_proj\.weight" is not part of a LLaMA model/);
    await expect(refused).rejects.toMatchObject({ rule: "gguf-tensor" });
    expect(existsSync(out)).toBe(false);
  });

  it("--outtype without GGUF output is a usage error", async () => {
    const root = await makeTempDir();
    await expect(convertModel(MODEL, join(root, "x.safetensors"), { outtype: "q8_0" })).rejects.toThrow(UsageError);
  });
});

describe("convert CLI", () => {
  it("OUT ending in .gguf writes GGUF with --outtype; an unknown --outtype is a usage error", async () => {
    const root = await makeTempDir();
    const ok = runCli(["convert", MODEL, join(root, "m.gguf"), "--outtype", "q8_0", "--json"]);
    expect(ok.status, ok.stderr).toBe(0);
    const result = JSON.parse(ok.stdout) as { outtype: string; format: string; files: { path: string }[] };
    expect(result.outtype).toBe("q8_0");
    // the format OUT's name claimed, said by its registry name
    expect(result.format).toBe("gguf");
    expect(result.files.map((f) => f.path)).toEqual(["m.gguf"]);
    expect(readFileSync(join(root, "m.gguf")).subarray(0, 4).toString()).toBe("GGUF");
    const bad = runCli(["convert", MODEL, join(root, "n.gguf"), "--outtype", "q4_k"]);
    expect(bad.status).toBe(2);
  });

  it("--format gguf with a non-.gguf name, default outtype f16", async () => {
    const root = await makeTempDir();
    const ok = runCli(["convert", MODEL, join(root, "model.bin.out"), "--format", "gguf", "--json"]);
    expect(ok.status, ok.stderr).toBe(0);
    expect((JSON.parse(ok.stdout) as { outtype: string }).outtype).toBe("f16");
    // without --json, the summary names the format by the registry's title
    const plain = runCli(["convert", MODEL, join(root, "plain.bin.out"), "--format", "gguf"]);
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/^wrote 1 file to .*plain\.bin\.out \(GGUF, --outtype f16\): /);
  });

  it("a refused model exits 1 with one line", async () => {
    const { dir, out } = await variant((d) => editConfig(d, (c) => { c.architectures = ["Qwen2ForCausalLM"]; }));
    const run = runCli(["convert", dir, out]);
    expect(run.status).toBe(1);
    expect(oneErrorLine(run)).toMatch(/not Qwen2ForCausalLM/);
  });
});

describe("hostile GGUF inputs", () => {
  it("refuses a config whose vocab_size would make a giant token list, before allocating it", async () => {
    const { dir, out } = await variant((d) => editConfig(d, (c) => { c.vocab_size = 2_000_000_000; }));
    const refused = convertModel(dir, out);
    await expect(refused).rejects.toThrow(/vocab_size 2000000000 is more than the 524288 tokens/);
    await expect(refused).rejects.toMatchObject({ rule: "gguf-config" });
  });

  it("refuses a tokenizer.model whose piece length runs past the file", async () => {
    const { dir, out } = await variant((d) => writeFileSync(join(d, "tokenizer.model"), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x41])));
    await expect(convertModel(dir, out)).rejects.toThrow(/tokenizer\.model is not a SentencePiece model: a field runs past its message/);
  });
});
