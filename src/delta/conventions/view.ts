import { DeltaError } from "../../errors.js";
import { Confinement } from "../../io/confine.js";
import { localFileSet, type FileSet } from "../../io/file-set.js";
import { readJsonFile, readSmallFile } from "../../io/files.js";
import { JsonCursor, JsonSyntaxError } from "../../json.js";
import { MAX_INDEX_BYTES, MAX_JSON_DEPTH } from "../../limits.js";
import type { LocalSource, ModelSource } from "../../model/types.js";
import { openInputModel } from "../engine/open-input.js";
import type { DeltaView } from "./types.js";

/** A DeltaView over local directories, or downloads still arriving; close() closes whatever it opened. */
export class LocalDeltaView implements DeltaView {
  readonly source: string;
  readonly dir: string;
  readonly hubRepo?: string;
  readonly deltaFiles: FileSet;
  readonly baseSource: string;
  readonly basePath: string;
  readonly #baseFiles: FileSet | undefined;
  #model: Promise<ModelSource> | undefined;
  #base: Promise<ModelSource> | undefined;
  readonly #json = new Map<string, Promise<unknown>>();
  readonly chained: readonly LocalDeltaView[];
  /** The view whose base this one shares (a chained delta's), which opens and closes it. */
  readonly #baseOwner: LocalDeltaView | undefined;

  constructor(delta: LocalSource, base: LocalSource, chained: readonly LocalSource[] = [], baseOwner?: LocalDeltaView) {
    this.source = delta.source;
    this.dir = delta.path;
    if (delta.hub !== undefined) this.hubRepo = delta.hub.repo;
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

  async jsonMember(file: string, key: string): Promise<unknown> {
    if (!(await this.files()).includes(file)) return undefined;
    const path = await this.deltaFiles.whole(file);
    const text = await readSmallFile(path, MAX_INDEX_BYTES, "a JSON file of a delta", "E_DELTA");
    try {
      return memberOf(text, key);
    } catch (err) {
      if (err instanceof JsonSyntaxError) throw new DeltaError(`${path} is not valid JSON: ${err.message}`, { cause: err });
      throw err;
    }
  }

  model(): Promise<ModelSource> {
    return (this.#model ??= openInputModel(this.deltaFiles, this.source, "delta"));
  }

  base(): Promise<ModelSource> {
    if (this.#baseOwner !== undefined) return this.#baseOwner.base();
    return (this.#base ??= openInputModel(this.#baseFiles ?? this.basePath, this.baseSource, "base"));
  }

  async close(): Promise<void> {
    await Promise.all(this.chained.map((v) => v.close()));
    const opened = [this.#model, this.#base].filter((p): p is Promise<ModelSource> => p !== undefined);
    await Promise.all(opened.map((p) => p.then((m) => m.close(), () => undefined)));
  }
}

/** The value of `key` in a JSON object text, parsed; every other member checked and skipped without being built. */
function memberOf(text: string, key: string): unknown {
  const cursor = new JsonCursor(text, MAX_JSON_DEPTH);
  if (cursor.peekKind() !== "object") cursor.fail("expected a JSON object");
  const seen = new Set<string>();
  let value: unknown;
  for (const name of cursor.objectKeys(1)) {
    if (seen.has(name)) cursor.fail(`duplicate key ${JSON.stringify(name.slice(0, 100))}`);
    seen.add(name);
    if (name !== key) {
      cursor.skipValue(1);
      continue;
    }
    cursor.skipWhitespace();
    const start = cursor.pos;
    cursor.checkValue(1);
    value = JSON.parse(text.slice(start, cursor.pos)) as unknown;
  }
  cursor.expectEnd();
  return value;
}
