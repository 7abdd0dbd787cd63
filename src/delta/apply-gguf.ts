/**
 * apply-delta --format gguf (or another whole-model format): the model is
 * recovered as usual (every file checked against what its publisher gave)
 * into a scratch folder of the target, then written as one file (GGUF) from
 * those verified bytes, and the scratch folder removed. The file is thus
 * made from a model proven bit-identical to the publisher's; the cost is
 * disk: the recovered safetensors and the file are both on disk until the end.
 */
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { DeltaWeightsError } from "../errors.js";
import type { Outtype } from "../gguf/llama.js";
import { HashPool } from "../hash/hash-pool.js";
import type { Runtime } from "../runtime.js";
import { convertModel, type ConvertedFile } from "../model/convert.js";
import type { ModelFileFormat } from "../model/model-file-format.js";
import type { OutputFormatName } from "../model/output-formats.js";
import { asLocalSource, type LocalSource } from "../model/types.js";

/** The scratch folder in the target that holds the recovered model until its file is written (a rerun resumes it). */
export const RECOVERED_SCRATCH = ".delta-weights-recovered";

export interface GgufApplyOutput {
  file: ConvertedFile;
  outtype: string;
}

/** The one file a whole-model output format wrote, said generically (ApplyDeltaResult.gguf is the GGUF-named form, kept for --json). */
export interface ModelFileOutput {
  /** The output format's registry name ("gguf"). */
  format: string;
  file: ConvertedFile;
  /** The tensor type chosen, for formats that choose one. */
  outtype?: string;
  /** A directory format (Meta's layout): every file written, in order (`file` is the first). */
  files?: ConvertedFile[];
}

/**
 * Runs `recoverInto` (the ordinary apply) into the scratch folder, then
 * converts to `format`. Refusals that the companion files (config.json,
 * tokenizer.model) decide come first.
 */
export async function applyAsModelFile<T extends { notes: string[] }>(
  format: ModelFileFormat<OutputFormatName>,
  options: { base: string | LocalSource; delta: string | LocalSource; target: string; force?: boolean; outtype?: Outtype; numShards?: number },
  runtime: Runtime,
  recoverInto: (scratch: string) => Promise<T>,
): Promise<T & { gguf?: GgufApplyOutput; modelFile: ModelFileOutput }> {
  const delta = asLocalSource(options.delta);
  const base = asLocalSource(options.base);
  await format.checkCompanions([delta.path, base.path], delta.source, options.numShards === undefined ? {} : { numShards: options.numShards });
  const target = resolve(options.target);
  const name = basename(target);
  // A directory format (Meta's layout) writes its files into the target itself.
  const out = format.directory === true ? target : join(target, format.fileNameFor(name));
  if (format.directory !== true && existsSync(out)) throw new DeltaWeightsError("E_IO", `${out} already exists: it is not overwritten; move it away or choose another target`);
  if (existsSync(target)) {
    const foreign = readdirSync(target).filter((f) => f !== RECOVERED_SCRATCH && !f.startsWith(".delta-weights"));
    if (foreign.length > 0 && options.force !== true) {
      throw new DeltaWeightsError("E_IO", `${target} holds other files (${foreign.slice(0, 3).join(", ")}${foreign.length > 3 ? ", ..." : ""}): choose an empty or new directory, or pass --force to write beside them`);
    }
  }
  mkdirSync(target, { recursive: true });
  const scratch = join(target, RECOVERED_SCRATCH);
  const recovered = await recoverInto(scratch);
  const pool = runtime.hashPool ?? new HashPool();
  let converted;
  try {
    converted = await convertModel(scratch, out, {
      format: format.name,
      ...(options.outtype === undefined ? {} : { outtype: options.outtype }),
      ...(options.numShards === undefined ? {} : { numShards: options.numShards }),
      ...(format.directory === true ? { force: true } : {}),
      ...(format.accepts.includes("modelName") ? { modelName: name } : {}),
      createHasher: () => pool.create(),
    });
  } finally {
    if (runtime.hashPool === undefined) await pool.close();
  }
  await rm(scratch, { recursive: true, force: true });
  if (format.directory === true) {
    return {
      ...recovered,
      notes: [...recovered.notes, `${format.title}: ${converted.files.map((f) => f.path).join(", ")} written from the verified model; the recovered safetensors files were removed`],
      modelFile: { format: format.name, file: converted.files[0]!, files: converted.files },
    };
  }
  const file = { ...converted.files[0]!, path: basename(out) };
  return {
    ...recovered,
    notes: [...recovered.notes, `${format.title}: ${file.path}${converted.outtype === undefined ? "" : ` (--outtype ${converted.outtype})`} written from the verified model; the recovered safetensors files were removed`],
    gguf: { file, outtype: converted.outtype ?? "" },
    modelFile: { format: format.name, file, ...(converted.outtype === undefined ? {} : { outtype: converted.outtype }) },
  };
}
