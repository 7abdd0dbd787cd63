/**
 * Every output format, in one list: files of tensors (safetensors, PyTorch),
 * written by convert's generic part (shards, index, companions), and
 * whole-model files (GGUF), each written by its own module. convert and
 * apply-delta choose a format here and reach it only through this list. A
 * new output format is one module and one line below.
 */
import { OUTPUT_OPTION_FLAGS, type OutputOptions } from "../formats/output-format.js";
import { PYTORCH_OUTPUT } from "../formats/outputs/pytorch.js";
import { SAFETENSORS_OUTPUT } from "../formats/outputs/safetensors.js";
import { UsageError } from "../errors.js";
import { GGUF_OUTPUT } from "./gguf-format.js";
import { META_OUTPUT } from "./meta-format.js";

/**
 * The first is the default. Each is a TensorFileFormat (formats/output-format.ts)
 * or a ModelFileFormat (model-file-format.ts).
 */
export const OUTPUT_FORMATS = [SAFETENSORS_OUTPUT, PYTORCH_OUTPUT, GGUF_OUTPUT, META_OUTPUT] as const;

export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** "safetensors", "pytorch", "gguf", "meta": what --format takes. */
export type OutputFormatName = (typeof OUTPUT_FORMATS)[number]["name"];

export const OUTPUT_FORMAT_NAMES: readonly OutputFormatName[] = OUTPUT_FORMATS.map((f) => f.name);

export const DEFAULT_OUTPUT_FORMAT: OutputFormat = OUTPUT_FORMATS[0];

/** The format of this name (the default when none is given). */
export function outputFormatNamed(name: string | undefined): OutputFormat {
  if (name === undefined) return DEFAULT_OUTPUT_FORMAT;
  const format = OUTPUT_FORMATS.find((f) => f.name === name);
  if (format === undefined) throw new UsageError(`--format ${name} is not an output format: choose ${OUTPUT_FORMAT_NAMES.join(", ")}`);
  return format;
}

/** The format whose extension OUT has, if any. */
export function outputFormatClaiming(out: string): OutputFormat | undefined {
  return OUTPUT_FORMATS.find((f) => f.claimsFile(out));
}

/** The format OUT and --format ask for (by default: OUT's extension's, else the default); a contradiction between them is refused. */
export function chooseOutputFormat(out: string, named: string | undefined): OutputFormat {
  const claimed = outputFormatClaiming(out);
  if (named !== undefined && claimed !== undefined && claimed.name !== named) {
    throw new UsageError(`--format ${named} cannot write ${out}: its extension names the ${claimed.name} format`);
  }
  return named !== undefined ? outputFormatNamed(named) : claimed ?? DEFAULT_OUTPUT_FORMAT;
}

/** An option given to a format that does not take it is refused, naming the formats that do (a flag set to false is not given). */
export function refuseUnacceptedOutputOptions(format: OutputFormat, options: OutputOptions): void {
  for (const option of Object.keys(OUTPUT_OPTION_FLAGS) as (keyof OutputOptions)[]) {
    if (options[option] === undefined || options[option] === false || format.accepts.includes(option)) continue;
    const takers = OUTPUT_FORMATS.filter((f) => f.accepts.includes(option));
    const flag = OUTPUT_OPTION_FLAGS[option];
    if (option === "maxShardBytes" && format.kind === "model file" && format.directory !== true) throw new UsageError(`${flag} does not apply to ${format.title} output: it is one file`);
    throw new UsageError(`${flag} is for ${takers.map((f) => `${f.title} output (--format ${f.name})`).join(" or ")}, not ${format.title}`);
  }
}
