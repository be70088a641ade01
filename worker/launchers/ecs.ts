/**
 * Runs each scan's runner as an ECS task (RunTask), stops it (StopTask) and
 * reports on it (DescribeTasks).
 *
 * Idempotency: every RunTask carries a clientToken derived from the scan id and
 * its attempt, so a retried call (throttled, a 5xx, a dropped connection: cases
 * where ECS may or may not have started the task) can never start a second task.
 * When ECS answers with `failures` and no task (no capacity, RESOURCE:MEMORY),
 * it has definitively started nothing, and the next try uses the next "round"
 * of that token (`…-r2`). ECS documents that a reused token returns the original
 * request's result, so resending the first token would only replay the failure.
 *
 * One task per scan: before launching a scan's second or later attempt (the
 * scan was requeued, e.g. its worker died, and claimed again), ListTasks by the
 * scan's `startedBy` finds the tasks ECS still runs for it, and those of other
 * attempts (by their `vega:attempt` tag, read with DescribeTasks) are stopped.
 * Their runner tokens are refused by the API already; stopping them frees what
 * they hold. A task is not adopted: its runner's token is of an earlier claim.
 * If that check cannot be made (ListTasks keeps failing), nothing is launched.
 *
 * Task states are read as ecs-tasks.ts says (taskStateOf); a task ECS no longer
 * knows (it forgets stopped tasks after about an hour) is MISSING.
 *
 * Configuration comes from the caller and the SDK's own chain: region from
 * `region` or AWS_REGION/profile, the default credential chain, and
 * AWS_ENDPOINT_URL_ECS (read by the SDK itself, @smithy/core's endpoint config).
 */
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  DescribeTasksCommand,
  ECSClient,
  ListTasksCommand,
  RunTaskCommand,
  StopTaskCommand,
  type Failure,
  type RunTaskCommandInput,
  type Task,
} from "@aws-sdk/client-ecs";
import { containerOf, ecsPlacement, parseCapacityProviders, taskStateOf } from "./ecs-tasks.ts";
import { LaunchFailedError, type LaunchRequest, type LaunchResult, type Launcher, type TaskState, type TaskStatus } from "../../shared/launcher.ts";

/** The part of a pino logger the launchers use. */
export interface LauncherLogger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
}

export interface RetryPolicy {
  /** Tries in all, the first one included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface EcsLauncherOptions {
  /** Cluster name or ARN; empty or absent: ECS's `default` cluster. */
  cluster?: string;
  /** Family, family:revision or ARN of the runner task definition (its command is already `vega runner`). */
  taskDefinition: string;
  /** The runner container in that task definition: it receives the environment and its exit code is reported. */
  containerName: string;
  launchType: "FARGATE" | "EC2" | "EXTERNAL";
  /** "NAME[:weight[:base]]" entries; when non-empty, this strategy replaces the launch type. */
  capacityProviders: string[];
  /** awsvpc subnets; when empty, no network configuration is sent (bridge/host task definitions). */
  subnets: string[];
  securityGroups: string[];
  assignPublicIp: boolean;
  /** Default: the SDK's chain (AWS_REGION, profile). */
  region?: string;
  /** A client to use instead of one the launcher creates (and then does not destroy on close). */
  client?: ECSClient;
  retry?: RetryPolicy;
  logger?: LauncherLogger;
}

export const defaultEcsRetry: RetryPolicy = { attempts: 5, baseDelayMs: 500, maxDelayMs: 10_000 };

// ECS limits (RunTask and StopTask API reference).
const CLIENT_TOKEN_MAX = 64;
const STARTED_BY_MAX = 128;
const STOP_REASON_MAX = 255;
const TAG_VALUE_MAX = 256;
const DESCRIBE_TASKS_MAX = 100;

// Kept importable from here: tests and callers read the launcher's ECS rules through this module.
export { parseCapacityProviders, taskStateOf } from "./ecs-tasks.ts";

const silentLogger: LauncherLogger = { info() {}, warn() {}, error() {} };

/**
 * The RunTask clientToken of one launch: readable (`<scanId>-<attempt>[-r<round>]`)
 * when that fits ECS's 64 characters of ASCII 33-126, else its sha256 in hex
 * (exactly 64). The same scan, attempt and round always give the same token.
 */
export function runTaskClientToken(scanId: string, attempt: number, round = 1): string {
  const readable = round > 1 ? `${scanId}-${attempt}-r${round}` : `${scanId}-${attempt}`;
  if (readable.length <= CLIENT_TOKEN_MAX && /^[\x21-\x7e]+$/.test(readable)) return readable;
  return createHash("sha256").update(readable).digest("hex");
}

/** ECS's `startedBy` allows 128 of [A-Za-z0-9_/-]: anything else in a scan id becomes "_". */
export function startedByFor(scanId: string): string {
  return scanId.replace(/[^A-Za-z0-9_/-]/g, "_").slice(0, STARTED_BY_MAX) || "vega";
}

/** Tag values allow 256 letters, digits, spaces and `_ . : / = + - @`: anything else becomes "_". */
const tagValue = (value: string) => value.replace(/[^\p{L}\p{Z}\p{N}_.:/=+@-]/gu, "_").slice(0, TAG_VALUE_MAX);

const RETRYABLE_ERROR_NAMES = new Set([
  "ThrottlingException",
  "Throttling",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "ServerException",
  "ServiceUnavailable",
  "ServiceUnavailableException",
  "InternalFailure",
  "InternalServerError",
  "RequestTimeout",
  "RequestTimeoutException",
  "TimeoutError",
]);
const RETRYABLE_NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "ENOTFOUND", "ECONNABORTED"]);

interface AwsLikeError {
  name?: string;
  code?: string;
  message?: string;
  $fault?: string;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: number };
}

/** Throttling, ECS-side faults and lost connections: the call may be repeated (RunTask with its same token). */
export function isRetryableEcsError(error: unknown): boolean {
  const e = (error ?? {}) as AwsLikeError;
  if (e.name && RETRYABLE_ERROR_NAMES.has(e.name)) return true;
  if (e.$retryable) return true;
  if (e.$fault === "server") return true;
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined) return status >= 500 || status === 429;
  return e.code !== undefined && RETRYABLE_NETWORK_CODES.has(e.code);
}

/** StopTask of a task ECS has forgotten: InvalidParameterException "The referenced task was not found." */
const isTaskNotFound = (error: unknown) => {
  const e = (error ?? {}) as AwsLikeError;
  return e.name === "InvalidParameterException" && /not found/i.test(e.message ?? "");
};

/** "Full jitter" exponential backoff: uniform in [0, min(max, base * 2^(try-1))]. */
const backoffDelay = (retry: RetryPolicy, tryNumber: number) =>
  Math.random() * Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (tryNumber - 1));

/** `arn:aws:ecs:<region>:<account>:task/<cluster>/<id>` → cluster; short ids and old-format ARNs have none. */
const clusterOfTaskArn = (taskId: string): string | undefined => /^arn:[^:]+:ecs:[^:]*:[^:]*:task\/([^/]+)\/[^/]+$/.exec(taskId)?.[1];

const truncate = (text: string, max: number) => (text.length <= max ? text : text.slice(0, max));

const chunk = <T>(items: T[], size: number): T[][] => {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
};

export function createEcsLauncher(options: EcsLauncherOptions): Launcher {
  const retry = options.retry ?? defaultEcsRetry;
  if (!Number.isInteger(retry.attempts) || retry.attempts < 1) throw new Error(`retry.attempts must be at least 1 (got ${retry.attempts})`);
  const logger = options.logger ?? silentLogger;
  const cluster = options.cluster?.trim() || undefined;
  const capacityProviderStrategy = parseCapacityProviders(options.capacityProviders);
  const ownsClient = options.client === undefined;
  // The launcher's retry policy is the only one, so that `retry.attempts` means what it says
  // (the SDK would otherwise retry throttling up to 3 times inside every one of our tries).
  const client = options.client ?? new ECSClient({ ...(options.region ? { region: options.region } : {}), maxAttempts: 1 });

  /** Launches already answered by ECS in this process, by first-round token (bounded). */
  const launched = new Map<string, string>();
  const launchesInFlight = new Map<string, Promise<LaunchResult>>();
  const LAUNCHED_MEMORY = 10_000;

  const runTaskInput = (request: LaunchRequest): Omit<RunTaskCommandInput, "clientToken"> => ({
    ...(cluster ? { cluster } : {}),
    taskDefinition: options.taskDefinition,
    count: 1,
    ...ecsPlacement({ ...options, capacityProviderStrategy }),
    // The task definition's command is already `vega runner`: only the environment is per scan.
    // Overrides are visible to anyone allowed ecs:DescribeTasks; the runner token is short-lived
    // and bound to this one scan, which is what makes that acceptable.
    overrides: {
      containerOverrides: [
        {
          name: options.containerName,
          environment: [
            { name: "VEGA_SCAN_ID", value: request.scanId },
            { name: "VEGA_API_URL", value: request.apiUrl },
            { name: "VEGA_RUNNER_TOKEN", value: request.runnerToken },
          ],
        },
      ],
    },
    startedBy: startedByFor(request.scanId),
    tags: [
      { key: "vega:scan-id", value: tagValue(request.scanId) },
      { key: "vega:attempt", value: String(request.attempt) },
    ],
    enableECSManagedTags: true,
    propagateTags: "TASK_DEFINITION",
  });

  /** Repeats `call` on retryable errors with backoff; other errors, and the last one, are thrown. */
  async function withRetry<T>(operation: string, call: () => Promise<T>): Promise<T> {
    for (let tryNumber = 1; ; tryNumber++) {
      try {
        return await call();
      } catch (error) {
        if (tryNumber >= retry.attempts || !isRetryableEcsError(error)) throw error;
        const delayMs = backoffDelay(retry, tryNumber);
        logger.warn({ operation, try: tryNumber, delayMs: Math.round(delayMs), error: String(error) }, `ECS ${operation} failed, retrying`);
        await sleep(delayMs);
      }
    }
  }

  // ECS has one way to stop a task (a `force` stop is the same): SIGTERM, SIGKILL after the container's stop timeout.
  async function stopTask(taskId: string, reason: string): Promise<void> {
    try {
      await withRetry("StopTask", () =>
        client.send(new StopTaskCommand({ cluster: clusterOfTaskArn(taskId) ?? cluster, task: taskId, reason: truncate(reason, STOP_REASON_MAX) })),
      );
      logger.info({ taskArn: taskId, reason }, "runner task stopped");
    } catch (error) {
      if (!isTaskNotFound(error)) throw error;
      logger.info({ taskArn: taskId }, "runner task to stop is already gone");
    }
  }

  /** The ARNs of the tasks ECS runs (desired status RUNNING) with this scan's startedBy, every page. */
  async function runningTasksOf(scanId: string): Promise<string[]> {
    const taskArns: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await withRetry("ListTasks", () =>
        // ECS: "When you specify startedBy as the filter, it must be the only filter that you use." The
        // default desired status, RUNNING, is the one wanted: tasks ECS has not been asked to stop.
        client.send(new ListTasksCommand({ ...(cluster ? { cluster } : {}), startedBy: startedByFor(scanId), nextToken })),
      );
      taskArns.push(...(page.taskArns ?? []));
      nextToken = page.nextToken;
    } while (nextToken);
    return taskArns;
  }

  /** Stops the tasks of this scan's other attempts (see the module comment); answers the ARNs stopped. */
  async function stopEarlierAttempts(request: LaunchRequest): Promise<string[]> {
    const scan = { scanId: request.scanId, attempt: request.attempt };
    let taskArns: string[];
    try {
      taskArns = await runningTasksOf(request.scanId);
    } catch (error) {
      const e = error as AwsLikeError;
      logger.error({ ...scan, error: String(error) }, "ListTasks failed: cannot tell whether an earlier attempt still runs");
      throw new LaunchFailedError(
        `could not list the tasks of scan ${request.scanId} before launching attempt ${request.attempt}: ${e.name ?? "Error"}: ${e.message}`,
        "ListTasksFailed",
        e.message,
      );
    }
    const stopped: string[] = [];
    for (const batch of chunk(taskArns, DESCRIBE_TASKS_MAX)) {
      const { tasks = [] } = await withRetry("DescribeTasks", () =>
        client.send(new DescribeTasksCommand({ ...(cluster ? { cluster } : {}), tasks: batch, include: ["TAGS"] })),
      );
      for (const task of tasks) {
        const tag = (key: string) => task.tags?.find((candidate) => candidate.key === key)?.value;
        // startedBy is the scan id made safe for ECS: the tag tells two ids that sanitize alike apart.
        if (!task.taskArn || tag("vega:scan-id") !== tagValue(request.scanId) || tag("vega:attempt") === String(request.attempt)) continue;
        await stopTask(task.taskArn, `superseded: scan ${request.scanId} was claimed again (attempt ${request.attempt})`);
        logger.warn({ ...scan, taskArn: task.taskArn, taskAttempt: tag("vega:attempt") }, "stopped the task of an earlier attempt");
        stopped.push(task.taskArn);
      }
    }
    return stopped;
  }

  async function runOnce(request: LaunchRequest): Promise<LaunchResult> {
    const input = runTaskInput(request);
    const scan = { scanId: request.scanId, attempt: request.attempt };
    let round = 1;
    let refusal: { reason: string; detail?: string } = { reason: "Unknown" };
    for (let tryNumber = 1; tryNumber <= retry.attempts; tryNumber++) {
      if (tryNumber > 1) await sleep(backoffDelay(retry, tryNumber - 1));
      const clientToken = runTaskClientToken(request.scanId, request.attempt, round);
      let tasks: Task[] | undefined;
      let failures: Failure[] | undefined;
      try {
        ({ tasks, failures } = await client.send(new RunTaskCommand({ ...input, clientToken })));
      } catch (error) {
        const e = error as AwsLikeError;
        refusal = { reason: e.name ?? "Error", detail: e.message };
        if (!isRetryableEcsError(error)) {
          logger.error({ ...scan, clientToken, error: String(error) }, "ECS refused RunTask");
          throw Object.assign(new LaunchFailedError(`ECS refused RunTask for scan ${request.scanId}: ${refusal.reason}: ${refusal.detail}`, refusal.reason, refusal.detail), {
            cause: error,
          });
        }
        // The outcome is unknown (a 5xx may come after the task started): the next try keeps this token.
        logger.warn({ ...scan, clientToken, try: tryNumber, error: String(error) }, "RunTask failed, retrying with the same clientToken");
        continue;
      }
      const taskArn = tasks?.[0]?.taskArn;
      if (taskArn) {
        logger.info({ ...scan, taskArn, clientToken }, "runner task started");
        return { taskId: taskArn };
      }
      const failure = failures?.[0];
      refusal = { reason: failure?.reason ?? "NoTaskStarted", detail: failure?.detail };
      logger.warn({ ...scan, clientToken, try: tryNumber, ...refusal }, "ECS started no task, retrying");
      round += 1;
    }
    const detail = refusal.detail ? ` (${refusal.detail})` : "";
    throw new LaunchFailedError(
      `ECS started no runner task for scan ${request.scanId} in ${retry.attempts} tries: ${refusal.reason}${detail}`,
      refusal.reason,
      refusal.detail,
    );
  }

  return {
    kind: "ecs",

    launch(request) {
      const key = runTaskClientToken(request.scanId, request.attempt);
      const known = launched.get(key);
      if (known) return Promise.resolve({ taskId: known });
      const inFlight = launchesInFlight.get(key);
      if (inFlight) return inFlight;
      const launch = (request.attempt > 1 ? stopEarlierAttempts(request) : Promise.resolve([]))
        .then(() => runOnce(request))
        .then((result) => {
          launched.set(key, result.taskId);
          if (launched.size > LAUNCHED_MEMORY) launched.delete(launched.keys().next().value!);
          return result;
        })
        .finally(() => launchesInFlight.delete(key));
      launchesInFlight.set(key, launch);
      return launch;
    },

    stop: stopTask,

    async describe(taskIds) {
      const statuses = new Map<string, TaskStatus>();
      const unique = [...new Set(taskIds)];
      // Tasks keep the cluster they started in, even if the setting changed since.
      const byCluster = new Map<string | undefined, string[]>();
      for (const taskId of unique) {
        const taskCluster = clusterOfTaskArn(taskId) ?? cluster;
        byCluster.set(taskCluster, [...(byCluster.get(taskCluster) ?? []), taskId]);
      }
      for (const [taskCluster, ids] of byCluster) {
        for (const batch of chunk(ids, DESCRIBE_TASKS_MAX)) {
          const { tasks = [], failures = [] } = await withRetry("DescribeTasks", () =>
            client.send(new DescribeTasksCommand({ cluster: taskCluster, tasks: batch })),
          );
          const byReference = new Map<string, Task>();
          for (const task of tasks) {
            if (!task.taskArn) continue;
            byReference.set(task.taskArn, task);
            byReference.set(task.taskArn.slice(task.taskArn.lastIndexOf("/") + 1), task);
          }
          for (const failure of failures) {
            if (failure.reason !== "MISSING") logger.warn({ taskArn: failure.arn, reason: failure.reason, detail: failure.detail }, "DescribeTasks failure");
          }
          for (const taskId of batch) {
            const task = byReference.get(taskId);
            statuses.set(taskId, task ? statusOf(taskId, task) : { taskId, state: "MISSING" });
          }
        }
      }
      return statuses;
    },

    async close() {
      if (ownsClient) client.destroy();
    },
  };

  function statusOf(taskId: string, task: Task): TaskStatus {
    const state = taskStateOf(task.lastStatus);
    if (state !== "STOPPED") return { taskId, state };
    const runner = containerOf(task, options.containerName);
    // A container that never started (CannotPullContainerError, …) has no exit code, only a reason.
    const containerReason =
      runner?.reason && runner.reason !== task.stoppedReason ? `${task.stoppedReason ? " " : ""}(${runner.name}: ${runner.reason})` : "";
    return {
      taskId,
      state,
      ...(task.stopCode ? { stopCode: task.stopCode } : {}),
      ...(task.stoppedReason || containerReason ? { stoppedReason: `${task.stoppedReason ?? ""}${containerReason}` } : {}),
      ...(runner?.exitCode !== undefined && runner.exitCode !== null ? { exitCode: runner.exitCode } : {}),
      ...(task.stoppedAt ? { stoppedAt: task.stoppedAt } : {}),
    };
  }
}
