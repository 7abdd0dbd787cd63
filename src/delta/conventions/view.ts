import { join } from "node:path";
import { Confinement } from "../../io/confine.js";
import { readJsonFile, listRegularFiles } from "../../io/files.js";
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
  #confinement: Confinement | undefined;

  constructor(delta: LocalSource, base: LocalSource) {
    this.source = delta.source;
    this.dir = delta.path;
    this.baseSource = base.source;
    this.basePath = base.path;
  }

  /**
   * What the delta's files may resolve to: the delta's publisher chose its
   * links, so none may lead outside its directory (see io/confine.ts).
   */
  get confinement(): Confinement {
    return (this.#confinement ??= Confinement.of(this.dir, "a delta's files must lie inside it", "E_DELTA"));
  }

  files(): Promise<readonly string[]> {
    return (this.#files ??= listRegularFiles(this.dir, { recursive: true, maxFiles: MAX_HUB_LISTING_ENTRIES }));
  }

  async json(file: string): Promise<unknown> {
    if (!(await this.files()).includes(file)) return undefined;
    let parsed = this.#json.get(file);
    if (parsed === undefined) {
      const path = join(this.dir, ...file.split("/"));
      this.confinement.check(path);
      parsed = readJsonFile(path, MAX_INDEX_BYTES, "a JSON file of a delta", "E_DELTA");
      this.#json.set(file, parsed);
    }
    return parsed;
  }

  manifest(): Promise<Manifest | undefined> {
    return (this.#manifest ??= readManifest(join(this.dir, MANIFEST_FILE)));
  }

  model(): Promise<ModelSource> {
    return (this.#model ??= openModel(this.dir, { source: this.source, confine: this.confinement }));
  }

  base(): Promise<ModelSource> {
    return (this.#base ??= openModel(this.basePath, { source: this.baseSource }));
  }

  async close(): Promise<void> {
    const opened = [this.#model, this.#base].filter((p): p is Promise<ModelSource> => p !== undefined);
    await Promise.all(opened.map((p) => p.then((m) => m.close(), () => undefined)));
  }
}
