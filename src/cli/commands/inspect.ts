import { formatInspectReport, inspectModel } from "../../model/inspect.js";
import type { CliContext } from "../context.js";

/** `delta-weights inspect SRC [--json]` */
export default async function run(args: Record<string, unknown>, ctx: CliContext): Promise<void> {
  const result = await inspectModel(String(args.src), ctx.token === undefined ? {} : { token: ctx.token });
  if (ctx.json) ctx.printJson(result);
  else for (const line of formatInspectReport(result)) ctx.log(line);
}
