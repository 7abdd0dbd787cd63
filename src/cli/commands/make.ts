import { makeDelta } from "../../delta/make-delta.js";
import { parseSize } from "../parse-size.js";
import { formatBytes } from "../../format-bytes.js";
import { progressReporter } from "../progress.js";
import type { CliContext } from "../context.js";
import { hubSettings, sourceOptions } from "../hub-options.js";
import { plural, requiredOption } from "../options.js";
import { HubError } from "../../errors.js";

/** `make-delta --base SRC --target SRC --delta DIR [--codec add|xor] [--max-shard-size SIZE] [--push-to-hub REPO [--private]]` */
export default async function run(args: Record<string, unknown>, ctx: CliContext): Promise<void> {
  const base = requiredOption(args, "base", "baseModelPath");
  const target = requiredOption(args, "target", "targetModelPath");
  const delta = requiredOption(args, "delta", "deltaPath");
  const maxShardBytes = typeof args.maxShardSize === "string" ? parseSize(args.maxShardSize) : undefined;
  const pushTo = typeof args.pushToHub === "string" ? args.pushToHub : undefined;
  const hub = hubSettings({ token: ctx.token });
  if (pushTo !== undefined && hub.token === undefined) {
    // Fail before hours of work, not after.
    throw new HubError(`Failed to push to ${pushTo}: no Hugging Face token; pass --token, set HF_TOKEN, or save one in $HF_HOME/token (huggingface-cli login)`);
  }
  const progress = progressReporter(ctx);
  try {
    const result = await makeDelta({
      ...sourceOptions({ token: ctx.token }),
      threads: ctx.threads,
      base, target, delta,
      codec: args.codec === "xor" ? "xor" : "add",
      maxShardBytes,
      onProgress: progress.onProgress,
    });
    let pushed: { commitUrl?: string; files: string[] } | undefined;
    if (pushTo !== undefined) {
      const { pushToHub } = await import("../../hub/push.js");
      pushed = await pushToHub(delta, pushTo, {
        accessToken: hub.token,
        hubUrl: hub.hubUrl,
        private: args.private === true,
        onProgress: progress.onProgress,
      });
    }
    progress.stop();
    if (ctx.json) {
      ctx.printJson({ ...result, ...(pushed !== undefined ? { pushed: { repo: pushTo, ...pushed } } : {}) });
      return;
    }
    ctx.log(`wrote delta ${result.delta} (codec ${result.codec}): ${plural(result.tensors, "tensor")}, ${plural(Object.keys(result.files).length, "file")}, ${formatBytes(result.bytes)}`);
    if (result.fixups > 0) ctx.log(`${plural(result.fixups, "element")} need fix-ups to recover exactly (in delta-fixups.safetensors)`);
    if (result.added.length > 0) ctx.log(`tensors only in the target, stored as they are: ${result.added.join(", ")}`);
    if (result.dropped.length > 0) ctx.log(`base tensors not in the target (dropped): ${result.dropped.join(", ")}`);
    if (pushed !== undefined) ctx.log(`pushed ${pushed.files.length} files to ${pushTo}${pushed.commitUrl !== undefined ? `: ${pushed.commitUrl}` : ""}`);
  } finally {
    progress.stop();
  }
}
