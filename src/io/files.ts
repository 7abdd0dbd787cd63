import type { Stats } from "node:fs";
import { readdir, realpath, stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaWeightsError, ioError, type ErrorCode } from "../errors.js";
import { JsonSyntaxError, parseJsonDocument } from "../json.js";
import { MAX_JSON_DEPTH } from "../limits.js";
import type { Confinement } from "./confine.js";
import { releasedChunk } from "./memory.js";
import { openRegularFile } from "./random-access-file.js";

/**
 * Small files read whole (JSON, checksum lists, tokens): checked to be a
 * regular file before reading (a FIFO would block for ever) and to be at
 * most `maxBytes` before any byte is read.
 */
export async function readSmallFile(path: string, maxBytes: number, what: string, code: ErrorCode = "E_IO"): Promise<string> {
  const { handle, size } = await openRegularFile(path, { verb: "read", refuse: () => new DeltaWeightsError(code, `Failed to read ${path}: it is not a regular file`) });
  try {
    if (size > maxBytes) throw new DeltaWeightsError(code, `Failed to read ${path}: ${size} bytes is more than the ${maxBytes}-byte limit for ${what}`);
    const text = await handle.readFile("utf8");
    // The bytes read are garbage now, but V8 frees them only at its next collection,
    // after the parse of the text has grown the heap: a 55 MB file would count twice.
    releasedChunk(size);
    return text;
  } catch (err) {
    if (err instanceof DeltaWeightsError) throw err;
    throw ioError("read", path, err);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** A JSON file, read with the strict bounded reader: one-line errors name the file. */
export async function readJsonFile(path: string, maxBytes: number, what: string, code: ErrorCode): Promise<unknown> {
  const text = await readSmallFile(path, maxBytes, what, code);
  try {
    return parseJsonDocument(text, MAX_JSON_DEPTH);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new DeltaWeightsError(code, `${path} is not valid JSON: ${err.message}`, { cause: err });
    throw err;
  }
}

/** How listRegularFiles treats what it finds. */
export interface ListOptions {
  /** Files of sub-directories too, as "/"-separated relative paths; a directory reached twice (a link loop) is listed once. */
  recursive?: boolean;
  maxFiles?: number;
  /**
   * A link that leads outside what `confine` allows is refused by name: for a
   * directory whose publisher chose its links (a delta to apply, a folder to
   * upload).
   */
  confine?: Confinement;
  /**
   * A pipe, socket or device is refused by name instead of passed over: in a
   * model or a delta one would otherwise go missing without a word ("holds no
   * weight files", an index ignored, a config.json left out).
   */
  refuseSpecial?: boolean;
}

/**
 * The regular files (links followed) of `dir`, sorted by name; hidden names
 * (a leading dot: .git, our temporary files) are left out.
 */
export async function listRegularFiles(dir: string, options: ListOptions = {}): Promise<string[]> {
  const files: string[] = [];
  const { recursive = false, confine, refuseSpecial = false } = options;
  const visited = new Set<string>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === "" ? dir : join(dir, ...rel.split("/"));
    let names: string[];
    try {
      if (recursive) {
        const real = await realpath(abs);
        if (visited.has(real)) return;
        visited.add(real);
      }
      names = await readdir(abs);
    } catch (err) {
      throw ioError("list", abs, err);
    }
    for (const name of names.sort()) {
      if (name.startsWith(".")) continue;
      const relPath = rel === "" ? name : `${rel}/${name}`;
      const path = join(abs, name);
      const info: Stats | undefined = await stat(path).catch(() => undefined);
      if (info === undefined) continue; // a dangling link: nothing to list
      if (!info.isFile() && !info.isDirectory()) {
        if (refuseSpecial) throw new DeltaWeightsError("E_IO", `${path} is not a regular file (a pipe, socket or device?): refused`);
        continue;
      }
      if (info.isDirectory() && !recursive) continue;
      confine?.check(path);
      if (info.isDirectory()) {
        await walk(relPath);
      } else {
        if (options.maxFiles !== undefined && files.length >= options.maxFiles) {
          throw new DeltaWeightsError("E_IO", `${dir} holds more than ${options.maxFiles} files`);
        }
        files.push(relPath);
      }
    }
  };
  await walk("");
  return files.sort();
}
