/**
 * The byte-codec fixtures (scripts/make-codec-fixtures.py, made with real
 * torch.save and checked against the publishers' own scripts), their
 * expected.json, and a harness that runs a codec's plan with published lists
 * made from the fixtures' own checksum files: the built-in lists describe
 * the real releases, which no test may pretend to verify.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ConventionPlan } from "../../src/delta/conventions/types.js";
import { LocalDeltaView } from "../../src/delta/conventions/view.js";
import type { PublishedList } from "../../src/delta/byte-codecs/published-lists.js";
import { recover, type RecoveredFile } from "../../src/delta/engine/recover.js";
import { parseChecksums } from "../../src/hash/checksums.js";
import { OutputJob } from "../../src/io/output-guard.js";
import { withOutputLock } from "../../src/io/output-lock.js";
import { REPO_ROOT } from "./realdata.js";

export const CODECS = join(REPO_ROOT, "test/fixtures/codecs");

interface Digests { size: number; md5: string; sha256: string }

export interface CodecsExpected {
  xor: { files: Record<string, { base: Digests | null; target: Digests | null; payload: Digests | null; payload_is?: string }>; base_only: string[]; wrong_base: { differs: string[]; decoded_sha256: Record<string, string> } };
  "xor-plain-json": {
    files: Record<string, { base: Digests | null; target: Digests | null; payload: Digests | null; payload_is: string }>;
    wrong_base_value: { differs: string[]; tensor: string; decoded_sha256: Record<string, string> };
  };
  enc: {
    chunk: number;
    key: Digests & { path: string };
    files: Record<string, { enc_name: string; plain: Digests; enc: Digests; longer_than_key: boolean }>;
    bad: { "flipped-byte": { file: string; decrypted_sha256: string }; "name-mismatch": { file: string; header_sha256: string; name_sha256: string } };
  };
  keystream_vectors: {
    key_label: string;
    plain_label: string;
    vectors: { what: string; key_size: number; plain_size: number; key_sha256: string; plain_sha256: string; enc_name: string; enc_size: number; enc_sha256: string; plain_offset_to_key_offset: [number, number][] }[];
  };
}

export const expected = JSON.parse(await readFile(join(CODECS, "expected.json"), "utf8")) as CodecsExpected;

/** A published list made from the fixtures' checksum files, as a publisher would print them. */
export async function fixtureList(options: { release: string; outputs: string; base?: string; payload?: string; repos?: string[]; fingerprints?: Record<string, string> }): Promise<PublishedList> {
  const read = async (file: string) => parseChecksums(file, await readFile(join(CODECS, file), "utf8"));
  const outputs = await read(options.outputs);
  return {
    release: options.release,
    repos: options.repos ?? [],
    printedIn: `the fixture list ${options.outputs}`,
    algorithm: outputs.algorithm,
    outputs: Object.fromEntries(outputs.digests),
    ...(options.base === undefined ? {} : { base: Object.fromEntries((await read(options.base)).digests), baseHint: "the fixture's base/" }),
    ...(options.payload === undefined ? {} : { payload: Object.fromEntries((await read(options.payload)).digests) }),
    ...(options.fingerprints === undefined ? {} : { fingerprints: options.fingerprints }),
  };
}

/** Runs a codec's plan through the engine, as applyDelta does, with the plan made by `planWith`. */
export async function recoverWith(
  planWith: (view: LocalDeltaView) => Promise<ConventionPlan>,
  base: string, delta: string, target: string,
): Promise<{ files: Map<string, RecoveredFile>; notes: string[] }> {
  const view = new LocalDeltaView({ path: delta, source: delta }, { path: base, source: base });
  try {
    const plan = await planWith(view);
    const files = await withOutputLock(target, "apply-delta", async () => {
      const job = await OutputJob.claim(target, "apply-delta", { outputs: plan.files.map((f) => f.path) });
      const files = await recover(plan, { target, job, threads: 1 });
      await job.finish();
      return files;
    });
    return { files, notes: plan.notes };
  } finally {
    await view.close();
  }
}

/** The files of `dir` under final names (temporary files start with "."). */
export async function finalFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => !f.startsWith(".")).sort();
  } catch {
    return [];
  }
}

export function sha256Of(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** expected.json's generator: SHA-256(label || j as u64 little-endian), j = 0, 1, ..., concatenated, cut to n bytes. */
export function stream(label: string, n: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(n / 32) * 32);
  const prefix = Buffer.from(label, "utf8");
  const counter = Buffer.alloc(8);
  for (let j = 0; j * 32 < n; j++) {
    counter.writeBigUInt64LE(BigInt(j));
    out.set(createHash("sha256").update(prefix).update(counter).digest(), j * 32);
  }
  return out.subarray(0, n);
}

const CHUNK = 10 * 1024 * 1024;

/**
 * The key byte point-alpaca's encrypt.py uses for plain byte `i`, written
 * from the fixtures README's formula (independently of the code under test):
 * chunk c = i / C uses segment s = c mod ceil(K / C), tiled.
 */
export function keyIndex(i: number, keySize: number): number {
  const c = Math.floor(i / CHUNK);
  const s = c % Math.ceil(keySize / CHUNK);
  const segment = Math.min(CHUNK, keySize - s * CHUNK);
  return s * CHUNK + ((i - c * CHUNK) % segment);
}

/** point-alpaca's encrypt.py, byte by byte from keyIndex: `<name>.<sha256>.enc` and its bytes. */
export function encrypt(name: string, plain: Uint8Array, key: Uint8Array): { name: string; bytes: Uint8Array } {
  const digest = createHash("sha256").update(plain).digest();
  const bytes = new Uint8Array(32 + plain.length);
  bytes.set(digest, 0);
  for (let c = 0; c * CHUNK < plain.length; c++) {
    // keyIndex within a chunk is start + (j mod segment): one lookup a chunk, then a running index.
    const first = keyIndex(c * CHUNK, key.length);
    const segment = Math.min(CHUNK, key.length - first);
    const end = Math.min(plain.length, (c + 1) * CHUNK);
    for (let i = c * CHUNK, j = 0; i < end; i++, j = j + 1 === segment ? 0 : j + 1) bytes[32 + i] = plain[i]! ^ key[first + j]!;
  }
  return { name: `${name}.${digest.toString("hex")}.enc`, bytes };
}
