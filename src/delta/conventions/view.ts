import { DeltaError } from "../../errors.js";
import { Confinement } from "../../io/confine.js";
import { localFileSet, type FileSet } from "../../io/file-set.js";
import { readJsonFile } from "../../io/files.js";
import { MAX_INDEX_BYTES } from "../../limits.js";
import { openModel } from "../../model/open-model.js";
import type { LocalSource, ModelSource } from "../../model/types.js";
import { MANIFEST_FILE, type Manifest } from "../manifest.js";
import { readManifest } from "../read-manifest.js";
import type { DeltaView } from "./types.js";

/** A DeltaView over local directories, or downloads still arriving; close() closes whatever it opened. */
export class LocalDeltaView implements DeltaView {
  readonly source: string;
  readonly dir: string;
  readonly deltaFiles: FileSet;
  readonly baseSource: string;
  readonly basePath: string;
  readonly #baseFiles: FileSet | undefined;
  #manifest: Promise<Manifest | undefined> | undefined;
  #model: Promise<ModelSource> | undefined;
  #base: Promise<ModelSource> | undefined;
  readonly #json = new Map<string, Promise<unknown>>();
  readonly chained: readonly LocalDeltaView[];
  /** The view whose base this one shares (a chained delta's), which opens and closes it. */
  readonly #baseOwner: LocalDeltaView | undefined;

  constructor(delta: LocalSource, base: LocalSource, chained: readonly LocalSource[] = [], baseOwner?: LocalDeltaView) {
    this.source = delta.source;
    this.dir = delta.path;
    // The delta's publisher chose its links: none may lead outside it (see io/confine.ts).
    this.deltaFiles = delta.files ?? localFileSet(delta.path, { confine: Confinement.of(delta.path, "a delta's files must lie inside it", "E_DELTA") });
    this.baseSource = base.source;
    this.basePath = base.path;
    this.#baseFiles = base.files;
    this.#baseOwner = baseOwner;
    // They share the base: opened once, by this view.
    this.chained = chained.map((more) => new LocalDeltaView(more, base, [], this));
  }

  files(): Promise<readonly string[]> {
    return this.deltaFiles.list();
  }

  /** Resolves once every input file is complete and verified (at once, for local ones). */
  async settled(): Promise<void> {
    await Promise.all([this.deltaFiles.settled, this.#baseFiles?.settled, ...this.chained.map((v) => v.settled())]);
  }

  /** Every input file complete and verified; a delta streamed without a copy is fetched whole for this. */
  async complete(): Promise<void> {
    await Promise.all(this.chained.map((v) => v.complete()));
    if (this.deltaFiles.stream !== undefined) await Promise.all((await this.files()).map((f) => this.deltaFiles.whole(f)));
    await this.settled();
  }

  async head(file: string, bytes: number): Promise<Uint8Array> {
    if (!(await this.files()).includes(file)) throw new DeltaError(`the delta ${this.source} has no file ${file}`);
    const input = await this.deltaFiles.open(file);
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
      parsed = this.deltaFiles.whole(file).then((path) => readJsonFile(path, MAX_INDEX_BYTES, "a JSON file of a delta", "E_DELTA"));
      this.#json.set(file, parsed);
    }
    return parsed;
  }

  manifest(): Promise<Manifest | undefined> {
    return (this.#manifest ??= this.files().then(async (files) => (files.includes(MANIFEST_FILE) ? readManifest(await this.deltaFiles.whole(MANIFEST_FILE)) : undefined)));
  }

  model(): Promise<ModelSource> {
    return (this.#model ??= openModel(this.deltaFiles, { source: this.source }));
  }

  base(): Promise<ModelSource> {
    if (this.#baseOwner !== undefined) return this.#baseOwner.base();
    return (this.#base ??= openModel(this.#baseFiles ?? this.basePath, { source: this.baseSource }));
  }

  async close(): Promise<void> {
    await Promise.all(this.chained.map((v) => v.close()));
    const opened = [this.#model, this.#base].filter((p): p is Promise<ModelSource> => p !== undefined);
    await Promise.all(opened.map((p) => p.then((m) => m.close(), () => undefined)));
  }
}
