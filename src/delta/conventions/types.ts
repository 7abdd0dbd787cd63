import type { FileSet } from "../../io/file-set.js";
import type { ModelSource } from "../../model/types.js";
import type { RecordedCheckpoints } from "../engine/pytorch-checkpoints.js";
import type { OutputLayoutRule } from "../engine/output-layout.js";
import type { RecoveryPlan } from "../engine/recover.js";

/**
 * The convention seam. A delta convention is the publisher's rule for
 * turning a base and a delta into the fine-tuned model: how to recognise its
 * files, how each output file and tensor is made, which tensors are kept or
 * dropped, and what check proves the result. Each convention is one module
 * in its wing (own/, additive/, adapters/, byte-codecs/, easylm/), listed
 * in registry.ts; apply-delta asks the registry and the properties below,
 * it knows no convention by name.
 */

/** What a convention may look at to recognise a delta and plan its recovery. Everything is read lazily and once. */
export interface DeltaView {
  /** The delta as the user named it (a directory, a repo id), for messages. */
  readonly source: string;
  /** Its local directory (where its files are, or will be once downloaded). */
  readonly dir: string;
  /** The Hub repo (`org/name`) the delta was fetched from; absent for a local one. */
  readonly hubRepo?: string;
  /** Its files: read through this, since they may still be arriving. */
  readonly deltaFiles: FileSet;
  /** The base as the user named it. */
  readonly baseSource: string;
  /** The base's local path: a model directory or file (byte codecs read its files as bytes; a key file for .enc). */
  readonly basePath: string;
  /** Regular files of the delta directory, "/"-separated, sorted; hidden names left out. */
  files(): Promise<readonly string[]>;
  /**
   * The first `bytes` bytes of a delta file (fewer when it is shorter). Byte
   * codecs recognise a payload by them (an XORed checkpoint is not a zip, an
   * .enc file starts with its plain file's sha256) without opening it as a model.
   */
  head(file: string, bytes: number): Promise<Uint8Array>;
  /** A small JSON file of the delta (config.json, added_tokens.json), strictly parsed; undefined when absent. */
  json(file: string): Promise<unknown>;
  /**
   * One top-level member of a delta's JSON object file (undefined when the
   * file or the member is absent); the rest of the file is checked but not
   * built: tokenizer.json carries a whole vocabulary, and only its
   * `added_tokens` are wanted.
   */
  jsonMember(file: string, key: string): Promise<unknown>;
  /** The delta's weights, opened as a model. */
  model(): Promise<ModelSource>;
  /** The base, opened as a model. */
  base(): Promise<ModelSource>;
  /** Deltas given after this one (--delta more than once), in order: LoRA adapters merged one after another. */
  readonly chained?: readonly DeltaView[];
}

export interface Recognition {
  /** Whether the files follow the convention. */
  fits: boolean;
  /** Why (or why not), in words for the summary: "delta.json, format delta-weights/1". */
  reason: string;
  /**
   * The files fit, but do not show beyond doubt that this publisher made
   * them (what is missing, in words): the convention is used only when the
   * user names it with --convention, never chosen by itself.
   */
  undecided?: string;
}

/** A recovery plan with what the summary reports besides the files. */
export interface ConventionPlan extends RecoveryPlan {
  tensors: number;
  /** Base tensors the output leaves out. */
  dropped: string[];
  /** Decisions worth a line in the summary (a buffer dropped, a check that ran). */
  notes: string[];
  /** Elements restored by fix-ups (known once the files are written). */
  fixups(): number;
  /**
   * The base files the plan reads as bytes, when it never opens the base as
   * a model (XOR payloads, an .enc key file): apply-delta protects these
   * from being written over instead of the model's files.
   */
  baseFiles?: readonly string[];
  /** Outputs that record the run rather than belong to the model (a merge's record): "verified" does not wait for them. */
  records?: readonly string[];
  /** Releases what the plan opened (delta shards, fix-ups). */
  close(): Promise<void>;
}

/** What a published integrity sum is compared with, and who published it. */
export interface ExpectedSum {
  value: number;
  /** Absolute tolerance: Alpaca's check is np.allclose with atol 1e-2, rtol 0. */
  tolerance: number;
  from: string;
}

/** A convention's integrity sums of the recovered model (Alpaca's check): how close is close enough, and the sums its publishers printed. */
export interface ConventionSums {
  /** The absolute tolerance a sum given with --expect-sum is checked within. */
  readonly tolerance: number;
  /** The sum published for this delta, when it is a known release. */
  published(view: Pick<DeltaView, "source" | "dir">): ExpectedSum | undefined;
}

/** The PyTorch checkpoints a delta's release was published as, recorded so --format pytorch writes them byte for byte. */
export interface RecordedRelease {
  /** The record's file in the delta, for the summary. */
  readonly file: string;
  read(): Promise<RecordedCheckpoints>;
}

/** What the user asked of a plan besides the files. */
export interface PlanOptions {
  /** A published integrity sum of the recovered model (Alpaca's check), from --expect-sum or a known table. */
  expectSum?: ExpectedSum;
}

/**
 * The apply-delta options whose meaning belongs to a convention. Each
 * convention declares those it takes (`accepts`); apply-delta refuses any
 * other that is given, naming the convention and the option, so no flag is
 * ever silently ignored. (Options about the inputs, the target and the
 * machine mean the same under every convention: see apply-delta.ts.)
 */
export type ConventionOption = "checksums" | "expectSum";

export interface Convention {
  /** Its --convention name, as the registry lists it. */
  readonly name: string;
  /** The convention-specific options it honours (--expect-sum comes with `sums`). */
  readonly accepts: readonly Exclude<ConventionOption, "expectSum">[];
  /** Its integrity sums, when its publishers print them: then it takes --expect-sum. */
  readonly sums?: ConventionSums;
  /**
   * Whether its files record the digest of every output and of the base it
   * was made from (our own format): the result is reported as an exact
   * ("manifest") recovery, and its plan proves the base itself, so the base
   * is not identified against known conversions. Default: false.
   */
  readonly exact?: boolean;
  /**
   * A file only this convention's deltas hold (delta.json): a delta holding
   * it follows this convention and no other, and a base holding it is a
   * delta given as a base, refused before anything is read.
   */
  readonly signatureFile?: string;
  /** The release's own PyTorch checkpoints, when the delta recorded them (--format pytorch rebuilds them). */
  recordedRelease?(view: DeltaView): Promise<RecordedRelease | undefined>;
  /**
   * Whether its plan reads inputs still downloading (each read waits for its
   * bytes). Conventions that read files by path need them complete first.
   */
  readonly streams?: boolean;
  /** Whether its plan takes further deltas after the first (DeltaView.chained): LoRA adapters merged in order. */
  readonly chains?: boolean;
  /**
   * Which files its output tensors go to (engine/output-layout.ts): following
   * the delta's shards, the base's, or cut afresh; its plan lays them out
   * through the engine by this rule. None: it restores the publisher's own
   * files (byte codecs, our own format).
   */
  readonly layout?: OutputLayoutRule;
  recognize(view: DeltaView): Promise<Recognition>;
  plan(view: DeltaView, options: PlanOptions): Promise<ConventionPlan>;
}
