import { statfs } from "node:fs/promises";
import { dirname, relative, resolve, isAbsolute } from "node:path";
import { DeltaWeightsError, UsageError } from "../errors.js";

/** Whether `inner` is `outer` or lies inside it. */
export function isInside(inner: string, outer: string): boolean {
  const rel = relative(resolve(outer), resolve(inner));
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/**
 * Never write into an input: the output directory may not be an input's
 * directory, lie inside it, or contain it (its files could be overwritten).
 */
export function refuseOverlap(output: string, inputs: { label: string; path: string }[]): void {
  for (const input of inputs) {
    if (isInside(output, input.path) || isInside(input.path, output)) {
      throw new UsageError(`the output ${output} overlaps the ${input.label} ${input.path}; choose a directory outside every input`);
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
