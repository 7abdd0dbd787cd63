import { verifyModel } from "../../api.js";
import type { CliContext } from "../context.js";
import type { VerifyArgs } from "../args.js";
import { progressReporter } from "../progress.js";

/** `delta-weights verify DIR (--manifest SRC | --checksums FILE)` */
export default async function run(args: VerifyArgs, ctx: CliContext): Promise<void> {
  const progress = progressReporter(ctx);
  try {
    const result = await verifyModel(args.dir, {
      ...ctx.sources,
      threads: ctx.threads,
      manifest: args.manifest,
      checksums: args.checksums,
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) ctx.printJson(result);
    else ctx.log(`verified: ${Object.keys(result.files).length} files of ${result.dir} match their ${result.algorithm === "md5" ? "MD5" : "SHA-256"}`);
  } finally {
    progress.stop();
  }
}
