import { stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError, VerifyError } from "../../errors.js";
import type { HashPool } from "../../hash/hash-pool.js";
import { isSafeRelativePath } from "../../relative-path.js";
import { plural } from "../../text.js";
import { META_FILES, isReleaseDocument } from "../../formats/weight-files.js";
import { ENC_HEADER_BYTES, findPayloadFolder, parseEncName, writeDecryptedFile } from "./byte-codec.js";
import { findPublishedList, META_LLAMA_7B_KEY, PUBLISHED_LISTS, type MatchedList, type PublishedList } from "./published-lists.js";
import { expectedDigest, type Expected, type PlannedFile } from "../engine/recover.js";
import { copiedFile } from "../engine/tensor-file.js";
import { releaseEvidence } from "../conventions/release-evidence.js";
import type { Convention, ConventionPlan, DeltaView } from "../conventions/types.js";

/**
 * point-alpaca's .enc files (also BELLE-LLaMA-*-enc and lawyer-llama, which
 * copy its scripts): `<name>.<sha256 hex>.enc` holds the plain file's
 * sha256, then the plain file XORed with a key stream made from a key file
 * (Meta's LLaMA-7B consolidated.00.pth for point-alpaca). Each output must
 * hash to the sha256 its .enc file carries, in its name and its header.
 */
export const enc: Convention = {
  name: "enc",
  accepts: ["checksums"],

  async recognize(view) {
    const encFiles = (await view.files()).filter((f) => parseEncName(baseName(f)) !== undefined);
    return encFiles.length === 0
      ? { fits: false, reason: "no <name>.<sha256>.enc files" }
      : { fits: true, reason: `${plural(encFiles.length, "file")} named <name>.<sha256>.enc (point-alpaca's codec)` };
  },

  plan: (view) => planEnc(view),
};

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** point-alpaca's key is the first part of Meta's release; a directory of it is looked in for that file. */
const KEY_FILE = META_FILES.first;

/** Whether the key is the known one: known at once when its size differs, else once it is hashed. */
type KeyIdentity = { known: boolean; how: string };

interface EncEntry {
  /** The .enc file. */
  path: string;
  fileName: string;
  /** Output name. */
  name: string;
  sha256: string;
  size: number;
}

/**
 * Plans the recovery; `lists` are the published lists to pick from (tests
 * pass lists of their own fixtures: the real ones describe real releases).
 */
export async function planEnc(view: DeltaView, lists: readonly PublishedList[] = PUBLISHED_LISTS): Promise<ConventionPlan> {
  const key = await findKey(view);
  const layout = findPayloadFolder(await view.files());
  const prefix = layout.folder === "" ? "" : `${layout.folder}/`;
  const entries: EncEntry[] = [];
  const plain: { rel: string; name: string; size: number }[] = [];
  const leftOut = [...layout.others];
  for (const rel of layout.files) {
    const fileName = rel.slice(prefix.length);
    const path = join(view.dir, ...rel.split("/"));
    const parsed = parseEncName(fileName);
    if (parsed === undefined) {
      if (fileName.toLowerCase().endsWith(".enc")) {
        throw new DeltaError(`${path} is not named <name>.<64-hex sha256>.enc, so nothing could check what it decrypts to; rename it as published`);
      }
      if (isReleaseDocument(fileName)) leftOut.push(rel);
      else plain.push({ rel, name: fileName, size: (await stat(path)).size });
      continue;
    }
    entries.push(await checkEncFile(view, rel, path, fileName, parsed));
  }
  const outputs = [...entries.map((e) => e.name), ...plain.map((p) => p.name)];
  const twice = outputs.find((name, i) => outputs.indexOf(name) !== i);
  if (twice !== undefined) throw new DeltaError(`the delta ${view.source} holds ${twice} twice (as .enc files, or plain and encrypted): remove the extra copy`);

  const matched = findPublishedList({ ...releaseEvidence(view, layout.folder), sha256: new Map(entries.map((e) => [e.name, e.sha256])) }, lists);

  const notes = [`decrypted ${plural(entries.length, ".enc file")} with the key ${key.label}${plain.length > 0 ? `; copied as published (not encrypted): ${plain.map((p) => p.name).join(", ")}` : ""}`];
  const identity = keyIdentity(key.path, key.label, key.size, notes);
  const records = new Map<string, EncEntry>();
  const files: PlannedFile[] = entries.map((e) => encFile(e, key.path, expectedFor(e, matched), identity, records));
  for (const p of plain) {
    const digest = matched?.list.outputs[p.name];
    const expected = digest === undefined ? undefined : expectedDigest(matched!.list.algorithm, digest, matched!.list.printedIn);
    files.push(copiedFile(p.name, join(view.dir, ...p.rel.split("/")), p.size, expected));
  }

  if (leftOut.length > 0) notes.push(`left out (not part of the model): ${leftOut.join(", ")}`);
  if (matched !== undefined) notes.push(`published list: ${matched.list.printedIn} (${matched.list.release}; picked by ${matched.by})`);

  return {
    files,
    tensors: 0,
    dropped: [],
    notes,
    fixups: () => 0,
    explain: async (err, { pool, tempPath }) => {
      const entry = tempPath === undefined ? undefined : records.get(tempPath);
      return entry === undefined || !(err instanceof VerifyError) ? err : explainEnc(err, entry, key.label, await identity.settle(pool), matched, pool);
    },
    close: async () => undefined,
    baseFiles: [key.path],
  };
}

/** The key file: --base names it, or a directory holding consolidated.00.pth. */
async function findKey(view: DeltaView): Promise<{ path: string; label: string; size: number }> {
  const info = await stat(view.basePath).catch(() => undefined);
  const inDir = info?.isDirectory() === true;
  const path = inDir ? join(view.basePath, KEY_FILE) : view.basePath;
  // Messages name the key as the user named it.
  const label = inDir ? join(view.baseSource, KEY_FILE) : view.baseSource;
  const key = await stat(path).catch(() => undefined);
  if (key?.isFile() !== true) {
    throw new DeltaError(
      `--base ${view.baseSource} ${info?.isDirectory() === true ? `holds no ${KEY_FILE}` : "is not a file"}: .enc files are decrypted with a key file, ` +
        `for point-alpaca ${META_LLAMA_7B_KEY.name}; pass that file (or the directory holding it) as --base`,
    );
  }
  if (key.size === 0) throw new DeltaError(`the key ${label} is empty: .enc files are decrypted with a key file such as ${META_LLAMA_7B_KEY.name}`);
  return { path, label, size: key.size };
}

/** An .enc file's name and header must agree, and name a plain file we may write; checked before any output. */
async function checkEncFile(view: DeltaView, rel: string, path: string, fileName: string, parsed: { name: string; sha256: string }): Promise<EncEntry> {
  const { name, sha256 } = parsed;
  // Delta listings leave hidden files out, so "" and ".x" come only from
  // other listings; a name with a control character comes from any.
  if (name === "" || name.startsWith(".") || name.includes("/") || !isSafeRelativePath(name)) {
    throw new DeltaError(`${path}: the output name its name gives, ${JSON.stringify(name)}, is not a plain file name (empty, hidden or escaping the target); refusing it`);
  }
  const { size } = await stat(path);
  if (size < ENC_HEADER_BYTES) {
    throw new DeltaError(`${path} is ${plural(size, "byte")}, shorter than the ${ENC_HEADER_BYTES}-byte sha256 header of an .enc file: it is truncated; download it again`);
  }
  const header = Buffer.from(await view.head(rel, ENC_HEADER_BYTES)).toString("hex");
  if (header !== sha256) {
    throw new DeltaError(`${path}: its name says sha256 ${sha256}, its header says ${header}: the file was renamed or damaged; download it again (nothing was written)`);
  }
  return { path, fileName, name, sha256, size: size - ENC_HEADER_BYTES };
}

/**
 * The header's sha256 decides. A published list only confirms it (the .enc
 * names it lists carry the same digests) or, on a failure, names a damaged
 * download: hashing every output a second time for the list's MD5s would
 * double the work and prove nothing more.
 */
function expectedFor(entry: EncEntry, matched: MatchedList | undefined): Expected {
  const list = matched?.list;
  const listed = list?.algorithm === "sha256" ? list.outputs[entry.name] : undefined;
  if (listed !== undefined && listed !== entry.sha256) {
    throw new DeltaError(`${entry.path} says its plain file has sha256 ${entry.sha256}, ${list!.printedIn} gives ${listed}: this .enc file is not from ${list!.release}`);
  }
  const confirmed = listed !== undefined || (list?.payload !== undefined && Object.hasOwn(list.payload, entry.fileName));
  return { sha256: entry.sha256, from: confirmed ? `its .enc header (SHA-256), as ${list!.release}'s published file list names it` : "its .enc header (SHA-256)" };
}

function encFile(entry: EncEntry, keyPath: string, expected: Expected, identity: ReturnType<typeof keyIdentity>, records: Map<string, EncEntry>): PlannedFile {
  return {
    path: entry.name,
    size: entry.size,
    expected,
    async produce(sink, { pool, advance }) {
      records.set(sink.tempPath, entry);
      const known = identity.settle(pool);
      await writeDecryptedFile(sink, entry.path, keyPath, (bytes) => advance(bytes, entry.name));
      // Each file's sha256 decides; waiting here only lets the summary say
      // whether the key was Meta's (it overlaps the next file's work).
      return { checks: known.then(() => undefined) };
    },
  };
}

/**
 * Whether the key is Meta's LLaMA-7B consolidated.00.pth. Another size says
 * no at once; the right size is confirmed by hashing the key on a worker,
 * started with the first file and overlapping the decryption (the key is
 * read in full only for files longer than it, so this is one extra pass,
 * not on the critical path). The result is a note, never a failure: other
 * releases use other keys, and each file's own sha256 decides.
 */
function keyIdentity(path: string, label: string, size: number, notes: string[]): { settle(pool: HashPool): Promise<KeyIdentity> } {
  const known = META_LLAMA_7B_KEY;
  const bytes = (n: number) => `${n.toLocaleString("en-US")} bytes`;
  let result: Promise<KeyIdentity> | undefined;
  if (size !== known.size) {
    const identity = { known: false, how: `${bytes(size)}; Meta's has ${bytes(known.size)}` };
    notes.push(`key: ${label} is not ${known.name} (${identity.how}); releases other than point-alpaca use other keys, and each file's own sha256 decides`);
    result = Promise.resolve(identity);
  }
  return {
    settle(pool) {
      result ??= pool.hashFile(path).then(({ sha256 }) => {
        const identity = sha256 === known.sha256
          ? { known: true, how: "its sha256 matches" }
          : { known: false, how: `sha256 ${sha256}; Meta's has ${known.sha256}` };
        notes.push(identity.known
          ? `key: ${label} is ${known.name} (sha256 ${known.sha256.slice(0, 16)}...)`
          : `key: ${label} has the size of ${known.name} but not its sha256 (${sha256}); each file's own sha256 decides`);
        return identity;
      }, (err: unknown) => {
        const identity = { known: false, how: `it could not be hashed: ${err instanceof Error ? err.message : String(err)}` };
        notes.push(`key: ${label} could not be hashed to compare it with ${known.name} (${identity.how})`);
        return identity;
      });
      return result;
    },
  };
}

/** An output that did not hash to its .enc file's sha256: name the file, and say whether the key is the known one. */
async function explainEnc(err: VerifyError, entry: EncEntry, keyPath: string, identity: KeyIdentity, matched: MatchedList | undefined, pool: HashPool): Promise<unknown> {
  const listedMd5 = matched?.list.payload?.[entry.fileName];
  if (listedMd5 !== undefined) {
    const { md5 } = await pool.hashFile(entry.path, undefined, { md5: true });
    if (md5 !== listedMd5) {
      return new VerifyError(`${entry.path} is damaged: its md5 is ${md5}, ${matched!.list.printedIn} lists ${listedMd5}; download it again (nothing wrong was written)`);
    }
  }
  const keyIs = identity.known
    ? `the key ${keyPath} is ${META_LLAMA_7B_KEY.name} (${identity.how}), so the .enc file is damaged or truncated: download it again`
    : `the key ${keyPath} is not ${META_LLAMA_7B_KEY.name} (${identity.how}): either it is not the key this file was made with, or the .enc file is damaged`;
  return new VerifyError(`${entry.path} does not decrypt to the sha256 in its name and header: ${err.message}; ${keyIs}; nothing wrong was written`);
}
