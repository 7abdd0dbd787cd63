import { applyDelta, type ApplyDeltaResult } from "../../delta/apply-delta.js";
import { UsageError } from "../../errors.js";
import { formatBytes } from "../../format-bytes.js";
import { progressReporter } from "../progress.js";
import type { CliContext } from "../context.js";
import { sourceOptions } from "../hub-options.js";
import { plural, requiredOption } from "../options.js";

/** The first line of the summary: "verified" only when every output byte was checked against something the publisher gave. */
function verdict(result: ApplyDeltaResult): string {
  if (result.verified) {
    return result.kind === "manifest"
      ? "verified: every file and tensor is bit-identical to the publisher's (SHA-256)"
      : "verified against the checksum list: every output file matches it";
  }
  if (result.unchecked.length < Object.keys(result.files).length) {
    return `unverified: the checksum list does not cover ${plural(result.unchecked.length, "output file")} (${result.unchecked.join(", ")}); the others match it`;
  }
  return "unverified: a legacy delta without delta.json; pass --checksums FILE to check the result";
}

/** `apply-delta --base SRC --delta SRC --target DIR [--checksums FILE]` */
export default async function run(args: Record<string, unknown>, ctx: CliContext): Promise<void> {
  const base = requiredOption(args, "base", "baseModelPath");
  const delta = requiredOption(args, "delta", "deltaPath");
  const target = requiredOption(args, "target", "targetModelPath");
  if (args.checksums !== undefined && typeof args.checksums !== "string") throw new UsageError("--checksums needs a file");
  const progress = progressReporter(ctx);
  try {
    const result = await applyDelta({
      ...sourceOptions({ token: ctx.token }),
      threads: ctx.threads,
      base, delta, target,
      checksums: args.checksums as string | undefined,
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
      return;
    }
    const files = Object.values(result.files);
    const kept = files.filter((f) => f.status === "kept").length;
    ctx.log(verdict(result));
    ctx.log(`wrote ${result.target}: ${plural(files.length, "file")}${kept > 0 ? ` (${kept} already complete, kept)` : ""}, ${plural(result.tensors, "tensor")}, ${formatBytes(result.bytes)}${result.fixups > 0 ? `, ${plural(result.fixups, "element")} restored by fix-ups` : ""}`);
    if (result.dropped.length > 0) ctx.log(`base tensors not in the target (dropped): ${result.dropped.join(", ")}`);
  } finally {
    progress.stop();
  }
}
