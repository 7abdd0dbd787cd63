/**
 * One error class per failure domain, each with a stable `code`.
 * The CLI prints `error: ${message}` on one line; messages name the file
 * (and tensor) and the rule broken, so they must stand alone.
 */
import { printable } from "./text.js";

export type ErrorCode =
  | "E_SAFETENSORS"   // a safetensors file breaks the format
  | "E_PYTORCH"       // a PyTorch checkpoint is malformed or unsafe
  | "E_MODEL"         // a model directory / index is inconsistent
  | "E_DELTA"         // a delta or its manifest is invalid, or a base does not match it
  | "E_VERIFY"        // a checksum does not match
  | "E_IO"            // reading or writing failed
  | "E_HUB"           // the Hugging Face Hub refused or failed
  | "E_USAGE";        // the command line is wrong (exit 2)

export class DeltaWeightsError extends Error {
  readonly code: ErrorCode;
  /**
   * Which rule was broken, for programs (`--json` prints it as
   * `error.rule`): set by the format readers and the checks of a base
   * against a delta, so callers tell errors apart without reading messages.
   */
  readonly rule?: ErrorRule;
  /**
   * Messages quote names from files we did not write (tensors, paths from a
   * manifest): escaped here, once for every error, so a message is one line
   * and sends nothing to a terminal whoever prints it.
   */
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; rule?: ErrorRule }) {
    super(printable(message), options);
    this.code = code;
    this.name = new.target.name;
    if (options?.rule !== undefined) this.rule = options.rule;
  }
}

/**
 * The rules of the safetensors format (and of our writer, `write-*`) a file
 * breaks: header-* its length prefix and JSON, offsets-* its data_offsets,
 * data-* / trailing-bytes the data section's extent.
 */
export type SafetensorsRule =
  | "file-too-short" | "header-empty" | "header-too-large" | "header-past-end" | "header-not-utf8" | "header-not-json" | "header-not-object"
  | "data-past-end" | "trailing-bytes" | "offsets-hole" | "offsets-overlap" | "offsets-reversed" | "offsets-size-mismatch" | "offsets-too-large"
  | "entry-malformed" | "dtype-unknown" | "shape-invalid" | "shape-overflow" | "tensor-duplicate" | "too-many-tensors" | "metadata-invalid"
  | "tensor-not-in-file" | "read-after-close" | "truncated"
  | "write-refused" | "write-out-of-order" | "write-length-mismatch" | "write-incomplete";

/**
 * The rules a PyTorch checkpoint breaks: zip-* its archive, pickle-* its
 * data.pkl as a pickle, the others its contents as a state dict.
 */
export type PytorchRule =
  | "zip-not-zip" | "zip-unsupported" | "zip-malformed" | "zip-too-large" | "zip-past-end" | "zip-duplicate-entry"
  | "pickle-malformed" | "pickle-truncated" | "pickle-protocol" | "pickle-too-large" | "pickle-forbidden-global"
  | "checkpoint-empty" | "checkpoint-legacy" | "checkpoint-no-pickle" | "checkpoint-ambiguous" | "byteorder-unsupported"
  | "storage-malformed" | "storage-missing" | "storage-size-mismatch" | "call-forbidden" | "call-malformed"
  | "tensor-malformed" | "tensor-past-storage" | "tensor-overlapping" | "data-overlap" | "not-a-state-dict" | "nested-state-dict" | "too-many-tensors"
  | "tensor-not-in-file" | "read-after-close" | "truncated";

/** The rules an EasyLM (Flax msgpack) checkpoint breaks. */
export type EasyLmRule = "record-malformed" | "record-truncated" | "record-unsupported" | "record-duplicate" | "too-many-records" | "no-records" | "record-too-large";

/** Why a model cannot be written as GGUF: its architecture, hyperparameters, tokenizer or tensors are outside what llama.cpp's converter writes. */
export type GgufRule = "gguf-architecture" | "gguf-config" | "gguf-tokenizer" | "gguf-tensor" | "gguf-outtype";

export type ErrorRule = SafetensorsRule | PytorchRule | EasyLmRule | GgufRule | InputRule;

/** `Failed to read ${file}: tensor "${tensor}" ${problem}` */
export class SafetensorsError extends DeltaWeightsError {
  declare readonly rule: SafetensorsRule;
  constructor(rule: SafetensorsRule, readonly file: string, readonly problem: string, readonly tensor?: string, options?: { cause?: unknown }) {
    super("E_SAFETENSORS", formatReadError(file, problem, tensor), { ...options, rule });
  }
}

export class PytorchError extends DeltaWeightsError {
  declare readonly rule: PytorchRule;
  constructor(rule: PytorchRule, readonly file: string, readonly problem: string, readonly tensor?: string, options?: { cause?: unknown }) {
    super("E_PYTORCH", formatReadError(file, problem, tensor), { ...options, rule });
  }
}

export class ModelError extends DeltaWeightsError {
  constructor(message: string, options?: { cause?: unknown; rule?: GgufRule }) {
    super("E_MODEL", message, options);
  }
}

/**
 * Which rule a base and a delta that do not belong together broke, for
 * programs (`--json` reports it as `error.rule`): a tensor the convention
 * needs is missing from the base, or has another shape; an input is of a
 * format that is neither a model nor a delta (a LoRA adapter, a quantized
 * model, GGUF, Meta's original checkpoint); base and delta were swapped.
 */
export type InputRule = "base-tensor-missing" | "base-shape-mismatch" | "foreign-format" | "inputs-swapped";

export class DeltaError extends DeltaWeightsError {
  declare readonly rule?: InputRule | EasyLmRule;
  constructor(message: string, options?: { cause?: unknown; rule?: InputRule | EasyLmRule }) {
    super("E_DELTA", message, options);
  }
}

export class VerifyError extends DeltaWeightsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_VERIFY", message, options);
  }
}

export class HubError extends DeltaWeightsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_HUB", message, options);
  }
}

export class UsageError extends DeltaWeightsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_USAGE", message, options);
  }
}

/** A file ended before a read it was sized for: it shrank (or was cut) while open. Format readers name the tensor. */
export class TruncatedError extends DeltaWeightsError {
  constructor(readonly path: string, readonly position: number) {
    super("E_IO", `Failed to read ${path}: it ended at byte ${position} (it was cut short while being read?)`);
  }
}

/**
 * The file and tensor names, and the values a problem quotes, come from
 * files we did not write (a header, a manifest, an archive's entry names):
 * every control character is escaped here, so the message is one line
 * whoever prints it (a program using the library, a log), not only the CLI.
 */
export function formatReadError(file: string, problem: string, tensor?: string): string {
  return printable(tensor === undefined
    ? `Failed to read ${file}: ${problem}`
    : `Failed to read ${file}: tensor "${tensor}" ${problem}`);
}

/** What a Node system error code means, in words. */
export const SYSTEM_CAUSES: Readonly<Record<string, string>> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EEXIST: "already exists",
  EISDIR: "is a directory",
  ENOTDIR: "not a directory",
  ENOTEMPTY: "directory not empty",
  EMFILE: "too many open files",
};

/** Turns a Node system error (ENOENT, ENOSPC, ...) into a one-line message. */
export function ioError(action: string, path: string, cause: unknown): DeltaWeightsError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  const why = (code !== undefined && Object.hasOwn(SYSTEM_CAUSES, code) ? SYSTEM_CAUSES[code] : undefined)
    ?? (cause instanceof Error ? cause.message.split("\n")[0] : String(cause));
  return new DeltaWeightsError("E_IO", `Failed to ${action} ${path}: ${why}`, { cause });
}
