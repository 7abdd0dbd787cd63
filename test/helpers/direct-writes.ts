import { closeSync, constants, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Whether `dir`'s file system takes O_DIRECT at all (Linux on ext4, xfs, btrfs: yes); output files there are written past the page cache. */
export function directWritesSupported(dir: string): boolean {
  const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
  if (flag === undefined) return false;
  const probe = join(dir, "probe");
  writeFileSync(probe, "");
  try {
    closeSync(openSync(probe, constants.O_WRONLY | flag));
    return true;
  } catch {
    return false;
  }
}
