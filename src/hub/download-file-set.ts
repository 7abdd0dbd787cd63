import { DeltaWeightsError } from "../errors.js";
import type { FileSet } from "../io/file-set.js";
import { readExactly } from "../io/random-access-file.js";
import type { RandomAccess } from "../tensors.js";
import type { FileDownload, SnapshotDownload } from "./download-types.js";

/**
 * A snapshot download as a FileSet: files are listed at once, their bytes
 * read as they arrive (each read waits for its range), and `whole` waits
 * for a file to be verified and linked into the snapshot.
 */
export function downloadFileSet(download: SnapshotDownload): FileSet {
  const files = [...download.files].sort();
  const handle = (path: string): FileDownload => {
    if (!files.includes(path)) throw new DeltaWeightsError("E_IO", `${download.repo}: the download has no file ${path}`);
    return download.file(path);
  };
  // Streamed: a released file is closed by every reader before it is deleted (an open descriptor would keep its disk space).
  const opened = new Map<string, Set<ArrivingFile>>();
  const stream = download.stream;
  return {
    root: download.dir,
    list: async () => files,
    size: async (path) => handle(path).size,
    open: async (path) => {
      const file = new ArrivingFile(handle(path), `${download.dir}/${path}`);
      if (stream !== undefined) opened.set(path, (opened.get(path) ?? new Set()).add(file));
      return file;
    },
    // Streamed, a file is fetched only when read: reading all of it is what asks for all of it.
    whole: async (path) => {
      const file = handle(path);
      if (stream !== undefined) await file.waitForRange(0, file.size);
      return file.complete;
    },
    settled: download.done.then(() => undefined),
    ...(stream === undefined ? {} : {
      stream: {
        plan: (paths: readonly string[]) => stream.plan(paths),
        release: async (path: string) => {
          await Promise.all([...(opened.get(path) ?? [])].map((f) => f.close()));
          opened.delete(path);
          await stream.release(path);
        },
        finish: () => stream.finish(),
      },
    }),
  };
}

/** Reads of a file still downloading: each waits for its bytes, then reads them from wherever they are now. */
class ArrivingFile implements RandomAccess {
  readonly size: number;
  #handle: ReturnType<FileDownload["open"]> | undefined;
  #closed = false;

  constructor(private readonly download: FileDownload, readonly label: string) {
    this.size = download.size;
  }

  async read(position: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0 || position + length > this.size) {
      throw new DeltaWeightsError("E_IO", `Failed to read ${this.label}: bytes [${position}, ${position + length}) are past its end (${this.size} bytes)`);
    }
    if (this.#closed) throw new DeltaWeightsError("E_IO", `Failed to read ${this.label}: it was read after the file was closed`);
    await this.download.waitForRange(position, position + length);
    // Closed while waiting: opening now would leave a descriptor nobody closes.
    if (this.#closed) throw new DeltaWeightsError("E_IO", `Failed to read ${this.label}: it was read after the file was closed`);
    // Opened once the first bytes are there: the partial file (renamed to the blob when verified; the descriptor stays valid).
    const handle = await (this.#handle ??= this.download.open());
    return readExactly(this.label, position, length, async (buffer, offset, count, at) => (await handle.read(buffer, offset, count, at)).bytesRead);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const handle = await this.#handle?.catch(() => undefined);
    await handle?.close().catch(() => undefined);
  }
}
