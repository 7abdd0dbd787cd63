/**
 * A Git LFS pointer: what a clone made without git-lfs holds instead of a
 * large file (about 130 bytes of text). Recognised so the user is told to
 * fetch the file rather than that it is corrupt.
 */
const LFS_SIGNATURE = "version https://git-lfs.github.com/spec/";

/** Pointer files are tiny; only files below this size are looked at. */
export const LFS_POINTER_MAX_BYTES = 1024;

export function isLfsPointer(head: Uint8Array): boolean {
  const text = new TextDecoder("latin1").decode(head.subarray(0, LFS_SIGNATURE.length));
  return text === LFS_SIGNATURE;
}
