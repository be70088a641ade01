/** Recovery where no worker runs it: the API and the maintenance task ask the configured launcher about tasks themselves. */
import type { Deps } from "../context.ts";
import { createLauncher } from "../../worker/launchers/index.ts";
import { recoverStaleScans, type RecoverySweep } from "./recovery.ts";

export async function recoverStaleScansNow(
  deps: Pick<Deps, "prisma" | "pubsub" | "config" | "signingKey" | "log">,
  options: { dryRun: boolean; actor?: string },
): Promise<RecoverySweep> {
  const launcher = createLauncher(deps.config, deps.log);
  try {
    return await recoverStaleScans(deps, launcher, options);
  } finally {
    await launcher.close();
  }
}
