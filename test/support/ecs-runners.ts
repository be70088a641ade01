/**
 * Plays ECS's part for tests of a worker with the ECS launcher: a task that
 * RunTask starts on the test ECS endpoint runs the real `vega runner` as a child
 * process, with the environment of the task's container overrides (as the
 * container would get it), goes RUNNING while the process lives and STOPPED
 * with its exit code when it ends; StopTask sends it SIGTERM, as ECS does.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { childEnv, vegaBin } from "./cli.ts";
import type { EcsEndpoint, EcsTask } from "./ecs-endpoint.ts";

export interface EcsRunners {
  /** Runner processes by task ARN. */
  readonly processes: Map<string, ChildProcess>;
  /** What a task's runner printed, for failure messages. */
  output(taskArn: string): string;
  /** Stops listening, and kills the runners still alive. */
  close(): Promise<void>;
}

/** The environment a task's runner container gets from the RunTask overrides. */
export function overriddenEnvironment(task: EcsTask): Record<string, string> {
  const overrides = (task.overrides as { containerOverrides?: { environment?: { name: string; value: string }[] }[] }).containerOverrides ?? [];
  return Object.fromEntries(overrides.flatMap((override) => override.environment ?? []).map(({ name, value }) => [name, value]));
}

/**
 * Runs `vega runner` for each task RunTask starts, unless `shouldRun` says no
 * (such a task goes RUNNING with nothing behind it, and stays so until stopped).
 */
export function runEcsTasksAsRunners(endpoint: EcsEndpoint, shouldRun: (task: EcsTask) => boolean = () => true): EcsRunners {
  const processes = new Map<string, ChildProcess>();
  const outputs = new Map<string, string>();
  const unsubscribeRun = endpoint.onRunTask((task) => {
    endpoint.setTaskState(task.taskArn, { lastStatus: "RUNNING" });
    if (!shouldRun(task)) return;
    const child = spawn(process.execPath, [vegaBin, "runner"], { env: childEnv(overriddenEnvironment(task)), stdio: ["ignore", "pipe", "pipe"] });
    outputs.set(task.taskArn, "");
    const keep = (chunk: Buffer) => outputs.set(task.taskArn, outputs.get(task.taskArn) + String(chunk));
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    processes.set(task.taskArn, child);
    child.once("exit", (code) => {
      if (endpoint.tasks.get(task.taskArn)?.lastStatus !== "STOPPED") {
        endpoint.setTaskState(task.taskArn, { lastStatus: "STOPPED", exitCode: code ?? 137 });
      }
    });
  });
  const unsubscribeStop = endpoint.onStopTask((task) => {
    processes.get(task.taskArn)?.kill("SIGTERM");
  });
  return {
    processes,
    output: (taskArn) => outputs.get(taskArn) ?? "",
    async close() {
      unsubscribeRun();
      unsubscribeStop();
      // As ECS stops a task: SIGTERM, then SIGKILL after a grace period.
      const alive = [...processes.values()].filter((child) => child.exitCode === null && child.signalCode === null);
      await Promise.all(
        alive.map(
          (child) =>
            new Promise((resolve) => {
              const kill = setTimeout(() => child.kill("SIGKILL"), 5_000);
              child.once("exit", () => resolve(clearTimeout(kill)));
              child.kill("SIGTERM");
            }),
        ),
      );
    },
  };
}
