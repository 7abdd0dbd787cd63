import { convertModel } from "../../model/convert.js";
import type { CliContext } from "../context.js";
import { parseSize } from "../parse-size.js";
import { formatBytes } from "../../format-bytes.js";
import { progressReporter } from "../progress.js";

/** `delta-weights convert SRC OUT [--max-shard-size SIZE]` */
export default async function run(args: Record<string, unknown>, ctx: CliContext): Promise<void> {
  const maxShardBytes = typeof args.maxShardSize === "string" ? parseSize(args.maxShardSize) : undefined;
  const progress = progressReporter(ctx);
  try {
    const result = await convertModel(String(args.src), String(args.out), {
      ...(maxShardBytes === undefined ? {} : { maxShardBytes }),
      ...(ctx.token === undefined ? {} : { token: ctx.token }),
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
    } else {
      const count = result.files.length;
      ctx.log(`wrote ${count} file${count === 1 ? "" : "s"} to ${result.out}: ${result.tensors} tensors, ${formatBytes(result.bytes)} of tensor data`);
      for (const f of result.files) ctx.log(`  ${f.sha256}  ${f.path}`);
    }
  } finally {
    progress.stop();
  }
}
