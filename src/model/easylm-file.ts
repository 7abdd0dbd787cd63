/**
 * EasyLM streaming checkpoints on disk (Koala's diffs): an extension-less
 * file recognised by its first bytes, or a folder holding exactly one, and
 * its records listed for `inspect` from one pass over their headers.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { RECORD_HEADER_BYTES, looksLikeEasyLmCheckpoint, scanEasyLmCheckpoint, type EasyLmRecord } from "../easylm/streaming-checkpoint.js";
import { openRandomAccessFile } from "../io/random-access-file.js";

/** The EasyLM checkpoint `path` names: the file itself, or the one extension-less EasyLM file of a folder; undefined otherwise. */
export async function findEasyLmFile(path: string): Promise<string | undefined> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) return undefined;
  if (info.isFile()) return (await isEasyLmFile(path)) ? path : undefined;
  if (!info.isDirectory()) return undefined;
  const names = await readdir(path).catch(() => [] as string[]);
  const found: string[] = [];
  for (const name of names.filter((n) => !n.includes(".")).sort()) {
    const file = join(path, name);
    if ((await stat(file).catch(() => undefined))?.isFile() === true && (await isEasyLmFile(file))) found.push(file);
  }
  return found.length === 1 ? found[0] : undefined;
}

async function isEasyLmFile(path: string): Promise<boolean> {
  if (path.split("/").pop()!.includes(".")) return false;
  const file = await openRandomAccessFile(path).catch(() => undefined);
  if (file === undefined) return false;
  try {
    return looksLikeEasyLmCheckpoint(await file.read(0, Math.min(RECORD_HEADER_BYTES, file.size)));
  } finally {
    await file.close();
  }
}

/** Every record of the file, from its headers (no tensor data is read). */
export async function readEasyLmRecords(path: string): Promise<EasyLmRecord[]> {
  const file = await openRandomAccessFile(path);
  try {
    return await scanEasyLmCheckpoint((p, n) => file.read(p, n), file.size, path);
  } finally {
    await file.close();
  }
}
