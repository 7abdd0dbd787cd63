import { applyDelta, type ApplyDeltaResult } from "../../api.js";
import { formatBytes, plural } from "../../text.js";
import type { CliContext } from "../context.js";
import type { ApplyArgs } from "../args.js";
import { checkChecksumListSize } from "../checksum-list.js";
import { progressReporter } from "../progress.js";

/** `apply-delta --base SRC --delta SRC --target DIR [--checksums FILE] [--convention NAME] [--force]` */
export default async function run(args: ApplyArgs, ctx: CliContext): Promise<void> {
  checkChecksumListSize(args.checksums);
  const progress = progressReporter(ctx);
  try {
    const result = await applyDelta({ ...ctx.sources, ...args, threads: ctx.threads, onProgress: progress.onProgress });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
      return;
    }
    const files = Object.values(result.files);
    const kept = files.filter((f) => f.status === "kept").length;
    ctx.log(verdict(result));
    ctx.log(`convention: ${result.convention} (${result.reason})`);
    ctx.log(`wrote ${result.target}: ${plural(files.length, "file")}${kept > 0 ? ` (${kept} already complete, kept)` : ""}, ${plural(result.tensors, "tensor")}, ${formatBytes(result.bytes)}${result.fixups > 0 ? `, ${plural(result.fixups, "element")} restored by fix-ups` : ""}`);
    for (const note of result.notes) ctx.log(note);
    if (result.dropped.length > 0) ctx.log(`base tensors not in the target (dropped): ${result.dropped.join(", ")}`);
  } finally {
    progress.stop();
  }
}

/** The first line of the summary: "verified" only when every output byte was checked against something the publisher gave. */
function verdict(result: ApplyDeltaResult): string {
  if (result.verified) {
    const sources = new Set(Object.values(result.files).map((f) => f.checkedAgainst));
    return sources.has("delta.json") && sources.size === 1
      ? "verified: every file and tensor is bit-identical to the publisher's (SHA-256)"
      : sources.has("the checksums list") && sources.size === 1
        ? "verified against the checksum list: every output file matches it"
        : `verified: every output file matches ${[...sources].join(" and ")}`;
  }
  if (result.unchecked.length < Object.keys(result.files).length) {
    return `unverified: ${plural(result.unchecked.length, "output file")} not covered by any check (${result.unchecked.join(", ")}); the others match what the publisher gave`;
  }
  return "unverified: nothing the publisher gave can check this result; pass --checksums FILE with their published checksums";
}
