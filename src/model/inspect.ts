/**
 * What a model holds: every tensor (name, dtype, shape, bytes, file), totals
 * by dtype, the parameter count and each weight file's metadata. Reads
 * headers only, never tensor data.
 */
import type { DType } from "../dtypes.js";
import { formatBytes, printable } from "../text.js";
import { basename } from "node:path";
import { findEasyLmFile, readEasyLmRecords } from "./easylm-file.js";
import { openModel } from "./open-model.js";
import { asLocalSource, type LocalSource } from "./types.js";

export interface InspectedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: number;
  file: string;
}

export interface DtypeTotal {
  tensors: number;
  parameters: number;
  bytes: number;
}

export interface InspectResult {
  source: string;
  /** "easylm": an EasyLM streaming checkpoint (Koala's diffs), listed by its key paths. */
  format: "safetensors" | "pytorch" | "easylm";
  /** How the files are read when they are not a Hugging Face layout (a Meta checkpoint). */
  readAs?: string;
  /** Weight files, relative to the model's root, in shard order. */
  files: string[];
  indexFile: string | null;
  /** Non-weight files that travel with the model. */
  extraFiles: string[];
  tensors: InspectedTensor[];
  totals: { tensors: number; parameters: number; bytes: number; byDtype: Partial<Record<DType, DtypeTotal>> };
  parameters: number;
  /** `__metadata__` per weight file that has one. */
  metadata: Record<string, Record<string, string>>;
}

export async function inspectModel(src: string | LocalSource): Promise<InspectResult> {
  const input = asLocalSource(src);
  const easyLm = await findEasyLmFile(input.path);
  if (easyLm !== undefined) return inspectEasyLm(input.source, easyLm);
  const model = await openModel(input.path, { source: input.source });
  try {
    const tensors: InspectedTensor[] = [...model.tensors.values()].map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: [...t.shape],
      bytes: t.byteLength,
      file: t.file,
    }));
    const metadata: Record<string, Record<string, string>> = {};
    for (const [file, meta] of model.metadata) metadata[file] = { ...meta };
    return {
      source: model.source,
      format: model.format,
      ...(model.readAs === undefined ? {} : { readAs: model.readAs }),
      files: [...model.weightFiles],
      indexFile: model.indexFile ?? null,
      extraFiles: [...model.extraFiles],
      ...totalsOf(tensors),
      metadata,
    };
  } finally {
    await model.close();
  }
}

/** An EasyLM checkpoint's records as tensors named by their key paths ("transformer/h/0/attention/wq/kernel"), as EasyLM stores them. */
async function inspectEasyLm(source: string, path: string): Promise<InspectResult> {
  const file = basename(path);
  const tensors = (await readEasyLmRecords(path)).map((r) => ({ name: r.key.join("/"), dtype: r.dtype, shape: [...r.shape], bytes: r.byteLength, file }));
  return { source, format: "easylm", readAs: "EasyLM streaming checkpoint (msgpack records; Flax kernels are [in, out])", files: [file], indexFile: null, extraFiles: [], metadata: {}, ...totalsOf(tensors) };
}

function totalsOf(tensors: InspectedTensor[]): Pick<InspectResult, "tensors" | "totals" | "parameters"> {
  const byDtype: Partial<Record<DType, DtypeTotal>> = {};
  let parameters = 0;
  let bytes = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const total = (byDtype[t.dtype] ??= { tensors: 0, parameters: 0, bytes: 0 });
    total.tensors++;
    total.parameters += numel;
    total.bytes += t.bytes;
    parameters += numel;
    bytes += t.bytes;
  }
  return { tensors, totals: { tensors: tensors.length, parameters, bytes, byDtype }, parameters };
}

/**
 * The human-readable report: an aligned table, totals by dtype, metadata.
 * Names and metadata come from the model's files: every one is escaped so
 * that a file cannot write control sequences to the terminal.
 */
export function formatInspectReport(result: InspectResult): string[] {
  const multiFile = result.files.length > 1;
  const header = ["tensor", "dtype", "shape", "bytes", ...(multiFile ? ["file"] : [])];
  const rows = result.tensors.map((t) => [printable(t.name), t.dtype, `[${t.shape.join(", ")}]`, t.bytes.toLocaleString("en-US"), ...(multiFile ? [printable(t.file)] : [])]);
  const lines = [`${printable(result.source)}: ${result.readAs ?? result.format}, ${result.files.length} weight file${result.files.length === 1 ? "" : "s"}${result.indexFile === null ? "" : ` (index ${result.indexFile})`}`, ""];
  // Row by row: push(...rows) spreads every row as an argument, too many for the stack past about 120,000.
  for (const line of table(header, rows, new Set([3]))) lines.push(line);
  lines.push("");

  const dtypeRows = Object.entries(result.totals.byDtype).map(([dtype, total]) => [
    dtype,
    String(total.tensors),
    total.parameters.toLocaleString("en-US"),
    total.bytes.toLocaleString("en-US"),
    formatBytes(total.bytes),
  ]);
  dtypeRows.push(["total", String(result.totals.tensors), result.parameters.toLocaleString("en-US"), result.totals.bytes.toLocaleString("en-US"), formatBytes(result.totals.bytes)]);
  lines.push(...table(["dtype", "tensors", "parameters", "bytes", "size"], dtypeRows, new Set([1, 2, 3, 4])), "");
  lines.push(`parameters: ${result.parameters.toLocaleString("en-US")}${result.parameters >= 1000 ? ` (${humanCount(result.parameters)})` : ""}`);

  const metaFiles = Object.entries(result.metadata);
  if (metaFiles.length === 0) lines.push("metadata: none");
  for (const [file, meta] of metaFiles) lines.push(printable(`metadata${multiFile ? ` (${file})` : ""}: ${JSON.stringify(meta)}`));
  if (result.extraFiles.length > 0) lines.push(printable(`other files: ${result.extraFiles.join(", ")}`));
  return lines;
}

function table(header: string[], rows: string[][], rightAligned: Set<number>): string[] {
  // A loop, not Math.max(...column), for the same reason.
  const widths = header.map((h) => h.length);
  for (const row of rows) {
    row.forEach((cell, i) => {
      if (cell.length > (widths[i] ?? 0)) widths[i] = cell.length;
    });
  }
  const format = (cells: string[]): string =>
    cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd();
  return [format(header), format(widths.map((w) => "-".repeat(w))), ...rows.map(format)];
}

function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}
