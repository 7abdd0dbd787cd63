import { dirname, join } from "node:path";
import type { DType } from "../../dtypes.js";
import type { HashPool } from "../../hash/hash-pool.js";
import type { InputFile, PlannedFile } from "../engine/recover.js";
import { MANIFEST_FORMAT, serializeManifest, type FileEntry, type TargetTensorEntry } from "../own/manifest.js";
import { VERSION } from "../../version.js";
import { openModel } from "../../model/open-model.js";

/**
 * What a merge wrote, recorded in the target as a manifest in delta.json's
 * format (`delta-weights verify DIR --manifest DIR/MERGE_RECORD_FILE`
 * re-checks every file, and names the first tensor that differs): every
 * output file's size and sha256, every tensor's dtype, shape and sha256,
 * each safetensors header. A merge from adapters has nothing a publisher
 * checked, so the record proves only that the files are still what this
 * run wrote; it is the last output, made once every other one is.
 */
export const MERGE_RECORD_FILE = "delta-weights-merge.json";

type Digest = Promise<string>;

export class MergeRecord {
  readonly #files = new Map<string, Promise<FileEntry>>();
  readonly #tensors = new Map<string, { dtype: DType; shape: number[]; file: string; sha256: Digest }>();
  readonly #headers = new Map<string, string>();
  readonly #index: { file: string; text: string } | undefined;

  constructor(readonly baseSource: string, readonly targetSource: string, index?: { file: string; text: string }) {
    this.#index = index;
  }

  /** A safetensors output's header text. */
  weightFile(path: string, headerText: string): void {
    this.#headers.set(path, headerText);
  }

  fileDigest(path: string, entry: Promise<FileEntry>): void {
    // Awaited when the record is written; a failure there is the run's failure already reported.
    entry.catch(() => undefined);
    this.#files.set(path, entry);
  }

  tensorDigest(name: string, spec: { dtype: DType; shape: number[]; file: string }, sha256: Digest): void {
    sha256.catch(() => undefined);
    this.#tensors.set(name, { ...spec, sha256 });
  }

  async #hashKept(pool: HashPool, local: string, path: string): Promise<void> {
    this.fileDigest(path, pool.hashFile(local).then((h) => ({ size: h.size, sha256: h.sha256 })));
    const model = await openModel(local);
    try {
      for (const t of model.tensors.values()) {
        const hasher = pool.create();
        for await (const chunk of model.readTensor(t.name)) await hasher.update(chunk);
        this.tensorDigest(t.name, { dtype: t.dtype, shape: t.shape, file: path }, hasher.digest());
      }
    } finally {
      await model.close();
    }
  }

  /** The manifest as the last planned file. `copies` are hashed when it is made, on the run's pool. */
  plannedFile(weightFiles: readonly string[], copies: readonly { path: string; from: InputFile }[], texts: readonly { path: string; text: string }[]): PlannedFile {
    return {
      path: MERGE_RECORD_FILE,
      size: 0,
      produce: async (sink, { pool, advance }) => {
        // Copied files are hashed from their inputs (the same bytes: the copies may not have their names yet).
        for (const c of copies) {
          this.fileDigest(c.path, pool.hashFile(await c.from.files.whole(c.from.path)).then((h) => ({ size: h.size, sha256: h.sha256 })));
        }
        for (const t of texts) this.fileDigest(t.path, textDigest(pool, t.text));
        // A weight file a resumed run kept (it matched a checksums list) was not made now: it and its
        // tensors are hashed where it is, so the record is the same bytes as a fresh run's.
        for (const path of weightFiles) {
          if (!this.#files.has(path)) await this.#hashKept(pool, join(dirname(sink.finalPath), path), path);
        }
        const files = await Promise.all([...this.#files].map(async ([path, entry]) => [path, await entry] as const));
        const tensors = await Promise.all([...this.#tensors].sort(([a], [b]) => (a < b ? -1 : 1)).map(async ([name, t]) => [name, { dtype: t.dtype, shape: t.shape, sha256: await t.sha256, file: t.file } satisfies TargetTensorEntry] as const));
        const text = serializeManifest({
          format: MANIFEST_FORMAT,
          codec: "add",
          tool: `delta-weights ${VERSION}`,
          base: { source: this.baseSource, tensors: [], dropped: [] },
          target: { source: this.targetSource, files: files.sort(([a], [b]) => (a < b ? -1 : 1)), tensors, headers: this.#headers, index: this.#index },
          delta: { files: [], weights: [] },
        });
        const bytes = new TextEncoder().encode(text);
        await sink.write(bytes);
        advance(bytes.length, MERGE_RECORD_FILE);
        return {};
      },
    };
  }
}

async function textDigest(pool: HashPool, text: string): Promise<FileEntry> {
  const bytes = new TextEncoder().encode(text);
  const hasher = pool.create();
  await hasher.update(bytes);
  return { size: bytes.length, sha256: await hasher.digest() };
}
