/**
 * What both users of ECS need from it, written once: the runner launcher
 * (ecs.ts) and `vega maintenance run-remote` (cli/run-remote.ts) place their
 * tasks with the same settings (VEGA_ECS_LAUNCH_TYPE, VEGA_ECS_CAPACITY_PROVIDERS,
 * VEGA_ECS_SUBNETS, VEGA_ECS_SECURITY_GROUPS, VEGA_ECS_ASSIGN_PUBLIC_IP), read
 * a task's lastStatus the same way and find its container the same way.
 *
 * Task states: PROVISIONING, PENDING and ACTIVATING are PENDING; STOPPED is
 * STOPPED; everything between RUNNING and STOPPED (DEACTIVATING, STOPPING,
 * DEPROVISIONING) stays RUNNING, because the container may still be writing
 * (a runner its last events) until it has exited.
 */
import type { CapacityProviderStrategyItem, Container, NetworkConfiguration, RunTaskCommandInput, Task } from "@aws-sdk/client-ecs";
import type { TaskState } from "../../shared/launcher.ts";

/** How a task's lastStatus reads (see the module comment for the STOPPING choice). */
export function taskStateOf(lastStatus: string | undefined): TaskState {
  switch (lastStatus) {
    case "PROVISIONING":
    case "PENDING":
    case "ACTIVATING":
      return "PENDING";
    case "STOPPED":
      return "STOPPED";
    default:
      return "RUNNING";
  }
}

/** Parses "FARGATE_SPOT:3,FARGATE:1:1"-style entries; an entry without a weight weighs 1. */
export function parseCapacityProviders(entries: string[]): CapacityProviderStrategyItem[] {
  return entries.map((entry) => {
    const [name, weight = "1", base, ...rest] = entry.split(":").map((part) => part.trim());
    const isCount = (value: string) => /^\d+$/.test(value);
    if (!name || rest.length > 0 || !isCount(weight) || (base !== undefined && !isCount(base))) {
      throw new Error(`capacity provider ${JSON.stringify(entry)} is not NAME[:weight[:base]] (e.g. FARGATE_SPOT:3 or FARGATE:1:1)`);
    }
    return { capacityProvider: name, weight: Number(weight), ...(base !== undefined ? { base: Number(base) } : {}) };
  });
}

export interface EcsPlacementSettings {
  launchType: "FARGATE" | "EC2" | "EXTERNAL";
  /** Parsed capacity providers; when non-empty, this strategy replaces the launch type (ECS takes one or the other). */
  capacityProviderStrategy: CapacityProviderStrategyItem[];
  /** awsvpc subnets; when empty, no network configuration is sent (bridge/host task definitions). */
  subnets: string[];
  securityGroups: string[];
  assignPublicIp: boolean;
}

/** The awsvpc network of a task, or none when no subnets are set. */
export function ecsNetworkConfiguration(settings: Pick<EcsPlacementSettings, "subnets" | "securityGroups" | "assignPublicIp">): NetworkConfiguration | undefined {
  if (settings.subnets.length === 0) return undefined;
  return {
    awsvpcConfiguration: {
      subnets: settings.subnets,
      ...(settings.securityGroups.length > 0 ? { securityGroups: settings.securityGroups } : {}),
      assignPublicIp: settings.assignPublicIp ? "ENABLED" : "DISABLED",
    },
  };
}

/** The RunTask fields that place a task: capacity strategy or launch type, and its network. */
export function ecsPlacement(settings: EcsPlacementSettings): Pick<RunTaskCommandInput, "capacityProviderStrategy" | "launchType" | "networkConfiguration"> {
  const networkConfiguration = ecsNetworkConfiguration(settings);
  return {
    ...(settings.capacityProviderStrategy.length > 0
      ? { capacityProviderStrategy: settings.capacityProviderStrategy }
      : { launchType: settings.launchType }),
    ...(networkConfiguration ? { networkConfiguration } : {}),
  };
}

/** The task's container named `name`, or its only container when none has that name. */
export function containerOf(task: Task, name: string): Container | undefined {
  const containers = task.containers ?? [];
  return containers.find((container) => container.name === name) ?? (containers.length === 1 ? containers[0] : undefined);
}
