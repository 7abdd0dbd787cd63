import { createHash } from "node:crypto";
import { accessSync, constants, createReadStream, existsSync, lstatSync, readdirSync, realpathSync, statSync } from "node:fs";
import { readFile, rm, statfs } from "node:fs/promises";
import { dirname, relative, resolve, isAbsolute, join } from "node:path";
import { DeltaWeightsError, ioError } from "../errors.js";
import { parseJsonDocument } from "../json.js";
import { MAX_JSON_DEPTH } from "../limits.js";
import { AtomicFile } from "./atomic-file.js";

/** Whether `inner` is `outer` or lies inside it. */
export function isInside(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === "" || (rel !== ".." && !rel.startsWith("../") && !isAbsolute(rel));
}

/** The real path of `path`, or of its nearest existing ancestor joined with the rest. */
export function realpathOfNearest(path: string): string {
  const abs = resolve(path);
  try {
    return realpathSync(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(realpathOfNearest(parent), relative(parent, abs));
  }
}

export interface InputLocation {
  label: string;
  /** The input's root directory. */
  root: string;
  /** The input's files (absolute), for inputs named as single files. */
  files?: string[];
  /** When the input was named as one file, only that file is protected, not its directory. */
  singleFile?: boolean;
}

/**
 * Never write into an input: the output (a directory, or a file) may not be,
 * or lie inside, an input directory, be an input file, nor hold an input file
 * at its top level (where outputs are written). Symlinks (the Hugging Face
 * cache) are followed.
 */
export function refuseOverlap(output: string, inputs: InputLocation[]): void {
  const out = realpathOfNearest(output);
  for (const input of inputs) {
    const root = realpathOfNearest(input.root);
    const inside = !input.singleFile && isInside(out, root);
    const files = (input.files ?? []).map(realpathOfNearest);
    const isInputFile = files.includes(out);
    const holdsInput = files.some((f) => dirname(f) === out);
    if (inside || isInputFile || holdsInput) {
      throw new DeltaWeightsError("E_IO", `the output ${output} is, or is inside, the ${input.label} ${input.singleFile ? input.files?.[0] : input.root}; choose a directory outside every input`);
    }
  }
}

/** Fails early, before writing, when the disk holding `dir` has less than `bytes` free. */
export async function checkFreeSpace(dir: string, bytes: number): Promise<void> {
  let probe = resolve(dir);
  for (;;) {
    try {
      const fs = await statfs(probe);
      const free = fs.bavail * fs.bsize;
      if (free < bytes) {
        throw new DeltaWeightsError("E_IO",
          `not enough free space for ${dir}: ${formatGB(bytes)} needed, ${formatGB(free)} free; free some space or choose another directory`);
      }
      return;
    } catch (err) {
      if (err instanceof DeltaWeightsError) throw err;
      const parent = dirname(probe);
      if (parent === probe) return; // cannot tell: let the writes report ENOSPC
      probe = parent;
    }
  }
}

function formatGB(bytes: number): string {
  return `${(bytes / 1e9).toFixed(2)} GB`;
}


/** Where a model input lives, for refuseOverlap. */
export function inputOf(label: string, model: { root: string; weightFiles: readonly string[]; extraFiles: readonly string[]; source: string }): InputLocation {
  const files = [...model.weightFiles, ...model.extraFiles].map((rel) => join(model.root, rel));
  let singleFile = false;
  try {
    singleFile = statSync(model.source).isFile();
  } catch {
    // a Hub repo id: its snapshot directory is the input
  }
  return { label, root: model.root, files, singleFile };
}

/** A local input must exist: named before anything else runs. */
export function checkInputExists(path: string): void {
  try {
    statSync(path);
  } catch (err) {
    throw ioError("open", path, err);
  }
}

/**
 * An output path must be creatable and writable: it is a directory or does
 * not exist yet, and its nearest existing ancestor is a writable directory.
 * Checked before any work or download, so a read-only disk or a target that
 * is a file is named at once.
 */
export function checkWritableOutput(path: string): void {
  let probe = resolve(path);
  for (;;) {
    let info;
    try {
      info = statSync(probe);
    } catch (err) {
      // ENOTDIR: a file on the way, named once the walk up reaches it.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") throw ioError("use", probe, err);
      const parent = dirname(probe);
      if (parent === probe) return;
      probe = parent;
      continue;
    }
    if (!info.isDirectory()) {
      throw new DeltaWeightsError("E_IO", probe === resolve(path) && !path.toLowerCase().endsWith(".safetensors")
        ? `Failed to write ${path}: it is a file, not a directory; choose a directory for the output`
        : `Failed to write ${path}: ${probe} is a file, not a directory`);
    }
    try {
      accessSync(probe, constants.W_OK | constants.X_OK);
    } catch (err) {
      throw ioError("write into", probe, err);
    }
    return;
  }
}

/**
 * Which files of an output directory this tool may replace. While a run
 * writes, the directory holds its record (`.delta-weights-job.json`)
 * naming the files it took; a run that was killed leaves it, so a rerun
 * knows which half-written outputs are its own. A successful run removes it.
 *
 * A directory that holds files which are neither outputs of this job nor
 * files this tool wrote is refused unless `force`. And whatever the flags,
 * a file this tool did not write is never overwritten with other bytes: an
 * output whose name it holds is put in place only when the two are
 * identical (a rerun of a finished job); otherwise the run stops, naming it.
 */
export const JOB_FILE = ".delta-weights-job.json";

interface JobRecordFile {
  command: string;
  written: string[];
}

export class OutputJob {
  readonly #written: Set<string>;
  /** What an earlier, unfinished run of the same command recorded as written (see removeStale). */
  readonly #earlier: ReadonlySet<string>;
  #saving: Promise<void> = Promise.resolve();

  private constructor(readonly dir: string, private readonly command: string, written: Iterable<string>, earlier: Iterable<string> = []) {
    this.#written = new Set(written);
    this.#earlier = new Set(earlier);
  }

  /**
   * Claims `dir` for `command`. Call it holding the directory's lock.
   * `outputs` are the job's own output names, when known in advance (a file
   * there is not someone else's, though it may still not be overwritten);
   * `ours` names files an earlier run left without a record (a delta
   * directory's delta.json lists them): with them the directory is ours.
   */
  static async claim(dir: string, command: string, options: { force?: boolean; outputs?: readonly string[]; ours?: readonly string[] } = {}): Promise<OutputJob> {
    const previous = await readRecord(join(dir, JOB_FILE));
    const ours = [...(previous?.written ?? []), ...(options.ours ?? [])];
    const known = new Set([...ours, ...(options.outputs ?? [])].map((p) => p.split("/")[0]!));
    const foreign = visibleEntries(dir).filter((name) => !known.has(name));
    if (foreign.length > 0 && options.force !== true && previous === undefined && (options.ours ?? []).length === 0) {
      throw new DeltaWeightsError(
        "E_IO",
        `${dir} is not empty (it holds ${foreign.slice(0, 3).join(", ")}${foreign.length > 3 ? ", ..." : ""}) and no earlier run of this ${command}: ` +
          "choose an empty or new directory, or pass --force to write beside its files (none of them is ever overwritten)",
      );
    }
    return new OutputJob(dir, command, ours, previous?.command === command ? previous.written : []);
  }

  /**
   * A rerun must leave exactly the files a clean run would: the files an
   * earlier, failed run of this command wrote (its record says which) that
   * this run does not produce are removed. Nothing the record does not name
   * is touched.
   */
  async removeStale(outputs: readonly string[]): Promise<string[]> {
    const keep = new Set(outputs);
    const stale = [...this.#earlier].filter((p) => !keep.has(p) && this.#written.has(p));
    for (const path of stale) {
      this.refuseLinkOnTheWay(path);
      await rm(join(this.dir, ...path.split("/")), { force: true });
      this.#written.delete(path);
    }
    if (stale.length > 0) await this.#save();
    return stale;
  }

  /** Whether an output may be written at `path` (relative): nothing is there, or this tool wrote what is. */
  mayWrite(path: string): boolean {
    return this.#written.has(path) || !existsSync(join(this.dir, ...path.split("/")));
  }

  /** Throws, naming the file, when `path` holds a file this tool did not write, or lies beyond a link. */
  checkMayWrite(path: string): void {
    this.refuseLinkOnTheWay(path);
    if (!this.mayWrite(path)) {
      throw new DeltaWeightsError("E_IO", `${join(this.dir, path)} already exists, with other bytes, and was not written by ${this.command}: it is not overwritten; move it away or choose another directory`);
    }
  }

  /**
   * Takes these output names for this job before any of them is written, so
   * a run killed half way is resumed: names nothing holds yet are recorded as
   * ours; a name that holds a file we did not write stays that file's, to be
   * replaced only by identical bytes (see `publish`).
   */
  async claimFiles(paths: Iterable<string>): Promise<void> {
    const all = [...paths];
    for (const path of all) this.refuseLinkOnTheWay(path);
    await this.recordWritten(all.filter((p) => this.mayWrite(p)));
  }

  /** Output paths come from files we did not write (delta.json, an index): none is written through a link. */
  refuseLinkOnTheWay(path: string): void {
    const link = linkOnTheWay(this.dir, path);
    if (link !== undefined) {
      throw new DeltaWeightsError("E_IO", `${join(this.dir, link)} is a symbolic link (or not a directory): ${this.command} does not write ${path} through it, which could put it outside ${this.dir}; remove it or choose another directory`);
    }
  }

  /**
   * Puts a closed output in place at `path`: at once when nothing is there or
   * this tool wrote what is; when another's file is there, only if it holds
   * the same bytes (`sha256` is the output's), else the output is discarded
   * and the run stops, naming the file.
   */
  async publish(path: string, sink: AtomicFile, sha256: string): Promise<void> {
    if (!this.mayWrite(path)) {
      const existing = await sha256OfFile(join(this.dir, ...path.split("/")));
      if (existing !== sha256) {
        await sink.abort();
        this.checkMayWrite(path);
      }
    }
    await sink.publish();
    await this.recordWritten([path]);
  }

  /** Records files this run has just written (names not known in advance). */
  async recordWritten(paths: Iterable<string>): Promise<void> {
    const fresh = [...paths].filter((p) => !this.#written.has(p));
    if (fresh.length === 0) return;
    for (const path of fresh) this.#written.add(path);
    await this.#save();
  }

  /** The run succeeded: every file is in place and nothing is half written; the record goes. */
  async finish(): Promise<void> {
    await this.#saving;
    await rm(join(this.dir, JOB_FILE), { force: true });
  }

  /**
   * The run failed. The record is kept only for what a rerun needs: the
   * files this tool wrote that are still there (a rerun may write over
   * them). With none, it goes, and the target holds nothing of this run.
   */
  async abandon(): Promise<void> {
    await this.#saving;
    for (const path of [...this.#written]) {
      if (!existsSync(join(this.dir, ...path.split("/")))) this.#written.delete(path);
    }
    if (this.#written.size === 0) await rm(join(this.dir, JOB_FILE), { force: true });
    else await this.#save().catch(() => undefined);
  }

  /** Saves the record; saves run one after another, so the last one written holds every file. */
  #save(): Promise<void> {
    const save = this.#saving.then(async () => {
      const file = await AtomicFile.create(join(this.dir, JOB_FILE));
      try {
        await file.write(new TextEncoder().encode(JSON.stringify({ command: this.command, written: [...this.#written] } satisfies JobRecordFile) + "\n"));
        await file.commit();
      } catch (err) {
        await file.abort();
        throw err;
      }
    });
    this.#saving = save.catch(() => undefined);
    return save;
  }
}

async function sha256OfFile(path: string): Promise<string | undefined> {
  try {
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    return hash.digest("hex");
  } catch {
    return undefined;
  }
}

/**
 * The first directory on the way from `dir` to its relative `path` that is a
 * symbolic link or not a directory, if any. Output paths come from files we
 * did not write (delta.json, an index): `sub/model.safetensors` must not
 * land wherever a link named `sub` in the target leads. Parts that do not
 * exist yet are created as plain directories.
 */
export function linkOnTheWay(dir: string, path: string): string | undefined {
  const parts = path.split("/").slice(0, -1);
  for (let i = 0; i < parts.length; i++) {
    const rel = parts.slice(0, i + 1).join("/");
    let info;
    try {
      info = lstatSync(join(dir, ...parts.slice(0, i + 1)));
    } catch {
      return undefined; // missing from here on: created fresh
    }
    if (!info.isDirectory()) return rel;
  }
  return undefined;
}

async function readRecord(path: string): Promise<JobRecordFile | undefined> {
  try {
    const text = await readFile(path, "utf8");
    if (text.length > 16 * 1024 * 1024) return undefined;
    const value = parseJsonDocument(text, MAX_JSON_DEPTH) as Partial<JobRecordFile>;
    if (typeof value.command === "string" && Array.isArray(value.written) && value.written.every((f) => typeof f === "string")) {
      return value as JobRecordFile;
    }
  } catch {
    // none, or not ours
  }
  return undefined;
}

/** Entries of `dir` a user would see (hidden ones, our lock and temporaries among them, left out). */
function visibleEntries(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => !n.startsWith(".")).sort();
  } catch {
    return [];
  }
}
