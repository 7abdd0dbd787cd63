import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError, VerifyError } from "../../errors.js";
import { LFS_POINTER_MAX_BYTES, isLfsPointer } from "../../formats/lfs-pointer.js";
import { isReleaseDocument } from "../../formats/weight-files.js";
import type { HashAlgorithm } from "../../hash/hash-pool.js";
import { plural } from "../../text.js";
import { findPayloadFolder, KIND_PROBE_BYTES, parseEncName, plainKind, structuralProblem, writeXorFile, type PayloadKind } from "./byte-codec.js";
import { findPublishedList, PUBLISHED_LISTS, type MatchedList, type PublishedList } from "./published-lists.js";
import { expectedDigest, type Expected, type PlannedFile } from "../engine/recover.js";
import { copiedFile } from "../engine/tensor-file.js";
import { releaseEvidence } from "../conventions/release-evidence.js";
import type { Convention, ConventionPlan, DeltaView } from "../conventions/types.js";

/**
 * Open-Assistant's and Pygmalion's XOR payloads (xor_codec.py): every
 * published file is the publisher's file XORed byte for byte with the
 * same-named file of one particular conversion of LLaMA; files that are
 * plain already (OA's added_tokens.json, the JSON files of Pygmalion's later
 * revision) are copied. The output is as long as the payload; a shorter base
 * file counts as zero bytes past its end. Outputs are checked against the
 * publishers' md5/sha256 lists (built in, or --checksums); the base files
 * against the base list when the publisher printed one.
 */
export const xorPayload: Convention = {
  name: "xor",
  accepts: ["checksums"],

  async recognize(view) {
    const files = await view.files();
    if (files.some((f) => parseEncName(baseName(f)) !== undefined)) return { fits: false, reason: "it holds .enc files (point-alpaca's codec)" };
    let entries: PayloadFile[];
    try {
      entries = await classify(view);
    } catch (err) {
      return { fits: false, reason: err instanceof Error ? err.message : String(err) };
    }
    const checkpoints = entries.filter((e) => isCheckpointName(e.name));
    const xored = checkpoints.filter((e) => e.kind === "xor");
    if (xored.length > 0) {
      const which = `${xored[0]!.name}${xored.length > 1 ? `, and ${xored.length - 1} more` : ""}`;
      return { fits: true, reason: `checkpoint files with no zip, pickle or safetensors header (${which}): XOR payloads (Open-Assistant / Pygmalion)` };
    }
    const json = entries.filter((e) => e.name.endsWith(".json") && e.kind === "xor");
    if (checkpoints.length === 0 && json.length > 0) {
      return { fits: true, reason: `no checkpoint, and ${json.map((e) => e.name).join(", ")} ${json.length === 1 ? "does" : "do"} not parse as JSON: XOR payloads` };
    }
    return { fits: false, reason: checkpoints.length > 0 ? "its checkpoints are plain checkpoints, not XOR payloads" : "nothing in it looks XORed (every JSON file parses)" };
  },

  plan: (view) => planXor(view),
};

interface PayloadFile {
  /** Path in the delta. */
  rel: string;
  /** Output name: the path inside the payload folder. */
  name: string;
  size: number;
  /** undefined: a kind whose plain form we cannot recognise (decided by whether the base has it). */
  kind: PayloadKind | undefined;
}

/** The payload folder's files, documents left out, each with what its first bytes say. */
async function classify(view: DeltaView): Promise<PayloadFile[]> {
  const layout = findPayloadFolder(await view.files());
  const prefix = layout.folder === "" ? "" : `${layout.folder}/`;
  const entries: PayloadFile[] = [];
  for (const rel of layout.files) {
    const name = rel.slice(prefix.length);
    if (isReleaseDocument(name)) continue;
    const size = await view.deltaFiles.size(rel);
    const head = await view.head(rel, KIND_PROBE_BYTES);
    const kind = await plainKind(name, head, size, () => view.json(rel).then(() => true, () => false));
    entries.push({ rel, name, size, kind });
  }
  return entries;
}

function isCheckpointName(name: string): boolean {
  return /\.(bin|pt|pth|ckpt|safetensors)$/i.test(name);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** What the engine needs to explain a failed output: which base file went in, and how its check went. */
interface XorRecord {
  name: string;
  payloadPath: string;
  basePath: string;
  /** The base file's digest, once hashed against a published base list. */
  baseDigest?: string;
  baseListed?: string;
}

/**
 * Plans the recovery; `lists` are the published lists to pick from (tests
 * pass lists of their own fixtures: the real ones describe real releases).
 */
export async function planXor(view: DeltaView, lists: readonly PublishedList[] = PUBLISHED_LISTS): Promise<ConventionPlan> {
  const entries = await classify(view);
  const layout = findPayloadFolder(await view.files());
  const baseInfo = await stat(view.basePath).catch(() => undefined);
  if (baseInfo?.isDirectory() !== true) {
    throw new DeltaError(`--base ${view.baseSource} is not a directory: XOR payloads are decoded with the same-named files of a base model directory (the exact conversion the publisher used)`);
  }
  const matched = findPublishedList(releaseEvidence(view, layout.folder), lists);
  const list = matched?.list;

  // The base must hold every file the payload is XORed with: the first thing
  // that goes wrong for users of these releases, and Open-Assistant's script
  // skips such a file with a one-line message.
  const basePathOf = (name: string) => join(view.basePath, ...name.split("/"));
  const baseHas = async (name: string) => (await stat(basePathOf(name)).catch(() => undefined))?.isFile() === true;
  const missing: string[] = [];
  const plainUnknown: string[] = [];
  for (const e of entries) {
    if (e.kind === "plain") continue;
    if (await baseHas(e.name)) {
      e.kind = "xor";
    } else if (e.kind === "xor") {
      missing.push(e.name);
    } else {
      plainUnknown.push(e.name);
    }
  }
  if (missing.length > 0 || plainUnknown.length > 0) {
    const needs = [...missing, ...plainUnknown];
    throw new DeltaError(
      `the base ${view.baseSource} has no ${needs.join(", ")}, which the payload's ${needs.length === 1 ? "file of that name is" : "files of those names are"} XORed with` +
        `${plainUnknown.length > 0 ? ` (${plainUnknown.join(", ")}: not recognisably plain, so XORed like the rest)` : ""}; ` +
        `the base must be ${list?.baseHint ?? "the exact conversion of the base model that the publisher XORed with"}; nothing was written`,
    );
  }

  // A base cloned without git-lfs holds pointers where its shards should be: XORed with them,
  // the payload would give garbage that only a structural check might catch.
  for (const e of entries) {
    if (e.kind !== "xor") continue;
    const size = (await stat(basePathOf(e.name))).size;
    if (size > 0 && size < LFS_POINTER_MAX_BYTES && isLfsPointer(await readFile(basePathOf(e.name)))) {
      throw new DeltaError(`the base's ${basePathOf(e.name)} is a Git LFS pointer, not the file: run git lfs pull in the base's clone (or download it again); nothing was written`);
    }
    if (size === 0 && e.size > 0 && /\.(bin|pt|pth|ckpt|safetensors|model)$/i.test(e.name)) {
      throw new DeltaError(`the base's ${basePathOf(e.name)} is empty (0 bytes): a failed or interrupted download; the payload is XORed with it, so download it again; nothing was written`);
    }
  }

  const records = new Map<string, XorRecord>();
  const baseChecks: BaseChecks = { last: Promise.resolve() };
  const notes: string[] = [];
  const structureChecked = { files: [] as string[], notes };
  const files: PlannedFile[] = [];
  const expectedFor = (name: string): Expected | undefined => {
    const digest = list?.outputs[name];
    if (list === undefined || digest === undefined) return undefined;
    return expectedDigest(list.algorithm, digest, list.printedIn);
  };
  // Smallest first: a base of the wrong conversion shows in its config.json
  // at once, before gigabytes of shards are decoded.
  for (const e of [...entries].sort((a, b) => a.size - b.size || (a.name < b.name ? -1 : 1))) {
    const payloadPath = join(view.dir, ...e.rel.split("/"));
    const expected = expectedFor(e.name);
    if (e.kind === "plain") {
      files.push(copiedFile(e.name, payloadPath, e.size, expected));
      continue;
    }
    const baseListed = list?.base?.[e.name];
    files.push(xorFile({ name: e.name, payloadPath, basePath: basePathOf(e.name), size: e.size, expected, baseListed, algorithm: list?.algorithm ?? "sha256", list: matched, records, baseChecks, structureChecked }));
  }

  const plain = entries.filter((e) => e.kind === "plain").map((e) => e.name);
  const xored = entries.length - plain.length;
  notes.push(`payload: ${plural(xored, "file")} XORed with the base's same-named files${plain.length > 0 ? `, ${plain.length} copied as published (plain): ${plain.join(", ")}` : ""}`);
  const leftOut = [...layout.others, ...layout.files.filter((rel) => isReleaseDocument(baseName(rel)))];
  if (leftOut.length > 0) notes.push(`left out (not part of the model): ${leftOut.join(", ")}`);
  if (matched !== undefined) {
    const baseChecked = entries.filter((e) => e.kind === "xor" && matched.list.base?.[e.name] !== undefined).length;
    notes.push(`published list: ${matched.list.printedIn} (${matched.list.release}; picked by ${matched.by})${baseChecked > 0 ? `; the ${plural(baseChecked, "base file")} XORed with are checked against its base list` : ""}`);
  }

  return {
    files,
    tensors: 0,
    dropped: [],
    notes,
    fixups: () => 0,
    explain: async (err, { tempPath }) => explainXor(err, tempPath === undefined ? undefined : records.get(tempPath), matched),
    close: async () => undefined,
    baseFiles: entries.filter((e) => e.kind === "xor").map((e) => basePathOf(e.name)),
  };
}

interface XorFileSpec {
  name: string;
  payloadPath: string;
  basePath: string;
  size: number;
  expected: Expected | undefined;
  /** The base file's digest on the publisher's base list, if listed. */
  baseListed: string | undefined;
  algorithm: HashAlgorithm;
  list: MatchedList | undefined;
  records: Map<string, XorRecord>;
  baseChecks: BaseChecks;
  /** Unlisted outputs whose structure (zip CRC-32s, JSON syntax) was checked, and a note that says so. */
  structureChecked: { files: string[]; notes: string[]; at?: number };
}

/**
 * The base checks of a plan, in order. A base file that is not the
 * publisher's conversion means the whole base is the wrong one: each file
 * waits for the previous file's check (a few milliseconds: the workers only
 * finish its last chunks), and none is decoded after one failed.
 */
interface BaseChecks {
  last: Promise<void>;
  failure?: DeltaError;
}

function xorFile(spec: XorFileSpec): PlannedFile {
  const file: PlannedFile = {
    path: spec.name,
    size: spec.size,
    ...(spec.expected === undefined ? {} : { expected: spec.expected }),
    async produce(sink, { pool, advance }) {
      await spec.baseChecks.last.catch(() => undefined);
      if (spec.baseChecks.failure !== undefined) throw spec.baseChecks.failure;
      const record: XorRecord = { name: spec.name, payloadPath: spec.payloadPath, basePath: spec.basePath, ...(spec.baseListed === undefined ? {} : { baseListed: spec.baseListed }) };
      spec.records.set(sink.tempPath, record);
      // The base is hashed on the workers as it is read for the XOR: no extra pass over it.
      const baseHash = spec.baseListed === undefined ? undefined : pool.create(spec.algorithm);
      await writeXorFile(sink, spec.payloadPath, spec.basePath, {
        ...(baseHash === undefined ? {} : { onBase: (bytes: Uint8Array) => baseHash.update(bytes) }),
        advance: (bytes) => advance(bytes, spec.name),
      });
      // No list checks this file: its own structure still catches a base of another layout
      // or a damaged payload, never a base of the same layout with other values (CRC-32 is
      // linear over XOR, so such a base passes every CRC): the file stays "unverified".
      let sound: Promise<void> | undefined;
      if (file.expected === undefined) {
        await sink.settleWrites(); // the check reads the file back
        sound = checkStructure(sink.tempPath, record, spec.structureChecked);
      }
      if (baseHash === undefined) return sound === undefined ? {} : { checks: sound };
      // The publisher says the base must match their list ("if the checksums
      // above do not match yours, there is a problem"): a mismatch fails the
      // file whatever its output hashes to, and stops the run.
      const checks = baseHash.digest().then((digest) => {
        record.baseDigest = digest;
        if (digest !== spec.baseListed) throw (spec.baseChecks.failure ??= wrongBase(record, spec.list));
      });
      spec.baseChecks.last = checks;
      return { checks: sound === undefined ? checks : Promise.all([checks, sound]).then(() => undefined) };
    },
  };
  return file;
}

/** The structural check of an unlisted output: a failure names the file and both inputs that could be to blame. */
async function checkStructure(tempPath: string, record: XorRecord, checked: XorFileSpec["structureChecked"]): Promise<void> {
  const problem = await structuralProblem(tempPath, record.name);
  if (problem === undefined) {
    if (!/\.(json|bin|pt|pth|ckpt)$/i.test(record.name)) return;
    // One note, rewritten as files pass (the summary reads the notes once the run is over).
    checked.files.push(record.name);
    checked.at ??= checked.notes.push("") - 1;
    const shown = checked.files.length > 3 ? `${checked.files.slice(0, 3).join(", ")} and ${checked.files.length - 3} more` : checked.files.join(", ");
    checked.notes[checked.at] = `not verified: ${shown} only passed checks of their own structure (torch.save's zip CRC-32s, JSON syntax), ` +
      "which a base of the same layout with other values also passes; compare them with the publisher's checksums (--checksums FILE)";
    return;
  }
  throw new DeltaError(
    `recovered ${record.name} ${problem}: either the payload file ${record.payloadPath} is damaged (download it again) or the base's ${record.basePath} is not the file it was XORed with ` +
      "(the base must be byte for byte the conversion the publisher used); nothing wrong was written",
  );
}

function wrongBase(record: XorRecord, list: MatchedList | undefined): DeltaError {
  const algorithm = list?.list.algorithm ?? "sha256";
  return new DeltaError(
    `wrong base: ${record.basePath} has ${algorithm} ${record.baseDigest}, but ${list?.list.printedIn ?? "the publisher's list"} gives ${record.baseListed} for the base's ${record.name}: ` +
      `your base is not the conversion the payload was made from, so ${record.name} cannot be recovered from it; the base must be ${list?.list.baseHint ?? "that exact conversion"}; nothing wrong was written`,
  );
}

/** A recovered file that failed its check: say which input is to blame, when the base's own list can tell. */
function explainXor(err: unknown, record: XorRecord | undefined, list: MatchedList | undefined): unknown {
  if (!(err instanceof VerifyError) || record === undefined) return err;
  if (record.baseDigest !== undefined) {
    return new VerifyError(`${err.message}; the base's ${record.name} matches ${list?.list.printedIn ?? "the publisher's base list"}, so the payload file ${record.payloadPath} is damaged: download it again (nothing wrong was written)`);
  }
  return new VerifyError(
    `${err.message}; either the payload file ${record.payloadPath} is damaged (download it again) or the base's ${record.basePath} is not the file it was XORed with ` +
      "(the base must be byte for byte the conversion the publisher used: compare it with their base checksums); nothing wrong was written",
  );
}
