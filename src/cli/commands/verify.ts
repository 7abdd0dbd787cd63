import { verify } from "../../delta/verify.js";
import { progressReporter } from "../progress.js";
import type { CliContext } from "../context.js";
import { sourceOptions } from "../hub-options.js";

/** `delta-weights verify DIR (--manifest SRC | --checksums FILE)` */
export default async function run(args: Record<string, unknown>, ctx: CliContext): Promise<void> {
  const progress = progressReporter(ctx);
  try {
    const result = await verify(String(args.dir), {
      ...sourceOptions({ token: ctx.token }),
      threads: ctx.threads,
      manifest: typeof args.manifest === "string" ? args.manifest : undefined,
      checksums: typeof args.checksums === "string" ? args.checksums : undefined,
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) ctx.printJson(result);
    else ctx.log(`verified: ${Object.keys(result.files).length} files of ${result.dir} match their SHA-256`);
  } finally {
    progress.stop();
  }
}
