import { HubError } from "../../errors.js";
import { pushToHub } from "../../api.js";
import type { CliContext } from "../context.js";
import type { PushArgs } from "../args.js";
import { progressReporter } from "../progress.js";
import { pushedLine } from "./make.js";

/** `delta-weights push DIR REPO [--private] [--revision BRANCH] [--message TEXT] [--allow-non-delta]`: one pushToHub call. */
export default async function run(args: PushArgs, ctx: CliContext): Promise<void> {
  if (ctx.hub.offline) throw new HubError(`Failed to push to ${args.repo}: HF_HUB_OFFLINE is set: unset it to upload`);
  const progress = progressReporter(ctx);
  try {
    const result = await pushToHub(args.dir, args.repo, {
      accessToken: ctx.hub.token,
      hubUrl: ctx.hub.hubUrl,
      private: args.private,
      revision: args.revision,
      message: args.message,
      allowNonDelta: args.allowNonDelta,
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) ctx.printJson(result);
    else ctx.log(pushedLine(args.repo, result));
  } finally {
    progress.stop();
  }
}
