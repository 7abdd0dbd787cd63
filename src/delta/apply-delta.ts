import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { DeltaError, UsageError } from "../errors.js";
import type { Outtype } from "../gguf/llama.js";
import { applyAsGguf, type GgufApplyOutput } from "./apply-gguf.js";
import { readChecksums } from "../hash/checksums.js";
import type { HashPool } from "../hash/hash-pool.js";
import { removeStalePartials } from "../io/atomic-file.js";
import { inputOf, OutputJob, refuseOverlap, type InputLocation } from "../io/output-guard.js";
import { withOutputLock } from "../io/output-lock.js";
import type { OnProgress } from "../progress.js";
import { chooseConvention } from "./conventions/registry.js";
import { LocalDeltaView } from "./conventions/view.js";
import { asLocalSource, type LocalSource } from "../model/types.js";
import { describeIdentity, identifyModel, mayBeKnownConversion } from "./identify.js";
import { publishedSum } from "./known/published-sums.js";
import { MANIFEST_FILE } from "./manifest.js";
import { addChecksumList, recover, type RecoveredFile } from "./recover.js";

export interface ApplyDeltaOptions {
  /** The base model: a local file or directory (the library's Hub front end resolves repo ids to these). */
  base: string | LocalSource;
  /** The delta: a local directory (with delta.json, or a published delta of another convention). */
  delta: string | LocalSource;
  /** Output directory. */
  target: string;
  /** A checksums list to check the outputs against. */
  checksums?: string;
  /** The convention to apply, instead of recognising it from the files. */
  convention?: string;
  /** Write into a target that holds other files (none of them is overwritten). */
  force?: boolean;
  /**
   * The integrity sum the publisher printed for the recovered model
   * (Alpaca's check: every tensor summed, within 1e-2). Known deltas' sums
   * apply without it.
   */
  expectSum?: number;
  /** Hashing threads (default: one per core but one). */
  threads?: number;
  /** "gguf": the recovered model as one GGUF file in the target (see apply-gguf.ts). */
  format?: "safetensors" | "gguf";
  /** GGUF tensor type (llama.cpp converter's --outtype). */
  outtype?: Outtype;
  /** Hash workers to use instead of starting `threads` of our own (shared with downloads; not closed here). */
  hashPool?: HashPool;
  onProgress?: OnProgress;
}

export interface ApplyDeltaResult {
  target: string;
  /** The convention applied, and why it was chosen. */
  convention: string;
  reason: string;
  /**
   * true only when every output file was checked against something the
   * publisher gave: delta.json, or a checksums list that covers every file.
   */
  verified: boolean;
  /** Output files nothing checked. */
  unchecked: string[];
  /** "manifest" for a delta-weights delta, "legacy" for a published one of another convention. */
  kind: "manifest" | "legacy";
  files: Record<string, RecoveredFile>;
  tensors: number;
  /** Base tensors the output leaves out. */
  dropped: string[];
  /** Decisions worth a line in the summary. */
  notes: string[];
  /** Elements restored by the fix-ups. */
  fixups: number;
  bytes: number;
  /** With format "gguf": the GGUF file written (the recovered files above were checked, then removed). */
  gguf?: GgufApplyOutput;
}

/** base + delta -> target, by the convention the delta's files follow, each output checked against what its publisher gave. */
export async function applyDelta(options: ApplyDeltaOptions): Promise<ApplyDeltaResult> {
  if (options.format === "gguf") {
    const { format: _format, outtype: _outtype, ...rest } = options;
    return applyAsGguf(options, (scratch) => applyDelta({ ...rest, target: scratch }));
  }
  if (options.outtype !== undefined) throw new UsageError("--outtype is for GGUF output (--format gguf)");
  const base = asLocalSource(options.base);
  const delta = asLocalSource(options.delta);
  refuseSwapped(base, delta);
  const checksums = options.checksums === undefined ? undefined : await readChecksums(options.checksums);
  const view = new LocalDeltaView(delta, base);
  try {
    const { convention, recognition } = await chooseConvention(view, options.convention);
    const expectSum = options.expectSum !== undefined
      ? { value: options.expectSum, tolerance: 1e-2, from: "--expect-sum" }
      : publishedSum(delta.source);
    // Conventions that read files by path wait for downloads to finish; the others read bytes as they arrive.
    if (convention.streams !== true) await view.complete();
    const plan = await convention.plan(view, expectSum === undefined ? {} : { expectSum });
    try {
      if (checksums !== undefined) addChecksumList(plan, checksums, options.checksums!);
      // Byte codecs read base files as bytes: opening the base as a model would fail (an .enc key is no model) or cost a parse.
      const baseInput = plan.baseFiles === undefined ? inputOf("base", await view.base()) : byteInput(base.path, plan.baseFiles);
      refuseOverlap(options.target, [baseInput, { label: "delta", root: delta.path }]);
      // A publisher's script cannot check its result; which base the user holds is the next best thing to say.
      const baseModel = plan.baseFiles === undefined && convention.name !== "delta-weights" ? await view.base() : undefined;
      const identity = baseModel !== undefined && mayBeKnownConversion(baseModel.weightFiles)
        ? view.settled().then(() => identifyModel(baseModel.root, { threads: 1 })).then(describeIdentity, () => undefined)
        : Promise.resolve(undefined);
      const files = await withOutputLock(options.target, "apply-delta", async () => {
        await removeStalePartials(options.target);
        const job = await OutputJob.claim(options.target, "apply-delta", { force: options.force, outputs: plan.files.map((f) => f.path) });
        try {
          const files = await recover(plan, { target: options.target, job, threads: options.threads, hashPool: options.hashPool, onProgress: options.onProgress, inputsSettled: view.settled() });
          await job.finish();
          return files;
        } finally {
          view.deltaFiles.stream?.finish(); // a streamed delta's files nobody read are not fetched
        }
      });
      const unchecked = [...files].filter(([, f]) => f.checkedAgainst === undefined).map(([path]) => path);
      return {
        target: options.target,
        convention: convention.name,
        reason: recognition.reason,
        verified: unchecked.length === 0,
        unchecked,
        kind: convention.name === "delta-weights" ? "manifest" : "legacy",
        files: Object.fromEntries(files),
        tensors: plan.tensors,
        dropped: plan.dropped,
        notes: [...plan.notes, ...[await identity].filter((n): n is string => n !== undefined)],
        fixups: plan.fixups(),
        bytes: [...files.values()].reduce((n, f) => n + f.size, 0),
      };
    } finally {
      await plan.close();
    }
  } finally {
    await view.close();
  }
}

/**
 * A base that holds delta.json is a delta: given with a delta that has none,
 * the two were swapped. Applying would add a delta to the base's own weights
 * and write garbage that no check could catch.
 */
function refuseSwapped(base: LocalSource, delta: LocalSource): void {
  if (!isDirectory(base.path) || !existsSync(join(base.path, MANIFEST_FILE))) return;
  if (isDirectory(delta.path) && !existsSync(join(delta.path, MANIFEST_FILE))) {
    throw new DeltaError(
      `--base ${base.source} holds ${MANIFEST_FILE}, so it is a delta, and --delta ${delta.source} has none: --base and --delta look swapped; ` +
        "pass the model you hold as --base and the published delta as --delta",
    );
  }
  throw new DeltaError(`--base ${base.source} holds ${MANIFEST_FILE}: it is a delta, not a model; pass the base model the delta was made from`);
}

/** A base read as bytes, for refuseOverlap: a directory (XOR payloads) or one key file (.enc). */
function byteInput(path: string, files: readonly string[]): InputLocation {
  const singleFile = !isDirectory(path);
  return { label: "base", root: singleFile ? dirname(path) : path, files: singleFile ? [path] : [...files], singleFile };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
