import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { makeDelta } from "../../src/delta/own/make-delta.js";
import { sha256Bytes } from "../helpers/sha256.js";
import { runCli } from "../helpers/cli.js";
import { finetune, noise, rng, writeModel, type Tensor } from "../helpers/finetune.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

/** Four 16 MB F16 tensors in four shards: big enough to kill a run in the middle. */
function bigModel(): Tensor[] {
  const next = rng(42);
  return [0, 1, 2, 3].map((i) => ({ name: `layers.${i}.weight`, dtype: "F16" as const, shape: [2048, 4096], data: noise("F16", 2048 * 4096, 0.02, next) }));
}

describe("apply-delta killed with SIGKILL", () => {
  it("leaves no wrong file under a final name, and the same command then finishes exactly", async () => {
    const work = await makeTempDir();
    const base = bigModel();
    await writeModel(join(work, "base"), base, { maxShardBytes: 16 * 1024 * 1024 + 1 });
    await writeModel(join(work, "target"), finetune(base, { seed: 5 }), { maxShardBytes: 16 * 1024 * 1024 + 1 });
    await makeDelta({ base: join(work, "base"), target: join(work, "target"), delta: join(work, "delta") });
    const out = join(work, "out");
    const args = ["--base", join(work, "base"), "--delta", join(work, "delta"), "--target", out, "--json"];
    const expected = new Map<string, string>();
    for (const f of await readdir(join(work, "target"))) expected.set(f, sha256Bytes(await readFile(join(work, "target", f))));

    // Kill as soon as the second shard is being written (about half way through).
    const child = spawn(process.execPath, [join(REPO_ROOT, "bin/apply-delta"), ...args], { stdio: "ignore" });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    let killed = false;
    while (!killed && child.exitCode === null) {
      const names = await readdir(out).catch(() => [] as string[]);
      if (names.some((n) => /^\.model-00002-of-00004\.safetensors\..*\.partial$/.test(n)) || names.includes("model-00002-of-00004.safetensors")) {
        child.kill("SIGKILL");
        killed = true;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(await exited).toBe("SIGKILL");

    const left = (await readdir(out)).filter((f) => !f.startsWith("."));
    expect(left.length).toBeLessThan(expected.size);
    for (const f of left) expect(sha256Bytes(await readFile(join(out, f))), f).toBe(expected.get(f));

    const again = runCli(args, "apply-delta");
    expect(again.status).toBe(0);
    const result = JSON.parse(again.stdout) as { verified: boolean; files: Record<string, { status: string }> };
    expect(result.verified).toBe(true);
    for (const f of left) expect(result.files[f]?.status, f).toBe("kept");
    const final = (await readdir(out)).sort();
    expect(final).toEqual([...expected.keys()].sort());
    for (const f of final) expect(sha256Bytes(await readFile(join(out, f))), f).toBe(expected.get(f));
  });
});
