import { join } from "node:path";
import { DeltaError } from "../../errors.js";
import { readJsonFile, listRegularFiles } from "../../io/files.js";
import { openRandomAccessFile } from "../../io/random-access-file.js";
import { MAX_HUB_LISTING_ENTRIES, MAX_INDEX_BYTES } from "../../limits.js";
import { openModel } from "../../model/open-model.js";
import type { LocalSource, ModelSource } from "../../model/types.js";
import { MANIFEST_FILE, type Manifest } from "../manifest.js";
import { readManifest } from "../read-manifest.js";
import type { DeltaView } from "./types.js";

/** A DeltaView over local directories; close() closes whatever it opened. */
export class LocalDeltaView implements DeltaView {
  readonly source: string;
  readonly dir: string;
  readonly baseSource: string;
  readonly basePath: string;
  #files: Promise<string[]> | undefined;
  #manifest: Promise<Manifest | undefined> | undefined;
  #model: Promise<ModelSource> | undefined;
  #base: Promise<ModelSource> | undefined;
  readonly #json = new Map<string, Promise<unknown>>();

  constructor(delta: LocalSource, base: LocalSource) {
    this.source = delta.source;
    this.dir = delta.path;
    this.baseSource = base.source;
    this.basePath = base.path;
  }

  files(): Promise<readonly string[]> {
    return (this.#files ??= listRegularFiles(this.dir, { recursive: true, maxFiles: MAX_HUB_LISTING_ENTRIES }));
  }

  async head(file: string, bytes: number): Promise<Uint8Array> {
    if (!(await this.files()).includes(file)) throw new DeltaError(`the delta ${this.source} has no file ${file}`);
    const path = join(this.dir, ...file.split("/"));
    const input = await openRandomAccessFile(path);
    try {
      return await input.read(0, Math.min(bytes, input.size));
    } finally {
      await input.close();
    }
  }

  async json(file: string): Promise<unknown> {
    if (!(await this.files()).includes(file)) return undefined;
    let parsed = this.#json.get(file);
    if (parsed === undefined) {
      parsed = readJsonFile(join(this.dir, ...file.split("/")), MAX_INDEX_BYTES, "a JSON file of a delta", "E_DELTA");
      this.#json.set(file, parsed);
    }
    return parsed;
  }

  manifest(): Promise<Manifest | undefined> {
    return (this.#manifest ??= readManifest(join(this.dir, MANIFEST_FILE)));
  }

  model(): Promise<ModelSource> {
    return (this.#model ??= openModel(this.dir, { source: this.source }));
  }

  base(): Promise<ModelSource> {
    return (this.#base ??= openModel(this.basePath, { source: this.baseSource }));
  }

  async close(): Promise<void> {
    const opened = [this.#model, this.#base].filter((p): p is Promise<ModelSource> => p !== undefined);
    await Promise.all(opened.map((p) => p.then((m) => m.close(), () => undefined)));
  }
}
