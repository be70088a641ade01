/**
 * `vega maintenance run-remote <job> [job args] --env <name>`: runs a maintenance
 * job as the environment's vega-maintenance ECS task, waits for the task to
 * stop, and exits with the task's exit code (what `scripts/aws/run-migrations.sh`
 * wraps).
 *
 * Environments are named, and the name picks both:
 * - the task definition family `<VEGA_ECS_MAINTENANCE_TASK_DEFINITION>-<env>`
 *   (`vega-maintenance-dev`): each environment's task definition carries its
 *   own settings and secrets (deploy/ecs/vega-maintenance.json);
 * - the cluster `vega-<env>`.
 * `--task-definition` and `--cluster` override them. Launch type, capacity
 * providers and the awsvpc network come from the same settings as runner tasks
 * (VEGA_ECS_LAUNCH_TYPE, VEGA_ECS_CAPACITY_PROVIDERS, VEGA_ECS_SUBNETS,
 * VEGA_ECS_SECURITY_GROUPS, VEGA_ECS_ASSIGN_PUBLIC_IP).
 *
 * The container's command is overridden with ["maintenance", job, ...args]: the
 * task definition's entry point is `vega`. RunTask carries a clientToken, so the
 * SDK's retries of a RunTask whose answer was lost never start a second task.
 * DescribeTasks is polled with backoff (immediately, then 1 s growing to 15 s);
 * after `--timeout` seconds (default 3600) the command gives up waiting with
 * exit 124 and leaves the task running (a migration must not be cut short).
 *
 * Credentials, region and endpoint come from the AWS SDK's own chain
 * (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_ECS…); `--endpoint` sets the
 * endpoint explicitly.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { DescribeTasksCommand, ECSClient, RunTaskCommand, type RunTaskCommandInput, type Task } from "@aws-sdk/client-ecs";
import type { Config } from "../shared/config.ts";
import type { Logger } from "../shared/logger.ts";
import { containerOf, ecsPlacement, parseCapacityProviders, taskStateOf } from "../worker/launchers/ecs-tasks.ts";
import { parseArgs } from "node:util";
import { helpOf, HelpRequested, UsageError } from "./args.ts";
import { COMMANDS } from "./commands.ts";

/** Exit code when the task is still running at `--timeout` (as timeout(1) does). */
export const EXIT_TIMED_OUT = 124;

type OwnFlag = keyof (typeof COMMANDS)["maintenance run-remote"]["flags"];

export interface RunRemoteRequest {
  job: string;
  /** Passed to the job after its name, as given. */
  args: string[];
  env: string;
  cluster: string;
  taskDefinition: string;
  container: string;
  timeoutSeconds: number;
  endpoint?: string;
}

/** The container of deploy/ecs/vega-maintenance.json. */
export const MAINTENANCE_CONTAINER = "maintenance";
const DEFAULT_TIMEOUT_SECONDS = 3600;
const FIRST_POLL_DELAY_MS = 1000;
const MAX_POLL_DELAY_MS = 15_000;

/**
 * Splits run-remote's own flags from the job's arguments: `--env dev` is ours
 * wherever it stands; everything else after the job's name goes to the job, as
 * given. node:util's parseArgs reads the words (its tokens keep the order and
 * the raw spelling of what is not ours).
 */
export function parseRunRemote(argv: string[], config: Pick<Config, "ecsMaintenanceTaskDefinition">, knownJobs: string[]): RunRemoteRequest {
  const spec = COMMANDS["maintenance run-remote"];
  const ownFlags = Object.keys(spec.flags) as OwnFlag[];
  const { tokens } = parseArgs({
    args: argv,
    options: Object.fromEntries(ownFlags.map((name) => [name, { type: "string" as const }])),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const own = new Map<OwnFlag, string>();
  const rest: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") rest.push(token.value);
    else if (token.kind === "option-terminator") rest.push("--");
    else if (ownFlags.includes(token.name as OwnFlag)) {
      if (token.value === undefined || token.value === "") throw new UsageError(`--${token.name} needs a value (see vega maintenance run-remote --help)`);
      own.set(token.name as OwnFlag, token.value);
    } else if (rest.length === 0 && (token.name === "help" || token.name === "h")) {
      throw new HelpRequested(helpOf(spec));
    } else {
      rest.push(token.inlineValue ? `${token.rawName}=${token.value}` : token.rawName);
    }
  }
  const [job, ...args] = rest;
  if (!job || job.startsWith("--")) throw new UsageError(`run-remote needs a job first: vega maintenance run-remote <${knownJobs.join("|")}> [args] --env <name>`);
  if (job === "run-remote") throw new UsageError("run-remote cannot run run-remote");
  if (!knownJobs.includes(job)) throw new UsageError(`unknown maintenance job "${job}" (known: ${knownJobs.join(", ")})`);
  const env = own.get("env");
  if (!env) throw new UsageError("run-remote needs --env <name> (e.g. --env dev)");
  if (!/^[A-Za-z0-9][A-Za-z0-9-]{0,31}$/.test(env)) throw new UsageError(`--env ${JSON.stringify(env)} must be letters, digits and dashes`);
  const timeout = own.get("timeout") ?? String(DEFAULT_TIMEOUT_SECONDS);
  if (!/^\d+$/.test(timeout) || Number(timeout) < 1) throw new UsageError(`--timeout ${JSON.stringify(timeout)} must be a number of seconds`);
  return {
    job,
    args,
    env,
    cluster: own.get("cluster") ?? `vega-${env}`,
    taskDefinition: own.get("task-definition") ?? `${config.ecsMaintenanceTaskDefinition}-${env}`,
    container: own.get("container") ?? MAINTENANCE_CONTAINER,
    timeoutSeconds: Number(timeout),
    endpoint: own.get("endpoint"),
  };
}

export type EcsNetworkSettings = Pick<
  Config,
  "ecsLaunchType" | "ecsCapacityProviders" | "ecsSubnets" | "ecsSecurityGroups" | "ecsAssignPublicIp"
>;

export function maintenanceRunTaskInput(request: RunRemoteRequest, config: EcsNetworkSettings): RunTaskCommandInput {
  const capacityProviderStrategy = parseCapacityProviders(config.ecsCapacityProviders);
  return {
    cluster: request.cluster,
    taskDefinition: request.taskDefinition,
    count: 1,
    // One token per invocation: the SDK retrying a RunTask whose response was lost gets the same task back.
    clientToken: randomUUID(),
    startedBy: "vega-run-remote",
    ...ecsPlacement({
      launchType: config.ecsLaunchType,
      capacityProviderStrategy,
      subnets: config.ecsSubnets,
      securityGroups: config.ecsSecurityGroups,
      assignPublicIp: config.ecsAssignPublicIp,
    }),
    overrides: { containerOverrides: [{ name: request.container, command: ["maintenance", request.job, ...request.args] }] },
    tags: [{ key: "vega:maintenance-job", value: request.job }],
    enableECSManagedTags: true,
    propagateTags: "TASK_DEFINITION",
  };
}

export interface RemoteOutcome {
  /** The task's exit code; null when its container never ran (image pull failure…) or the wait timed out. */
  exitCode: number | null;
  timedOut: boolean;
  summary: Record<string, unknown>;
}

/** Starts the task, waits for it to stop (or for the timeout) and reports how it ended. */
export async function runRemote(request: RunRemoteRequest, config: EcsNetworkSettings, log: Logger, client?: ECSClient): Promise<RemoteOutcome> {
  const ecs = client ?? new ECSClient(request.endpoint ? { endpoint: request.endpoint } : {});
  const base = {
    remoteJob: request.job,
    args: request.args,
    env: request.env,
    cluster: request.cluster,
    taskDefinition: request.taskDefinition,
  };
  try {
    const started = await ecs.send(new RunTaskCommand(maintenanceRunTaskInput(request, config)));
    const taskArn = started.tasks?.[0]?.taskArn;
    if (!taskArn) {
      const failure = started.failures?.[0];
      throw new Error(`ECS started no task: ${failure?.reason ?? "no reason given"}${failure?.detail ? ` (${failure.detail})` : ""}`);
    }
    log.info({ taskArn, cluster: request.cluster, command: ["maintenance", request.job, ...request.args] }, "maintenance task started");

    const deadline = Date.now() + request.timeoutSeconds * 1000;
    let delay = 0;
    let lastStatus: string | undefined;
    let task: Task | undefined;
    for (;;) {
      if (delay > 0) await sleep(Math.max(0, Math.min(delay, deadline - Date.now())));
      const described = await ecs.send(new DescribeTasksCommand({ cluster: request.cluster, tasks: [taskArn] }));
      task = described.tasks?.[0];
      if (!task) {
        const failure = described.failures?.[0];
        throw new Error(`ECS does not know task ${taskArn}: ${failure?.reason ?? "no reason given"}`);
      }
      if (task.lastStatus !== lastStatus) {
        lastStatus = task.lastStatus;
        log.info({ taskArn, lastStatus }, "maintenance task status");
      }
      if (taskStateOf(lastStatus) === "STOPPED") break;
      if (Date.now() >= deadline) {
        return {
          exitCode: null,
          timedOut: true,
          summary: {
            ...base,
            taskArn,
            lastStatus,
            error: `gave up waiting after ${request.timeoutSeconds}s; the task is still ${lastStatus} and was left running`,
          },
        };
      }
      delay = delay === 0 ? FIRST_POLL_DELAY_MS : Math.min(MAX_POLL_DELAY_MS, Math.round(delay * 1.6));
    }

    const container = containerOf(task, request.container);
    const exitCode = container?.exitCode ?? null;
    const summary = {
      ...base,
      taskArn,
      exitCode,
      stopCode: task.stopCode ?? null,
      stoppedReason: task.stoppedReason ?? null,
      ...(container?.reason ? { containerReason: container.reason } : {}),
    };
    log.info(summary, `maintenance task stopped: exit code ${exitCode ?? "none"} (${task.stopCode ?? "?"}: ${task.stoppedReason ?? "no reason"})`);
    return { exitCode, timedOut: false, summary };
  } finally {
    if (!client) ecs.destroy();
  }
}
