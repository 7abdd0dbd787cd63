/**
 * The recovery engine's gate for inputs still downloading: an output that
 * nothing the publisher gave can check waits, under its temporary name,
 * until every downloaded input is verified; if one fails, it never gets its
 * name. An output checked against the publisher's digest does not wait.
 */
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { OutputJob } from "../../src/io/output-guard.js";
import { recover, type RecoveryPlan } from "../../src/delta/engine/recover.js";
import { textFile } from "../../src/delta/engine/tensor-file.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

async function run(plan: RecoveryPlan, inputsSettled: Promise<void>): Promise<{ target: string; outcome: Promise<unknown> }> {
  const target = await makeTempDir();
  const job = await OutputJob.claim(target, "apply-delta");
  return { target, outcome: recover(plan, { target, job, inputsSettled, threads: 1 }) };
}

async function visible(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => !f.startsWith(".")).sort();
}

describe("outputs made from inputs still downloading", () => {
  it("an unchecked output never gets its name when a downloaded input fails its check", async () => {
    const failed = Promise.reject(new Error("pytorch_model-00002-of-00003.bin does not match its sha256"));
    failed.catch(() => undefined); // the engine observes it; this only keeps it from counting as unhandled meanwhile
    const { target, outcome } = await run({ files: [textFile("config.json", "{}\n")] }, failed);
    await expect(outcome).rejects.toThrow(/does not match its sha256/);
    expect(await visible(target)).toEqual([]);
  });

  it("an unchecked output waits for the inputs, and gets its name once they are verified", async () => {
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => { settle = resolve; });
    const { target, outcome } = await run({ files: [textFile("config.json", "{}\n")] }, settled);
    await new Promise((r) => setTimeout(r, 50));
    expect(await visible(target)).toEqual([]);
    settle();
    await outcome;
    expect(await visible(target)).toEqual(["config.json"]);
  });

  it("an output checked against the publisher's digest does not wait for the downloads", async () => {
    const never = new Promise<void>(() => undefined);
    const { target, outcome } = await run({ files: [textFile("config.json", "{}\n", { sha256: sha256("{}\n"), from: "delta.json" })] }, never);
    await outcome;
    expect(await visible(target)).toEqual(["config.json"]);
  });
});
