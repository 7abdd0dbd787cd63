import { identifyModel } from "../../api.js";
import { describeIdentity } from "../../delta/identify.js";
import type { IdentifyArgs } from "../args.js";
import type { CliContext } from "../context.js";
import { progressReporter } from "../progress.js";

/** `delta-weights identify SRC`: which known base conversion a model is. */
export default async function run(args: IdentifyArgs, ctx: CliContext): Promise<void> {
  const progress = progressReporter(ctx);
  try {
    const result = await identifyModel(args.src, { ...ctx.sources, threads: ctx.threads, onProgress: progress.onProgress });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
      return;
    }
    for (const f of result.files) ctx.log(`${f.sha256}  ${f.path}  ${f.known?.name ?? "(not a published file)"}`);
    ctx.log(describeIdentity(result).replace(/^base: /, ""));
  } finally {
    progress.stop();
  }
}
