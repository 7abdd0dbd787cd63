import { realpathSync, statSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { dirname, relative, resolve, isAbsolute, join } from "node:path";
import { DeltaWeightsError } from "../errors.js";

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
