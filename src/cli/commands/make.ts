import { makeDelta } from "../../api.js";
import { HubError } from "../../errors.js";
import { FIXUPS_FILE } from "../../formats/weight-files.js";
import { formatBytes, plural } from "../../text.js";
import type { CliContext } from "../context.js";
import type { MakeArgs } from "../args.js";
import { progressReporter } from "../progress.js";

/** `make-delta --base SRC --target SRC --delta DIR [--codec add|xor] [--max-shard-size SIZE] [--push-to-hub REPO [--private]]` */
export default async function run(args: MakeArgs, ctx: CliContext): Promise<void> {
  if (args.pushToHub !== undefined) {
    // Fail before hours of work, not after.
    if (ctx.hub.offline) throw new HubError(`Failed to push to ${args.pushToHub}: HF_HUB_OFFLINE is set; unset it to upload, or make the delta without --push-to-hub`);
    if (ctx.hub.token === undefined) {
      throw new HubError(`Failed to push to ${args.pushToHub}: no Hugging Face token; pass --token, set HF_TOKEN, or save one in $HF_HOME/token (huggingface-cli login)`);
    }
  }
  const progress = progressReporter(ctx);
  try {
    const result = await makeDelta({
      ...ctx.sources,
      threads: ctx.threads,
      base: args.base,
      target: args.target,
      delta: args.delta,
      codec: args.codec,
      maxShardBytes: args.maxShardBytes,
      force: args.force,
      onProgress: progress.onProgress,
      ...(args.pushToHub !== undefined ? { push: { repo: args.pushToHub, private: args.private, accessToken: ctx.hub.token, hubUrl: ctx.hub.hubUrl } } : {}),
    });
    const pushed = result.pushed;
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
      return;
    }
    ctx.log(`wrote delta ${result.delta} (codec ${result.codec}): ${plural(result.tensors, "tensor")}, ${plural(Object.keys(result.files).length, "file")}, ${formatBytes(result.bytes)}`);
    if (result.fixups > 0) ctx.log(`${plural(result.fixups, "element")} need fix-ups to recover exactly (in ${FIXUPS_FILE})`);
    if (result.added.length > 0) ctx.log(`tensors only in the target, stored as they are: ${result.added.join(", ")}`);
    if (result.dropped.length > 0) ctx.log(`base tensors not in the target (dropped): ${result.dropped.join(", ")}`);
    for (const note of result.notes) ctx.log(note);
    if (pushed !== undefined) ctx.log(pushedLine(pushed.repo, pushed));
  } finally {
    progress.stop();
  }
}

/** One line that says what was published and who can read it. */
export function pushedLine(repo: string, pushed: { commitUrl?: string; files: string[]; public: boolean }): string {
  return `pushed ${plural(pushed.files.length, "file")} to ${repo} (${pushed.public ? "public: anyone can download them" : "private"})${pushed.commitUrl !== undefined ? `: ${pushed.commitUrl}` : ""}`;
}
