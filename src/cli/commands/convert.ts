import { DeltaWeightsError } from "../../errors.js";
import type { CliContext } from "../context.js";

export default async function run(_args: Record<string, unknown>, _ctx: CliContext): Promise<void> {
  throw new DeltaWeightsError("E_USAGE", "this command is not built yet");
}
