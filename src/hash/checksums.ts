import { VerifyError } from "../errors.js";
import { readSmallFile } from "../io/files.js";
import { MAX_CHECKSUM_LIST_BYTES } from "../limits.js";
import { isSafeRelativePath } from "../relative-path.js";
import type { HashAlgorithm } from "./hash-pool.js";

/** A checksum list as publishers print them: one digest per file, all of one algorithm. */
export interface ChecksumList {
  algorithm: HashAlgorithm;
  /** Relative path (as written, "./" dropped) -> lower-case hex digest. */
  digests: Map<string, string>;
}

const HEX_LENGTH: Record<HashAlgorithm, number> = { sha256: 64, md5: 32 };

/**
 * A `sha256sum` or `md5sum` list: `<hex>  <path>` (or ` *<path>` for binary
 * mode) a line, or the BSD form `SHA256 (<path>) = <hex>`. The digest's
 * length says which algorithm; a list must use one. `#` lines are comments.
 */
export function parseChecksums(file: string, text: string): ChecksumList {
  const digests = new Map<string, string>();
  let algorithm: HashAlgorithm | undefined;
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "" || line.startsWith("#")) return;
    const gnu = /^([0-9a-fA-F]{32}|[0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    const bsd = /^(MD5|SHA256) \((.+)\) = ([0-9a-fA-F]{32}|[0-9a-fA-F]{64})$/.exec(line);
    const hex = gnu?.[1] ?? bsd?.[3];
    const path = (gnu?.[2] ?? bsd?.[2])?.replace(/^\.\//, "");
    if (hex === undefined || path === undefined) throw new VerifyError(`${file}:${i + 1}: not a sha256sum or md5sum line ("<digest>  <file>")`);
    const lineAlgorithm: HashAlgorithm = hex.length === HEX_LENGTH.md5 ? "md5" : "sha256";
    if (bsd !== null && bsd[1]!.toLowerCase() !== lineAlgorithm) throw new VerifyError(`${file}:${i + 1}: a ${bsd[1]} line with a ${hex.length}-digit digest`);
    if (algorithm !== undefined && algorithm !== lineAlgorithm) throw new VerifyError(`${file}:${i + 1}: mixes ${algorithm} and ${lineAlgorithm} digests; a list must use one`);
    algorithm = lineAlgorithm;
    if (!isSafeRelativePath(path)) throw new VerifyError(`${file}:${i + 1}: ${JSON.stringify(path.slice(0, 100))} is not a plain relative path inside the model`);
    if (digests.has(path)) throw new VerifyError(`${file}:${i + 1}: ${path} is listed twice`);
    digests.set(path, hex.toLowerCase());
  });
  if (algorithm === undefined) throw new VerifyError(`${file}: no checksums in it`);
  return { algorithm, digests };
}

/** A checksum list is bad input when malformed: exit 1, like any other. */
export async function readChecksums(file: string): Promise<ChecksumList> {
  return parseChecksums(file, await readSmallFile(file, MAX_CHECKSUM_LIST_BYTES, "a checksum list (a model's is a few KB)", "E_VERIFY"));
}
