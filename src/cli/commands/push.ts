import { HubError } from "../../errors.js";
import { pushToHub } from "../../hub/push.js";
import type { CliContext } from "../context.js";
import { hubSettings } from "../hub-options.js";
import { progressReporter } from "../progress.js";

/** `delta-weights push DIR REPO [--private] [--revision BRANCH] [--message TEXT]`: one pushToHub call. */
export default async function run(args: Record<string, unknown>, ctx: CliContext): Promise<void> {
  const dir = String(args.dir);
  const repo = String(args.repo);
  const hub = hubSettings({ token: ctx.token });
  if (hub.offline) throw new HubError(`Failed to push to ${repo}: HF_HUB_OFFLINE is set: unset it to upload`);
  const progress = progressReporter(ctx);
  try {
    const result = await pushToHub(dir, repo, {
      accessToken: hub.token,
      hubUrl: hub.hubUrl,
      private: args.private === true,
      revision: typeof args.revision === "string" ? args.revision : undefined,
      message: typeof args.message === "string" ? args.message : undefined,
      onProgress: progress.onProgress,
    });
    progress.stop();
    if (ctx.json) {
      ctx.printJson(result);
    } else {
      ctx.log(`pushed ${result.files.length} files to ${repo}${result.commitUrl !== undefined ? `: ${result.commitUrl}` : ""}`);
    }
  } finally {
    progress.stop();
  }
}
