/** Builds the launcher VEGA_LAUNCHER names, from the settings. */
import { fileURLToPath } from "node:url";
import type { Config } from "../../shared/config.ts";
import type { Logger } from "../../shared/logger.ts";
import { createEcsLauncher } from "./ecs.ts";
import { createLocalLauncher } from "./local.ts";
import type { Launcher } from "../../shared/launcher.ts";

const vegaBin = fileURLToPath(new URL("../../bin/vega.mjs", import.meta.url));

export function createLauncher(
  config: Config,
  log: Logger,
): Launcher & { waitForExit?(taskId: string): Promise<unknown>; removeLeftoverWorkDirs?(): Promise<string[]> } {
  if (config.launcher === "ecs") {
    return createEcsLauncher({
      cluster: config.ecsCluster,
      taskDefinition: config.ecsTaskDefinition,
      containerName: config.ecsContainerName,
      launchType: config.ecsLaunchType,
      capacityProviders: config.ecsCapacityProviders,
      subnets: config.ecsSubnets,
      securityGroups: config.ecsSecurityGroups,
      assignPublicIp: config.ecsAssignPublicIp,
      logger: log,
    });
  }
  return createLocalLauncher({ command: [process.execPath, vegaBin, "runner"], logger: log });
}
