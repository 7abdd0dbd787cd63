import { convertModel } from "../../api.js";
import { outputFormatNamed } from "../../model/output-formats.js";
import { formatBytes, plural } from "../../text.js";
import type { CliContext } from "../context.js";
import type { ConvertArgs } from "../args.js";
import { progressReporter } from "../progress.js";

/** `delta-weights convert SRC OUT [--max-shard-size SIZE] [--format safetensors|pytorch] [--byteorder-record] [--force]` */
export default async function run(args: ConvertArgs, ctx: CliContext): Promise<void> {
  const progress = progressReporter(ctx);
  try {
    const result = await convertModel(args.src, args.out, {
      ...ctx.sources,
      ...(args.maxShardBytes === undefined ? {} : { maxShardBytes: args.maxShardBytes }),
      force: args.force,
      ...(args.format === undefined ? {} : { format: args.format }),
      ...(args.byteorderRecord === true ? { byteorderRecord: true } : {}),
      ...(args.outtype === undefined ? {} : { outtype: args.outtype }),
      ...(args.numShards === undefined ? {} : { numShards: args.numShards }),
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
    } else {
      // The format's own title from the registry, for a format that chose a tensor type ("GGUF, --outtype q8_0").
      const chosen = result.outtype === undefined ? "" : ` (${outputFormatNamed(result.format).title}, --outtype ${result.outtype})`;
      ctx.log(`wrote ${plural(result.files.length, "file")} to ${result.out}${chosen}: ${result.tensors} tensors, ${formatBytes(result.bytes)} of tensor data`);
      for (const f of result.files) ctx.log(`  ${f.sha256}  ${f.path}`);
    }
  } finally {
    progress.stop();
  }
}
