import { statSync } from "node:fs";
import { basename, join } from "node:path";
import { readJsonFile } from "../../io/files.js";
import type { LocalSource, ModelSource } from "../../model/types.js";

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

/**
 * How delta.json and the model card name a model. A Hub repo id is kept as
 * given. A local path is not published (it says nothing to anyone else and
 * leaks the publisher's file system): the config's `_name_or_path` when it
 * is a repo id, else the directory's name (with the file's, for one file).
 * Which it is, the resolver said (`given.hub`), not a guess from the name.
 */
export async function publicSourceName(model: ModelSource, given: LocalSource): Promise<string> {
  if (given.hub !== undefined) return given.source.replace(/^hf:\/\//, "");
  try {
    const config = await readJsonFile(join(model.root, "config.json"), 1_000_000, "a config", "E_MODEL");
    const name = typeof config === "object" && config !== null && Object.hasOwn(config, "_name_or_path") ? (config as { _name_or_path: unknown })._name_or_path : undefined;
    if (typeof name === "string" && REPO_ID.test(name)) return name;
  } catch {
    // no usable config: fall back to the name
  }
  return statSync(given.path).isFile() ? `${basename(model.root)}/${basename(model.source)}` : basename(model.root);
}
