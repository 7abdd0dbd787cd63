import { applyDelta, type ApplyDeltaResult } from "../../api.js";
import { MANIFEST_FILE } from "../../formats/weight-files.js";
import { formatBytes, plural } from "../../text.js";
import type { CliContext } from "../context.js";
import type { ApplyArgs } from "../args.js";
import { progressReporter } from "../progress.js";

/** `apply-delta --base SRC --delta SRC --target DIR [--checksums FILE] [--convention NAME] [--force]` */
export default async function run(args: ApplyArgs, ctx: CliContext): Promise<void> {
  const progress = progressReporter(ctx);
  try {
    const { chained, ...rest } = args;
    const result = await applyDelta({ ...ctx.sources, ...rest, ...(chained === undefined ? {} : { delta: [args.delta, ...chained] }), threads: ctx.threads, onProgress: progress.onProgress });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
      return;
    }
    const files = Object.values(result.files);
    const kept = files.filter((f) => f.status === "kept").length;
    ctx.log(verdict(result));
    ctx.log(`convention: ${result.convention} (${result.reason})`);
    // Byte codecs make files, not tensors: no "0 tensors".
    const tensors = result.tensors > 0 ? `, ${plural(result.tensors, "tensor")}` : "";
    ctx.log(`wrote ${result.target}: ${plural(files.length, "file")}${kept > 0 ? ` (${kept} already complete, kept)` : ""}${tensors}, ${formatBytes(result.bytes)}${result.fixups > 0 ? `, ${plural(result.fixups, "element")} restored by fix-ups` : ""}`);
    for (const note of result.notes) ctx.log(note);
    if (result.dropped.length > 0) ctx.log(`base tensors not in the target (dropped): ${result.dropped.join(", ")}`);
  } finally {
    progress.stop();
  }
}

/**
 * The first line of the summary: "verified" only when every output byte was
 * checked against something the publisher gave, and against what: delta.json,
 * a checksums list, an .enc file's own sha256, a list printed on a model card.
 */
function verdict(result: ApplyDeltaResult): string {
  const sources = new Map<string, number>();
  for (const f of Object.values(result.files)) {
    if (f.checkedAgainst !== undefined) sources.set(f.checkedAgainst, (sources.get(f.checkedAgainst) ?? 0) + 1);
  }
  const only = sources.size === 1 ? [...sources.keys()][0] : undefined;
  if (result.verified) {
    if (only === MANIFEST_FILE) return "verified: every file and tensor is bit-identical to the publisher's (SHA-256)";
    if (only === "the checksums list") return "verified against the checksum list: every output file matches it";
    if (only !== undefined) return `verified: every output file matches ${only}`;
    return `verified: every output file matches what its publisher gave (${[...sources].map(([source, n]) => `${plural(n, "file")}: ${source}`).join("; ")})`;
  }
  const checked = Object.values(result.files).filter((f) => f.checkedAgainst !== undefined).length;
  if (checked > 0) {
    return `unverified: ${plural(result.unchecked.length, "output file")} not covered by any check (${result.unchecked.join(", ")}); ` +
      `the other ${checked} match ${[...sources.keys()].join(" or ")}`;
  }
  return "unverified: nothing the publisher gave can check this result; pass --checksums FILE with their published checksums";
}
