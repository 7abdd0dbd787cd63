/**
 * Hostile checkpoints through the built CLI, as a user meets them:
 * `delta-weights inspect FILE` exits 1 with one `error:` line and no stack
 * trace, and no payload runs. The CLI runs in a scratch directory, where the
 * payloads (`touch delta-weights-payload-ran`, proven live by the fixture
 * generator under Python's pickle) would leave their marker.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixture } from "../pytorch/fixtures.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MARKER = "delta-weights-payload-ran";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "pytorch-cli-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

function inspect(file: string) {
  const result = spawnSync(process.execPath, [path.join(repoRoot, "bin", "delta-weights"), "inspect", file], {
    cwd: scratch,
    encoding: "utf8",
    env: { ...process.env, HF_HUB_OFFLINE: "1", NO_COLOR: "1" },
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

async function randomBytes(): Promise<string> {
  let seed = 0x9e3779b9;
  const bytes = new Uint8Array(65_536).map(() => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed >>> 24;
  });
  const file = path.join(scratch, "random.bin");
  await writeFile(file, bytes);
  return file;
}

async function truncated(): Promise<string> {
  const whole = await readFile(fixture("llama-state-dict.bin"));
  const file = path.join(scratch, "truncated.bin");
  await writeFile(file, whole.subarray(0, Math.floor(whole.length / 2)));
  return file;
}

describe("delta-weights inspect on hostile checkpoints", () => {
  const cases: [string, () => Promise<string>, RegExp][] = [
    ["a pickle calling os.system", async () => fixture("hostile/os-system.bin"), /os\.system, which is not allowed/],
    ["a pickle calling posix.system", async () => fixture("hostile/posix-system.bin"), /posix\.system, which is not allowed/],
    ["a pickle calling builtins.eval", async () => fixture("hostile/builtins-eval.bin"), /builtins\.eval, which is not allowed/],
    ["not a pickle", async () => fixture("hostile/not-a-pickle.bin"), /data\.pkl is not a pickle/],
    ["an empty pickle", async () => fixture("hostile/empty-pickle.bin"), /data\.pkl is empty/],
    ["a view past its storage", async () => fixture("hostile/view-past-storage.bin"), /tensor "weight" is a view past its storage/],
    ["an expanded view (stride 0)", async () => fixture("hostile/expanded-view.bin"), /tensor "weight" is a view whose elements overlap in storage/],
    ["a truncated zip", truncated, /not a zip archive|past the end of the file/],
    ["random bytes", randomBytes, /not a zip archive/],
  ];
  for (const [what, file, message] of cases) {
    it(`refuses ${what}: exit 1, one error line, no payload`, async () => {
      const run = inspect(await file());
      expect(run.status).toBe(1);
      const lines = run.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^error: Failed to read /);
      expect(lines[0]).toMatch(message);
      expect(run.stderr).not.toMatch(/\n\s+at /);
      expect(run.stdout).toBe("");
      expect(existsSync(path.join(scratch, MARKER))).toBe(false);
    });
  }

  it("reads a well-formed checkpoint (the same CLI, so the refusals above are not a blanket failure)", () => {
    const run = inspect(fixture("llama-state-dict.bin"));
    expect(run.status).toBe(0);
    expect(run.stdout).toContain("model.layers.1.mlp.down_proj.weight");
  });
});
