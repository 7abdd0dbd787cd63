import { constants, type Stats } from "node:fs";
import { open, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { DeltaWeightsError, ioError, type ErrorCode } from "../errors.js";
import { JsonSyntaxError, parseJsonDocument } from "../json.js";
import { MAX_JSON_DEPTH } from "../limits.js";

/**
 * Small files read whole (JSON, checksum lists, tokens): checked to be a
 * regular file before reading (a FIFO would block for ever) and to be at
 * most `maxBytes` before any byte is read.
 */
export async function readSmallFile(path: string, maxBytes: number, what: string, code: ErrorCode = "E_IO"): Promise<string> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw ioError("read", path, err);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new DeltaWeightsError(code, `Failed to read ${path}: it is not a regular file`);
    if (info.size > maxBytes) throw new DeltaWeightsError(code, `Failed to read ${path}: ${info.size} bytes is more than the ${maxBytes}-byte limit for ${what}`);
    return await handle.readFile("utf8");
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

/**
 * The regular files (links followed) of `dir`, sorted by name; hidden names
 * (a leading dot: .git, our temporary files) are left out. With `recursive`,
 * files of sub-directories too, as "/"-separated relative paths, at most
 * `maxFiles` of them.
 */
export async function listRegularFiles(dir: string, options: { recursive?: boolean; maxFiles?: number } = {}): Promise<string[]> {
  const files: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === "" ? dir : join(dir, ...rel.split("/"));
    let names: string[];
    try {
      names = await readdir(abs);
    } catch (err) {
      throw ioError("list", abs, err);
    }
    for (const name of names.sort()) {
      if (name.startsWith(".")) continue;
      const relPath = rel === "" ? name : `${rel}/${name}`;
      const info: Stats | undefined = await stat(join(abs, name)).catch(() => undefined);
      if (info?.isDirectory() === true && options.recursive === true) {
        await walk(relPath);
      } else if (info?.isFile() === true) {
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
