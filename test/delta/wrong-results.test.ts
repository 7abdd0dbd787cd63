/**
 * Regression tests for results that were reported as success although wrong:
 * each test is named after the failure it stops.
 */
import { spawn, spawnSync } from "node:child_process";
import { cp, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { runCli } from "../helpers/cli.js";
import { finetune, noise, readAll, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** Four 16 MB F16 tensors in four shards: an apply that takes long enough to run a second one beside it. */
function bigModel(): Tensor[] {
  const next = rng(42);
  return [0, 1, 2, 3].map((i) => ({ name: `layers.${i}.weight`, dtype: "F16" as const, shape: [2048, 4096], data: noise("F16", 2048 * 4096, 0.02, next) }));
}

/** A small model with an integer tensor, so both arithmetic and XOR paths run. */
function smallModel(seed: number): Tensor[] {
  const next = rng(seed);
  return [
    { name: "embed.weight", dtype: "F16", shape: [64, 32], data: noise("F16", 64 * 32, 0.02, next) },
    { name: "norm.weight", dtype: "F32", shape: [32], data: noise("F32", 32, 1, next) },
    { name: "position_ids", dtype: "I64", shape: [8], data: new Uint8Array(new BigInt64Array([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n]).buffer) },
  ];
}

async function expectedFiles(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const f of await readdir(dir)) out.set(f, sha256Bytes(await readFile(join(dir, f))));
  return out;
}

async function visibleFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => !f.startsWith(".")).sort();
}

function oneErrorLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  return lines[0]!;
}

let work: string;
let base: string;
let target: string;
let delta: string;

beforeAll(async () => {
  work = await makeTempDir();
  base = join(work, "base");
  target = join(work, "target");
  delta = join(work, "delta");
  const tensors = smallModel(1);
  await writeModel(base, tensors, { companions: { "config.json": "{\"vocab_size\": 64}\n" } });
  await writeModel(target, finetune(tensors, { seed: 2 }), { maxShardBytes: 3000, companions: { "config.json": "{\"vocab_size\": 64}\n" } });
  await makeDelta({ base, target, delta });
});

describe("two applies into one target", () => {
  it("two real runs racing: each either finishes verified or says another run holds the target; the files are exact", async () => {
    const dir = await makeTempDir();
    const tensors = bigModel();
    await writeModel(join(dir, "base"), tensors, { maxShardBytes: 16 * 1024 * 1024 + 1 });
    await writeModel(join(dir, "target"), finetune(tensors, { seed: 5 }), { maxShardBytes: 16 * 1024 * 1024 + 1 });
    await makeDelta({ base: join(dir, "base"), target: join(dir, "target"), delta: join(dir, "delta") });
    const out = join(dir, "out");
    const args = ["--base", join(dir, "base"), "--delta", join(dir, "delta"), "--target", out, "--json"];

    const first = spawn(process.execPath, [join(REPO_ROOT, "bin/apply-delta"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let firstOut = "";
    first.stdout.on("data", (b: Buffer) => { firstOut += b.toString(); });
    const firstExit = new Promise<number | null>((resolve) => first.on("exit", (code) => resolve(code)));
    // Start the second once the first is writing.
    while (first.exitCode === null && !(await readdir(out).catch(() => [] as string[])).some((n) => n.endsWith(".partial"))) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const second = runCli(args, "apply-delta");
    expect(await firstExit).toBe(0);
    expect((JSON.parse(firstOut) as { verified: boolean }).verified).toBe(true);
    if (second.status === 0) {
      // It reached the target only after the first had finished: it found every file in place.
      const result = JSON.parse(second.stdout) as { verified: boolean; files: Record<string, { status: string }> };
      expect(result.verified).toBe(true);
      expect(Object.values(result.files).every((f) => f.status === "kept")).toBe(true);
    } else {
      expect(second.status).toBe(1);
      expect(oneErrorLine(second.stderr)).toMatch(new RegExp(`another apply-delta \\(pid ${first.pid}\\) is writing to `));
    }
    const expected = await expectedFiles(join(dir, "target"));
    expect(await visibleFiles(out)).toEqual([...expected.keys()].sort());
    for (const [f, sha] of expected) expect(sha256Bytes(await readFile(join(out, f))), f).toBe(sha);
    // The lock and the job record are gone with their runs.
    expect((await readdir(out)).filter((f) => f.startsWith("."))).toEqual([]);
  });

  it("refuses a run while another live run holds the target's lock, naming it", async () => {
    const out = join(await makeTempDir(), "out");
    await mkdir(out);
    const holder = spawn(process.execPath, ["-e", "setTimeout(() => undefined, 60_000)"], { stdio: "ignore" });
    try {
      await writeFile(join(out, ".delta-weights.lock"), JSON.stringify({ pid: holder.pid, host: hostname(), command: "apply-delta", nonce: "x" }));
      const run = runCli(["--base", base, "--delta", delta, "--target", out], "apply-delta");
      expect(run.status).toBe(1);
      expect(oneErrorLine(run.stderr)).toMatch(new RegExp(`another apply-delta \\(pid ${holder.pid}\\) is writing to ${out.replaceAll("/", "\\/")}`));
      expect(await visibleFiles(out)).toEqual([]);
    } finally {
      holder.kill();
    }
  });

  it("takes over the lock of a run that was killed", async () => {
    const out = join(await makeTempDir(), "out");
    await mkdir(out);
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    const deadPid = Number(dead.stdout);
    await writeFile(join(out, ".delta-weights.lock"), JSON.stringify({ pid: deadPid, host: hostname(), command: "apply-delta", nonce: "x" }));
    // and a temporary file that run left behind
    await writeFile(join(out, `.model.safetensors.${deadPid}-00000000.partial`), "half a file");
    const run = runCli(["--base", base, "--delta", delta, "--target", out], "apply-delta");
    expect(run.status, run.stderr).toBe(0);
    expect((await readdir(out)).filter((f) => f.startsWith("."))).toEqual([]);
  });

  it("gives every writer a temporary name of its own", async () => {
    const { AtomicFile } = await import("../../src/io/atomic-file.js");
    const dest = join(await makeTempDir(), "model.safetensors");
    const a = await AtomicFile.create(dest);
    const b = await AtomicFile.create(dest);
    expect(a.tempPath).not.toBe(b.tempPath);
    expect(a.tempPath).toMatch(new RegExp(`\\.model\\.safetensors\\.${process.pid}-[0-9a-f]+\\.partial$`));
    await a.abort();
    await b.abort();
  });
});

describe("--checksums", () => {
  it("does not call a legacy result verified when the list leaves out an output file", async () => {
    const dir = await makeTempDir();
    const first = join(dir, "first");
    const legacy = join(REPO_ROOT, "test/fixtures/legacy-integers");
    expect(runCli(["--base", join(legacy, "base"), "--delta", join(legacy, "delta"), "--target", first], "apply-delta").status).toBe(0);
    const listed = spawnSync("sh", ["-c", "sha256sum *"], { cwd: first, encoding: "utf8" }).stdout;
    const partial = listed.split("\n").filter((l) => !l.endsWith("config.json")).join("\n");
    await writeFile(join(dir, "PARTIAL"), partial);

    const run = runCli(["--base", join(legacy, "base"), "--delta", join(legacy, "delta"), "--target", join(dir, "second"), "--checksums", join(dir, "PARTIAL")], "apply-delta");
    expect(run.status).toBe(0);
    expect(run.stdout).not.toMatch(/^verified/m);
    expect(run.stdout).toMatch(/^unverified: 1 output file not covered by any check \(config\.json\)/);
    const json = runCli(["--base", join(legacy, "base"), "--delta", join(legacy, "delta"), "--target", join(dir, "third"), "--checksums", join(dir, "PARTIAL"), "--json"], "apply-delta");
    const result = JSON.parse(json.stdout) as { verified: boolean; unchecked: string[] };
    expect(result.verified).toBe(false);
    expect(result.unchecked).toEqual(["config.json"]);
  });

  it("is checked for a delta with delta.json: a list of wrong hashes is refused before anything is written", async () => {
    const dir = await makeTempDir();
    const lines = [...(await expectedFiles(target))].map(([f, sha]) => `${sha}  ${f}`);
    await writeFile(join(dir, "RIGHT"), lines.join("\n") + "\n");
    const ok = runCli(["--base", base, "--delta", delta, "--target", join(dir, "ok"), "--checksums", join(dir, "RIGHT")], "apply-delta");
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^verified/);

    const wrongList = lines.map((l, i) => (i === 0 ? "0".repeat(64) + l.slice(64) : l));
    await writeFile(join(dir, "WRONG"), wrongList.join("\n") + "\n");
    const out = join(dir, "wrong");
    const bad = runCli(["--base", base, "--delta", delta, "--target", out, "--checksums", join(dir, "WRONG")], "apply-delta");
    expect(bad.status).toBe(1);
    expect(oneErrorLine(bad.stderr)).toMatch(/WRONG says .* has sha256 0{16}\.\.\., delta\.json says [0-9a-f]{16}\.\.\.: the list and the delta disagree/);
    expect(await visibleFiles(out)).toEqual([]);

    await writeFile(join(dir, "EXTRA"), `${"1".repeat(64)}  not-in-the-delta.bin\n`);
    const extra = runCli(["--base", base, "--delta", delta, "--target", join(dir, "extra"), "--checksums", join(dir, "EXTRA")], "apply-delta");
    expect(extra.status).toBe(1);
    expect(oneErrorLine(extra.stderr)).toMatch(/lists not-in-the-delta\.bin, which this delta does not produce/);
  });
});

describe("a tampered delta.json", () => {
  it("says delta.json itself disagrees with the delta when every delta file and base tensor match but a target sha256 was altered", async () => {
    const dir = await makeTempDir();
    const tampered = join(dir, "delta");
    await cp(delta, tampered, { recursive: true });
    const manifest = JSON.parse(await readFile(join(tampered, "delta.json"), "utf8")) as { target: { files: Record<string, { sha256: string }> } };
    const shard = Object.keys(manifest.target.files).find((f) => f.endsWith(".safetensors"))!;
    manifest.target.files[shard]!.sha256 = "f".repeat(64);
    await writeFile(join(tampered, "delta.json"), JSON.stringify(manifest, null, 1));
    const out = join(dir, "out");
    const run = runCli(["--base", base, "--delta", tampered, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    const line = oneErrorLine(run.stderr);
    expect(line).toContain(shard);
    expect(line).toMatch(/although every delta file and base tensor matched: .*delta\.json disagrees with the delta it came with \(altered, or from another delta\)/);
    expect(await visibleFiles(out)).not.toContain(shard);
  });
});

describe("swapped inputs", () => {
  it("refuses --base and --delta given the wrong way round, saying they look swapped", async () => {
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", delta, "--delta", target, "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run.stderr)).toMatch(/--base .* holds delta\.json.*--base and --delta look swapped/);
    expect(await visibleFiles(out)).toEqual([]);
  });

  it("refuses a delta given to make-delta as its base or target", async () => {
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", delta, "--target", target, "--delta", out], "make-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run.stderr)).toMatch(/--base .* holds delta\.json: it is a delta, not a model/);
  });
});

describe("legacy deltas follow their publisher's arithmetic", () => {
  it("adds integer and bool tensors as torch does (wrap-around, logical or), not by XOR", async () => {
    const fixture = join(REPO_ROOT, "test/fixtures/legacy-integers");
    const expected = JSON.parse(await readFile(join(fixture, "expected.json"), "utf8")) as { recovered: Record<string, { dtype: string; shape: number[]; sha256: string }> };
    const out = join(await makeTempDir(), "out");
    const run = runCli(["--base", join(fixture, "base"), "--delta", join(fixture, "delta"), "--target", out], "apply-delta");
    expect(run.status, run.stderr).toBe(0);
    const got = await readAll(out);
    expect(got.map((t) => t.name).sort()).toEqual(Object.keys(expected.recovered).sort());
    for (const t of got) {
      expect({ dtype: t.dtype, shape: t.shape, sha256: sha256Bytes(t.data) }, t.name).toEqual(expected.recovered[t.name]);
    }
  });

  it("refuses a delta that lacks a tensor the base has, naming it", async () => {
    const dir = await makeTempDir();
    const fixture = join(REPO_ROOT, "test/fixtures/legacy-integers");
    const baseTensors = await readAll(join(fixture, "base"));
    await writeModel(join(dir, "base"), [...baseTensors, { name: "model.extra.weight", dtype: "F16", shape: [4], data: new Uint8Array(8) }]);
    const out = join(dir, "out");
    const run = runCli(["--base", join(dir, "base"), "--delta", join(fixture, "delta"), "--target", out], "apply-delta");
    expect(run.status).toBe(1);
    expect(oneErrorLine(run.stderr)).toMatch(/has no tensor "model\.extra\.weight", which the base .* has/);
    expect(await visibleFiles(out)).toEqual([]);
  });

  it("does not require the rotary inv_freq buffers an older base conversion holds", async () => {
    const dir = await makeTempDir();
    const fixture = join(REPO_ROOT, "test/fixtures/legacy-integers");
    const baseTensors = await readAll(join(fixture, "base"));
    const invFreq = { name: "model.layers.0.self_attn.rotary_emb.inv_freq", dtype: "F32" as const, shape: [2], data: new Uint8Array(new Float32Array([1, 0.01]).buffer) };
    await writeModel(join(dir, "base"), [...baseTensors, invFreq]);
    await cp(join(fixture, "delta"), join(dir, "delta"), { recursive: true });
    const run = runCli(["--base", join(dir, "base"), "--delta", join(dir, "delta"), "--target", join(dir, "out"), "--json"], "apply-delta");
    expect(run.status, run.stderr).toBe(0);
    expect((JSON.parse(run.stdout) as { dropped: string[] }).dropped).toEqual([invFreq.name]);
    await rm(join(dir, "out"), { recursive: true });
  });
});
