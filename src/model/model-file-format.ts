import type { ByteSink, OutputOption, OutputOptions } from "../formats/output-format.js";
import type { OnProgress } from "../progress.js";
import type { ModelSource } from "./types.js";

/**
 * An output format whose one file holds a whole model, made from the model
 * rather than tensor by tensor (GGUF: it needs the config and tokenizer, and
 * reorders and requantizes tensors). The generic part (the file's temporary
 * name, lock, free-space check, progress) is convert's.
 */
export interface ModelFileFormat<Name extends string = string> {
  readonly kind: "model file";
  readonly name: Name;
  /** For messages: "GGUF". */
  readonly title: string;
  /** Whether OUT, a file name, asks for this format (by its extension). */
  claimsFile(name: string): boolean;
  /** The file's name for a model called `modelName` (apply-delta names it after the target directory). */
  fileNameFor(modelName: string): string;
  /** The options it takes. */
  readonly accepts: readonly OutputOption[];
  /** Whether it writes a directory of files (Meta's layout) rather than one file: OUT is then a directory. */
  readonly directory?: boolean;
  /** The refusals that the model's companion files decide, read from the first of `dirs` that holds each: said before a model is recovered to be written. */
  checkCompanions(dirs: readonly string[], label: string, options?: OutputOptions): Promise<void>;
  /**
   * Starts what writing will need that is slow to start (GGUF's Q8_0 worker
   * thread), so that it starts while the model is opened and planned. Writes
   * nothing; a run that stops before writing loses only the start.
   */
  warmUp?(options: OutputOptions): void;
  /** Every refusal (architecture, tokenizer, tensors), before any output; then how the file is written. */
  prepare(model: ModelSource, options: OutputOptions): Promise<PreparedModelFile>;
}

export interface PreparedModelFile {
  /** The file's size, known before it is written. */
  readonly fileSize: number;
  /** Tensors the file holds. */
  readonly tensors: number;
  /** The source's tensor bytes it reads (progress counts these). */
  readonly sourceBytes: number;
  /** The bytes of the file that are not its tensors' data. */
  readonly headerBytes: number;
  /** The tensor type chosen, for formats that choose one (GGUF's --outtype). */
  readonly outtype?: string;
  write(sink: ByteSink, label: string, onProgress?: OnProgress): Promise<void>;
  /** A directory format's files, in the order they are written (then `write` is not called). */
  readonly files?: readonly PreparedOutputFile[];
}

/** One file of a directory format's output. */
export interface PreparedOutputFile {
  /** Relative to the output directory. */
  readonly name: string;
  write(sink: ByteSink, label: string, onProgress?: OnProgress): Promise<void>;
}
