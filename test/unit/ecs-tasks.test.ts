/**
 * What the runner launcher and `vega maintenance run-remote` share about ECS
 * (worker/launchers/ecs-tasks.ts): how a lastStatus reads, how a task is placed
 * (capacity providers or launch type, awsvpc network), and which container is
 * the task's.
 */
import { describe, expect, it } from "vitest";
import type { Task } from "@aws-sdk/client-ecs";
import { containerOf, ecsNetworkConfiguration, ecsPlacement, parseCapacityProviders, taskStateOf } from "../../worker/launchers/ecs-tasks.ts";
import { maintenanceRunTaskInput, parseRunRemote } from "../../cli/run-remote.ts";
import { loadConfig } from "../../shared/config.ts";

describe("how a task's lastStatus reads", () => {
  it.each([
    ["PROVISIONING", "PENDING"],
    ["PENDING", "PENDING"],
    ["ACTIVATING", "PENDING"],
    ["RUNNING", "RUNNING"],
    // Until the container has exited it may still be writing: everything between RUNNING and STOPPED stays RUNNING.
    ["DEACTIVATING", "RUNNING"],
    ["STOPPING", "RUNNING"],
    ["DEPROVISIONING", "RUNNING"],
    ["STOPPED", "STOPPED"],
  ])("reads %s as %s", (lastStatus, state) => {
    expect(taskStateOf(lastStatus)).toBe(state);
  });
});

describe("how a task is placed", () => {
  const network = { subnets: ["subnet-a", "subnet-b"], securityGroups: ["sg-1"], assignPublicIp: true };

  it("sends the awsvpc network of the subnets, groups and public-IP setting", () => {
    expect(ecsNetworkConfiguration(network)).toEqual({
      awsvpcConfiguration: { subnets: ["subnet-a", "subnet-b"], securityGroups: ["sg-1"], assignPublicIp: "ENABLED" },
    });
    expect(ecsNetworkConfiguration({ ...network, securityGroups: [], assignPublicIp: false })).toEqual({
      awsvpcConfiguration: { subnets: ["subnet-a", "subnet-b"], assignPublicIp: "DISABLED" },
    });
  });

  it("sends no network without subnets (bridge or host task definitions)", () => {
    expect(ecsNetworkConfiguration({ ...network, subnets: [] })).toBeUndefined();
    expect(ecsPlacement({ ...network, subnets: [], launchType: "EC2", capacityProviderStrategy: [] })).toEqual({ launchType: "EC2" });
  });

  it("uses the capacity provider strategy instead of the launch type when there is one", () => {
    const capacityProviderStrategy = parseCapacityProviders(["FARGATE_SPOT:3", "FARGATE:1:1"]);
    expect(ecsPlacement({ ...network, launchType: "FARGATE", capacityProviderStrategy })).toEqual({
      capacityProviderStrategy: [
        { capacityProvider: "FARGATE_SPOT", weight: 3 },
        { capacityProvider: "FARGATE", weight: 1, base: 1 },
      ],
      networkConfiguration: ecsNetworkConfiguration(network),
    });
  });

  it("places run-remote's maintenance task by the same settings", () => {
    const config = loadConfig({
      VEGA_ECS_LAUNCH_TYPE: "FARGATE",
      VEGA_ECS_SUBNETS: "subnet-a,subnet-b",
      VEGA_ECS_SECURITY_GROUPS: "sg-1",
      VEGA_ECS_ASSIGN_PUBLIC_IP: "true",
    });
    const request = parseRunRemote(["cleanup", "--env", "dev"], config, ["cleanup"]);
    const input = maintenanceRunTaskInput(request, config);
    expect({ launchType: input.launchType, networkConfiguration: input.networkConfiguration }).toEqual(
      ecsPlacement({ ...network, launchType: "FARGATE", capacityProviderStrategy: [] }),
    );
  });
});

describe("which container is the task's", () => {
  const task = (names: string[]): Task => ({ containers: names.map((name, index) => ({ name, exitCode: index })) });

  it("takes the container of that name, else the only one, else none", () => {
    expect(containerOf(task(["sidecar", "runner"]), "runner")?.exitCode).toBe(1);
    expect(containerOf(task(["app"]), "runner")?.name).toBe("app");
    expect(containerOf(task(["a", "b"]), "runner")).toBeUndefined();
    expect(containerOf({}, "runner")).toBeUndefined();
  });
});
