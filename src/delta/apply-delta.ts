import { existsSync, statSync } from "node:fs";
import { rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { DeltaError, UsageError } from "../errors.js";
import { PYTORCH_OUTPUT } from "../formats/outputs/pytorch.js";
import { SAFETENSORS_OUTPUT } from "../formats/outputs/safetensors.js";
import type { Outtype } from "../gguf/llama.js";
import { outputFormatNamed, refuseUnacceptedOutputOptions, type OutputFormatName } from "../model/output-formats.js";
import { applyAsModelFile, type GgufApplyOutput, type ModelFileOutput } from "./apply-gguf.js";
import { readChecksums } from "../hash/checksums.js";
import { removeStalePartials } from "../io/atomic-file.js";
import { inputOf, OutputJob, refuseOverlap, type InputLocation } from "../io/output-guard.js";
import { withOutputLock } from "../io/output-lock.js";
import type { Runtime } from "../runtime.js";
import { chooseConvention, expectedSum, refuseUnacceptedOptions, signatureFiles } from "./conventions/registry.js";
import type { ConventionOption } from "./conventions/types.js";
import { refuseDamagedDownload } from "./damaged-download.js";
import { LocalDeltaView } from "./conventions/view.js";
import { asLocalSource, type LocalSource } from "../model/types.js";
import { describeIdentity, identifyModel, mayBeKnownConversion } from "./identify.js";
import { addChecksumList, recover, type RecoveredFile } from "./engine/recover.js";
import { retargetTensorFiles } from "./pytorch-output.js";

/**
 * What the door takes: exactly its own parameters, built field by field by
 * the composition root (api.ts maps the public ApplyDeltaOptions to it).
 * Shared resources (hash pool, progress) come apart, as the run's Runtime.
 */
export interface ApplyRequest {
  /** The base model: a local file or directory (the library's Hub front end resolves repo ids to these). */
  base: string | LocalSource;
  /** The delta: a local directory (with delta.json, or a published delta of another convention). */
  delta: string | LocalSource;
  /** More deltas applied after `delta`, in order: LoRA adapters merged one after another (conventions that chain only). */
  chained?: readonly (string | LocalSource)[];
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
  /** Hashing threads started when the runtime brings no hash pool (default: one per core, at most two). */
  threads?: number;
  /** GGUF tensor type (llama.cpp converter's --outtype). */
  outtype?: Outtype;
  /** Meta's layout (format "meta"): model-parallel ranks. */
  numShards?: number;
  /** The recovered weights' format, a name in model/output-formats.ts: "safetensors" (default), "pytorch" (torch.save checkpoints, see pytorch-output.ts), or a whole-model format ("gguf", "meta": see apply-gguf.ts). */
  format?: OutputFormatName;
  /** PyTorch output: add the `byteorder` record torch >= 2.1 writes. */
  byteorderRecord?: boolean;
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
  /** "manifest" for an exact convention's delta (our own, with delta.json), "legacy" for a published one of another convention. */
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
  /** With a whole-model output format (GGUF, Meta's layout): the file or files written, and by which format. */
  modelFile?: ModelFileOutput;
}

/** base + delta -> target, by the convention the delta's files follow, each output checked against what its publisher gave. */
export async function applyDelta(options: ApplyRequest, runtime: Runtime = {}): Promise<ApplyDeltaResult> {
  const output = outputFormatNamed(options.format);
  refuseUnacceptedOutputOptions(output, { outtype: options.outtype, byteorderRecord: options.byteorderRecord, numShards: options.numShards });
  if (output.kind === "model file") {
    const { format: _format, outtype: _outtype, numShards: _numShards, ...rest } = options;
    return applyAsModelFile(output, options, runtime, (scratch) => applyDelta({ ...rest, target: scratch }, runtime));
  }
  const base = asLocalSource(options.base);
  const delta = asLocalSource(options.delta);
  const signatures = await signatureFiles();
  refuseSwapped(base, delta, signatures);
  refuseSingleFileDelta(delta);
  const chained = (options.chained ?? []).map(asLocalSource);
  for (const more of chained) {
    refuseSwapped(base, more, signatures);
    refuseSingleFileDelta(more);
  }
  const view = new LocalDeltaView(delta, base, chained);
  try {
    await refuseDamagedDownload(view);
    const { convention, recognition } = await chooseConvention(view, options.convention);
    refuseUnacceptedOptions(convention, conventionOptionsGiven(options));
    const checksums = options.checksums === undefined ? undefined : await readChecksums(options.checksums);
    if (chained.length > 0 && convention.chains !== true) {
      throw new DeltaError(`--delta was given ${chained.length + 1} times, but ${delta.source} follows the ${convention.name} convention: only LoRA adapters are merged one after another`);
    }
    const expectSum = await expectedSum(convention, view, options.expectSum);
    // Conventions that read files by path wait for downloads to finish; the others read bytes as they arrive.
    if (convention.streams !== true) await view.complete();
    const plan = await convention.plan(view, expectSum === undefined ? {} : { expectSum });
    try {
      const release = await convention.recordedRelease?.(view);
      if (output !== SAFETENSORS_OUTPUT) {
        // The release's own PyTorch checkpoints, when make-delta recorded them, are written as published.
        const recorded = output === PYTORCH_OUTPUT ? await release?.read() : undefined;
        if (recorded !== undefined && options.byteorderRecord === true) {
          throw new UsageError(`--byteorder-record: ${delta.source} records the release's own checkpoints, which are written as published; drop the flag`);
        }
        retargetTensorFiles(plan, convention.name, output, { byteorderRecord: options.byteorderRecord === true, ...(recorded === undefined ? {} : { recorded }) });
      }
      else if (release !== undefined) {
        plan.notes.push(`the release was published as PyTorch checkpoints, recorded in ${release.file}: --format pytorch writes those files byte for byte`);
      }
      if (checksums !== undefined) addChecksumList(plan, checksums, options.checksums!);
      // Byte codecs read base files as bytes: opening the base as a model would fail (an .enc key is no model) or cost a parse.
      const baseInput = plan.baseFiles === undefined ? inputOf("base", await view.base()) : byteInput(base.path, plan.baseFiles);
      refuseOverlap(options.target, [baseInput, { label: "delta", root: delta.path }, ...chained.map((d) => ({ label: "delta", root: d.path }))]);
      // A publisher's script cannot check its result; which base the user holds is the next best thing to say.
      const baseModel = plan.baseFiles === undefined && convention.exact !== true ? await view.base() : undefined;
      const identity = baseModel !== undefined && mayBeKnownConversion(baseModel.weightFiles)
        ? view.settled().then(() => identifyModel(baseModel.root, { threads: 1 })).then(describeIdentity, () => undefined)
        : Promise.resolve(undefined);
      const targetExisted = existsSync(options.target);
      const files = await withOutputLock(options.target, "apply-delta", async () => {
        await removeStalePartials(options.target);
        const outputs = plan.files.map((f) => f.path);
        const job = await OutputJob.claim(options.target, "apply-delta", { force: options.force, outputs });
        try {
          // A rerun leaves exactly the files a clean run would: what a failed earlier run wrote that this plan does not make goes.
          await job.removeStale(outputs);
          const files = await recover(plan, { target: options.target, job, threads: options.threads, inputsSettled: view.settled() }, runtime);
          await job.finish();
          return files;
        } catch (err) {
          // A delta fetched into the target's scratch folder (--no-cache-delta) resumes from it, and the
          // record is what says the folder is this job's: it stays. Otherwise only what a rerun needs stays.
          if (view.deltaFiles.stream === undefined) await job.abandon();
          throw err;
        } finally {
          view.deltaFiles.stream?.finish(); // a streamed delta's files nobody read are not fetched
        }
      }).catch(async (err: unknown) => {
        // A target this run created and left empty goes too (rmdir removes only an empty one).
        if (!targetExisted) await rmdir(options.target).catch(() => undefined);
        throw err;
      });
      const unchecked = [...files].filter(([path, f]) => f.checkedAgainst === undefined && !(plan.records ?? []).includes(path)).map(([path]) => path);
      return {
        target: options.target,
        convention: convention.name,
        reason: recognition.reason,
        verified: unchecked.length === 0,
        unchecked,
        kind: convention.exact === true ? "manifest" : "legacy",
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
 * How apply-delta's options relate to conventions: those that mean the same
 * under every convention (the inputs, the target, the machine), and those
 * each convention must declare it takes (see Convention.accepts). A new
 * option must be placed here, so none can be silently ignored.
 */
const OPTION_SCOPE: Record<keyof ApplyRequest, "every convention" | ConventionOption> = {
  base: "every convention",
  delta: "every convention",
  // A second adapter is refused by Convention.chains, checked beside this table.
  chained: "every convention",
  target: "every convention",
  convention: "every convention",
  force: "every convention",
  threads: "every convention",
  // The output format is checked against the plan's outputs when they are retargeted (byte codecs, whose outputs are the publisher's own files, refuse it).
  format: "every convention",
  byteorderRecord: "every convention",
  outtype: "every convention",
  numShards: "every convention",
  checksums: "checksums",
  expectSum: "expectSum",
};

/** The convention-specific options the caller gave. */
function conventionOptionsGiven(options: ApplyRequest): ConventionOption[] {
  return (Object.keys(OPTION_SCOPE) as (keyof ApplyRequest)[])
    .filter((key) => options[key] !== undefined)
    .map((key) => OPTION_SCOPE[key])
    .filter((scope): scope is ConventionOption => scope !== "every convention");
}

/**
 * A base that holds a convention's signature file (delta.json) is a delta:
 * given with a delta that has none, the two were swapped. Applying would add
 * a delta to the base's own weights and write garbage that no check could catch.
 */
function refuseSwapped(base: LocalSource, delta: LocalSource, signatures: readonly { file: string }[]): void {
  if (!isDirectory(base.path)) return;
  for (const { file } of signatures) {
    if (!existsSync(join(base.path, file))) continue;
    if (isDirectory(delta.path) && !existsSync(join(delta.path, file))) {
      throw new DeltaError(
        `--base ${base.source} holds ${file}, so it is a delta, and --delta ${delta.source} has none: --base and --delta look swapped; ` +
          "pass the model you hold as --base and the published delta as --delta",
        { rule: "inputs-swapped" },
      );
    }
    throw new DeltaError(`--base ${base.source} holds ${file}: it is a delta, not a model; pass the base model the delta was made from`);
  }
}

/**
 * A delta is a directory (or a repo): the files beside its weights say how
 * to apply them (delta.json, the config, the added tokens) and go into the
 * recovered model (config, tokenizer). One weight file alone would be applied
 * by a guess and give a model without them, so it is refused, naming the
 * directory it probably came in.
 */
function refuseSingleFileDelta(delta: LocalSource): void {
  if (delta.files !== undefined || isDirectory(delta.path) || !existsSync(delta.path)) return;
  throw new UsageError(
    `--delta ${delta.source} is a file; --delta must be a directory (the delta as published: its weights with their config and tokenizer files, or delta.json) ` +
      `or a Hub repo id: pass the directory that holds it (${dirname(delta.source)})`,
  );
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
