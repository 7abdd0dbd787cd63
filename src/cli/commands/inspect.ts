import { inspectModel } from "../../api.js";
import { formatInspectReport } from "../../model/inspect.js";
import type { CliContext } from "../context.js";
import type { InspectArgs } from "../args.js";

/** `delta-weights inspect SRC [--json]` */
export default async function run(args: InspectArgs, ctx: CliContext): Promise<void> {
  const result = await inspectModel(args.src, ctx.sources);
  if (ctx.json) ctx.printJson(result);
  else for (const line of formatInspectReport(result)) ctx.log(line);
}
