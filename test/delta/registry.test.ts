/**
 * The convention registry and the properties conventions declare to
 * apply-delta (src/delta/conventions/registry.ts, types.ts): the names list
 * comes from the registry, a signature file (delta.json) excludes every
 * other convention, --expect-sum belongs to conventions with sums, and
 * --help lists each convention with its line.
 */
import { cp, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { CONVENTION_NAMES, CONVENTION_SUMMARIES, chooseConvention, expectedSum, loadConventions, refuseUnacceptedOptions } from "../../src/delta/conventions/registry.js";
import { LocalDeltaView } from "../../src/delta/conventions/view.js";
import { runCli } from "../helpers/cli.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeSmallDelta, type SmallDelta } from "../helpers/small-delta.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const FASTCHAT = join(REPO_ROOT, "test/fixtures/conventions/fastchat/delta");
const HF_BASE = join(REPO_ROOT, "test/fixtures/conventions/base/safetensors");

let work: string;
let small: SmallDelta;

beforeAll(async () => {
  work = await makeTempDir();
  small = await makeSmallDelta(work);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("the convention registry", () => {
  it("loads every convention it names, in the order --convention lists them", async () => {
    const conventions = await loadConventions();
    expect(conventions.map((c) => c.name)).toEqual([...CONVENTION_NAMES]);
    expect(new Set(CONVENTION_NAMES).size).toBe(CONVENTION_NAMES.length);
    expect(CONVENTION_SUMMARIES.map((s) => s.name)).toEqual([...CONVENTION_NAMES]);
    for (const { name, summary } of CONVENTION_SUMMARIES) expect(summary.length, name).toBeGreaterThan(20);
  });

  it("declares delta.json as the signature of our own format only, and exactness with it", async () => {
    const conventions = await loadConventions();
    expect(conventions.filter((c) => c.signatureFile !== undefined).map((c) => [c.name, c.signatureFile])).toEqual([["delta-weights", "delta.json"]]);
    expect(conventions.filter((c) => c.exact === true).map((c) => c.name)).toEqual(["delta-weights"]);
  });

  it("takes --expect-sum only for a convention with published sums (Alpaca's), with its tolerance", async () => {
    const conventions = await loadConventions();
    expect(conventions.filter((c) => c.sums !== undefined).map((c) => [c.name, c.sums!.tolerance])).toEqual([["alpaca", 1e-2]]);
    const byName = (name: string) => conventions.find((c) => c.name === name)!;
    expect(() => refuseUnacceptedOptions(byName("alpaca"), ["checksums", "expectSum"])).not.toThrow();
    expect(() => refuseUnacceptedOptions(byName("fastchat"), ["expectSum"])).toThrow(UsageError);
    expect(() => refuseUnacceptedOptions(byName("fastchat"), ["expectSum"])).toThrow(/--expect-sum does not apply to the fastchat convention.*it takes --checksums/);
    expect(() => refuseUnacceptedOptions(byName("alpaca"), ["expectSum"])).not.toThrow();
  });

  it("a published sum belongs to its convention: given, it takes Alpaca's tolerance; known for a release whose files follow another convention, it is refused", async () => {
    const conventions = await loadConventions();
    const byName = (name: string) => conventions.find((c) => c.name === name)!;
    // A FastChat-shaped delta in a folder named as a clone of Stanford's Alpaca diff, whose sum is published.
    const named = join(work, "clone/alpaca-7b-wdiff");
    await cp(FASTCHAT, named, { recursive: true });
    const view = new LocalDeltaView({ path: named, source: named }, { path: HF_BASE, source: HF_BASE });
    try {
      expect(await expectedSum(byName("alpaca"), view, 12.5)).toEqual({ value: 12.5, tolerance: 1e-2, from: "--expect-sum" });
      expect(await expectedSum(byName("alpaca"), view, undefined)).toMatchObject({ value: 50637.1836, tolerance: 1e-2, from: expect.stringMatching(/^Stanford Alpaca's published sum \(weight_diff\.py; picked by the delta's directory name/) as unknown });
      await expect(expectedSum(byName("fastchat"), view, undefined)).rejects.toThrow(/is a release with a published integrity sum \(Stanford Alpaca's.*\), but its files follow the fastchat convention, which has none/);
    } finally {
      await view.close();
    }
    const plain = new LocalDeltaView({ path: FASTCHAT, source: FASTCHAT }, { path: HF_BASE, source: HF_BASE });
    try {
      expect(await expectedSum(byName("fastchat"), plain, undefined)).toBeUndefined();
    } finally {
      await plain.close();
    }
  });

  it("a delta holding delta.json follows our format: another convention named with --convention is refused, saying why", async () => {
    const view = new LocalDeltaView({ path: small.delta, source: small.delta }, { path: small.base, source: small.base });
    try {
      await expect(chooseConvention(view, "fastchat")).rejects.toThrow(/--convention fastchat does not fit .*: it has delta\.json \(the delta-weights convention's own file\)/);
      const chosen = await chooseConvention(view);
      expect(chosen.convention.name).toBe("delta-weights");
      expect(chosen.recognition.reason).toMatch(/^delta\.json, format /);
    } finally {
      await view.close();
    }
  });

  it("a delta without delta.json is not claimed by our format, forced or not", async () => {
    const view = new LocalDeltaView({ path: FASTCHAT, source: FASTCHAT }, { path: HF_BASE, source: HF_BASE });
    try {
      await expect(chooseConvention(view, "delta-weights")).rejects.toThrow(/--convention delta-weights does not fit .*: no delta\.json/);
      expect((await chooseConvention(view)).convention.name).toBe("fastchat");
    } finally {
      await view.close();
    }
  });

  it("apply-delta --help lists every convention with its line, in recognition order", () => {
    const run = runCli(["apply", "--help"]);
    expect(run.status).toBe(0);
    const listed = run.stdout.split("\n").map((line) => /^ {2}([a-z0-9-]+) +(\S.*)$/.exec(line)).filter((m) => m !== null && (CONVENTION_NAMES as readonly string[]).includes(m[1]!));
    expect(listed.map((m) => m![1])).toEqual([...CONVENTION_NAMES]);
    for (const m of listed) expect(m![2]).toBe(CONVENTION_SUMMARIES.find((s) => s.name === m![1])!.summary);
  });
});
