import { stat } from "node:fs/promises";
import { join } from "node:path";
import { VerifyError } from "../../errors.js";
import { HashPool, type HashAlgorithm } from "../../hash/hash-pool.js";
import { AtomicFile } from "../../io/atomic-file.js";
import type { ChecksumList } from "../../hash/checksums.js";
import { checkFreeSpace, type OutputJob } from "../../io/output-guard.js";
import type { Runtime } from "../../runtime.js";
import type { FileSet } from "../../io/file-set.js";

/**
 * Carries out a recovery plan, whatever convention made it: each output file
 * is produced under a temporary name, checked against what the publisher gave
 * for it (delta.json, a checksums list, an .enc header), and only then
 * renamed into place. Files already in place and matching are kept (resume).
 * The caller holds the target's lock.
 */

/**
 * What an output file must hash to, and who said so (for the summary). Our
 * own records give SHA-256; some publishers printed only MD5 (Open-Assistant).
 */
export type Expected = { from: string } & ({ sha256: string; md5?: string } | { sha256?: undefined; md5: string });

/** A listed digest (a checksums list, a published table) as what an output must hash to. */
export function expectedDigest(algorithm: HashAlgorithm, digest: string, from: string): Expected {
  return algorithm === "md5" ? { md5: digest, from } : { sha256: digest, from };
}

/** One input file an output is made from. */
export interface InputFile {
  files: FileSet;
  path: string;
}

export interface PlannedFile {
  /** Relative to the target directory ("/"-separated, checked safe by whoever planned it). */
  path: string;
  /**
   * The input files `produce` reads, when the planner knows them all: a
   * delta streamed without a copy lets each file go once every output that
   * reads it is made. An input no output declares is kept to the end.
   */
  reads?: readonly InputFile[];
  /** Its size when known in advance (for the free-space check and progress). */
  size: number;
  expected?: Expected;
  /**
   * What checked the file's content when no digest of the whole file is
   * known (a checkpoint written from checked tensors): named in the summary
   * as `expected.from` would be.
   */
  checkedBy?: string;
  /**
   * Writes the file's bytes into `sink`, reporting output bytes through
   * `advance`. Returns a promise that settles once every check the producer
   * started has settled (rejecting if one failed), so the file's commit can
   * overlap the next file's work.
   */
  produce(sink: AtomicFile, context: ProduceContext): Promise<{ checks?: Promise<void> }>;
}

export interface ProduceContext {
  pool: HashPool;
  advance(bytes: number, label: string): void;
}

export interface RecoveryPlan {
  files: PlannedFile[];
  /**
   * Why an output failed its check, when the convention can say better (a
   * corrupted delta file, a tampered manifest): returns the error to throw.
   */
  explain?(err: unknown, context: { pool: HashPool; tempPath?: string }): Promise<unknown>;
  /**
   * A check of the whole output that only the end can decide (Alpaca's sum):
   * files are then held under their temporary names until it passes. (Files
   * no digest checks are always held until every check of the run passed.)
   */
  finalCheck?(): Promise<void>;
}

export interface RecoveredFile {
  size: number;
  sha256: string;
  status: "written" | "kept";
  /** What the file was checked against, when anything. */
  checkedAgainst?: string;
}

export interface RecoveryOptions {
  target: string;
  /** Which files of the target we may write (see OutputJob). */
  job: OutputJob;
  /**
   * Resolves when every input byte read was verified (a download's sha256),
   * rejects if one was not. Inputs read while still downloading are checked
   * only when their download ends: an output nothing else checks waits for
   * this before it gets its name.
   */
  inputsSettled?: Promise<void>;
  /** Hashing threads started when the runtime brings no hash pool. */
  threads?: number;
}

/**
 * --checksums for any convention: every file the list names must be an
 * output, with the same sha256 as the publisher's own record when there is
 * one; both are refused before anything is written. Files the list names
 * become checked against it.
 */
export function addChecksumList(plan: RecoveryPlan, list: ChecksumList, listPath: string): void {
  const byPath = new Map(plan.files.map((f) => [f.path, f]));
  for (const [rel, digest] of list.digests) {
    const file = byPath.get(rel);
    if (file === undefined) throw new VerifyError(`${listPath} lists ${rel}, which this delta does not produce; nothing was written`);
    const known = list.algorithm === "sha256" ? file.expected?.sha256 : file.expected?.md5;
    if (known !== undefined && known !== digest) {
      throw new VerifyError(`${listPath} says ${rel} has ${list.algorithm} ${digest.slice(0, 16)}..., ${file.expected!.from} says ${known.slice(0, 16)}...: the list and the delta disagree; nothing was written`);
    }
    if (known === undefined) {
      file.expected = file.expected === undefined
        ? expectedDigest(list.algorithm, digest, "the checksums list")
        : { ...file.expected, [list.algorithm]: digest, from: `${file.expected.from} and the checksums list` };
    }
  }
}

/** The runtime's hash pool (shared with downloads; not closed here) is used, else `threads` workers of our own; progress goes to its stream. */
export async function recover(plan: RecoveryPlan, options: RecoveryOptions, runtime: Runtime = {}): Promise<Map<string, RecoveredFile>> {
  const out = options.target;
  const results = new Map<string, RecoveredFile>();
  const pool = runtime.hashPool ?? new HashPool(options.threads);
  const progress = runtime.onProgress;
  const commits: Promise<void>[] = [];
  const held: { sink: AtomicFile; path: string; digest: string }[] = [];
  let started = false;
  // Awaited where an output needs it; a download failing before then must not count as unhandled.
  options.inputsSettled?.catch(() => undefined);
  try {
    // Output paths come from the delta: none is read or written through a link in the target.
    for (const file of plan.files) options.job.refuseLinkOnTheWay(file.path);
    // Resume: files already in place and matching what the publisher gave are kept.
    const todo: PlannedFile[] = [];
    for (const file of plan.files) {
      const kept = file.expected === undefined ? undefined : await matches(pool, join(out, file.path), file.size, file.expected);
      if (kept !== undefined) results.set(file.path, { size: file.size, sha256: kept, status: "kept", checkedAgainst: file.expected!.from });
      else todo.push(file);
    }
    // Nothing is written until every output is known to replace no file of anyone else's: one
    // whose bytes are known and differ from what is there (the check above) is refused now;
    // one whose bytes are not known is compared when it is done (see OutputJob.publish).
    for (const file of todo) if (file.expected !== undefined) options.job.checkMayWrite(file.path);
    await options.job.claimFiles(todo.map((f) => f.path));
    const needed = todo.reduce((n, f) => n + f.size, 0);
    await checkFreeSpace(out, needed);
    progress?.({ kind: "start", phase: "apply", totalBytes: needed });
    started = true;
    const streamed = new StreamedInputs(plan.files, todo);
    const explain = async (err: unknown, tempPath?: string): Promise<never> => {
      throw plan.explain === undefined ? err : await plan.explain(err, { pool, tempPath });
    };
    for (const file of todo) {
      const md5 = file.expected?.md5 === undefined ? undefined : pool.create("md5");
      const sink = await AtomicFile.create(join(out, file.path), pool.create(), md5 === undefined ? [] : [md5]);
      let checks: Promise<void> | undefined;
      try {
        ({ checks } = await file.produce(sink, {
          pool,
          advance: (bytes, label) => progress?.({ kind: "advance", phase: "apply", bytes, label }),
        }));
      } catch (err) {
        await sink.abort();
        await Promise.allSettled(commits);
        return await explain(err);
      }
      streamed.made(file);
      const size = sink.size;
      // The last flush to disk, and the checks, go on while the next file is produced.
      const committed = (async () => {
        try {
          await checks;
          const digest = await sink.close();
          const expected = file.expected;
          if (expected?.sha256 !== undefined && digest !== expected.sha256) {
            throw new VerifyError(`recovered ${join(out, file.path)}: its sha256 ${digest} does not match ${expected.sha256} from ${expected.from}`);
          }
          const md5Digest = await md5?.digest();
          if (expected?.md5 !== undefined && md5Digest !== expected.md5) {
            throw new VerifyError(`recovered ${join(out, file.path)}: its md5 ${md5Digest} does not match ${expected.md5} from ${expected.from}`);
          }
          const checkedAgainst = file.expected?.from ?? file.checkedBy;
          results.set(file.path, { size, sha256: digest, status: "written", ...(checkedAgainst === undefined ? {} : { checkedAgainst }) });
          // An output nothing checks could be wrong in a way only a later failure shows (the
          // wrong base, a damaged input): it gets its name only once every check of the run passed.
          if (plan.finalCheck === undefined && checkedAgainst !== undefined) await options.job.publish(file.path, sink, digest);
          else held.push({ sink, path: file.path, digest });
        } catch (err) {
          // An explanation may read the file back: every byte written must be in it.
          await sink.settleWrites().catch(() => undefined);
          await explain(err, sink.tempPath).catch(async (explained: unknown) => {
            await sink.abort();
            throw explained;
          });
        }
      })();
      committed.catch(() => undefined); // awaited below; this only stops an early rejection counting as unhandled
      commits.push(committed);
    }
    streamed.finish();
    await Promise.all(commits);
    await plan.finalCheck?.();
    // Outputs nothing checked were made from inputs still downloading: every byte must have passed its sha256.
    if (held.length > 0) await options.inputsSettled;
    for (const { sink, path, digest } of held.splice(0)) await options.job.publish(path, sink, digest);
  } finally {
    await Promise.allSettled(commits);
    await Promise.all(held.map(({ sink }) => sink.abort()));
    if (started) progress?.({ kind: "end", phase: "apply" });
    if (runtime.hashPool === undefined) await pool.close();
  }
  // In the plan's order, whatever order the commits finished in.
  return new Map(plan.files.map((f) => [f.path, results.get(f.path)!]));
}

/**
 * Tells streamed input files (a delta downloaded without a copy) in which
 * order the outputs read them, and lets each go once every output reading
 * it is made. Inputs of files kept on resume are never read.
 */
class StreamedInputs {
  readonly #readers = new Map<FileSet, Map<string, number>>();

  constructor(all: readonly PlannedFile[], todo: readonly PlannedFile[]) {
    // Every streamed file set is told when reads end, even one only kept files read.
    for (const file of all) for (const files of streamedReads(file).keys()) this.#readers.set(files, new Map());
    for (const file of todo) {
      for (const [files, paths] of streamedReads(file)) {
        const counts = this.#readers.get(files) ?? new Map<string, number>();
        for (const path of paths) counts.set(path, (counts.get(path) ?? 0) + 1);
        this.#readers.set(files, counts);
      }
    }
    for (const [files, counts] of this.#readers) files.stream!.plan([...counts.keys()]);
  }

  /** `file` was produced: what no later output reads may go (deleted once verified, in the background). */
  made(file: PlannedFile): void {
    for (const [files, paths] of streamedReads(file)) {
      const counts = this.#readers.get(files)!;
      for (const path of paths) {
        const left = counts.get(path)! - 1;
        counts.set(path, left);
        if (left === 0) void files.stream!.release(path).catch(() => undefined);
      }
    }
  }

  finish(): void {
    for (const files of this.#readers.keys()) files.stream!.finish();
  }
}

/** A file's declared inputs that are streamed, each path once. */
function streamedReads(file: PlannedFile): Map<FileSet, Set<string>> {
  const reads = new Map<FileSet, Set<string>>();
  for (const { files, path } of file.reads ?? []) {
    if (files.stream !== undefined) reads.set(files, (reads.get(files) ?? new Set<string>()).add(path));
  }
  return reads;
}

/** The sha256 of the file at `path` when it is already the expected output, else undefined. */
async function matches(pool: HashPool, path: string, size: number | undefined, expected: Expected): Promise<string | undefined> {
  try {
    const info = await stat(path);
    if (!info.isFile() || (size !== undefined && info.size !== size)) return undefined;
  } catch {
    return undefined;
  }
  const actual = await pool.hashFile(path, undefined, { md5: expected.md5 !== undefined });
  const ok = (expected.sha256 === undefined || actual.sha256 === expected.sha256) && (expected.md5 === undefined || actual.md5 === expected.md5);
  return ok ? actual.sha256 : undefined;
}
