/**
 * Stale-scan recovery, as a decision: from the running and orphaned scans and
 * what the launcher says of their tasks, what happens to each. Pure, so the
 * worker's loop, `vega maintenance recover-stale` and Mutation.recoverStaleScans
 * decide alike; the API applies each decision as a compare-and-set, so several
 * recoverers acting at once produce one transition and one event per scan.
 *
 * A RUNNING scan, in this order:
 * - Its task is gone (STOPPED, or MISSING):
 *   - started more than VEGA_SCAN_RUNNING_STALE_SECONDS ago (the stale sweep):
 *     FAILED with STALE_SCAN;
 *   - STOPPED (the task watch): the runner died without reporting: FAILED with
 *     RUNNER_EXITED (ECS's stopCode, stoppedReason, exit code);
 *   - MISSING, and its runner silent for VEGA_SCAN_HEARTBEAT_TTL_SECONDS or the
 *     scan past VEGA_SCAN_TIMEOUT_SECONDS: FAILED with RUNNER_EXITED. A young
 *     scan whose task is MISSING and whose runner is not overdue is left alone:
 *     ECS can be briefly inconsistent right after RunTask.
 * - Its task is alive (PENDING, RUNNING):
 *   - past VEGA_SCAN_TIMEOUT_SECONDS: the task is stopped, the scan FAILED with
 *     SCAN_TIMEOUT;
 *   - its runner silent for VEGA_SCAN_HEARTBEAT_TTL_SECONDS (a deadlock, a
 *     pathological file, SIGSTOP): the task is stopped, FAILED with RUNNER_HUNG;
 *   - past VEGA_SCAN_RUNNING_STALE_SECONDS: one warning event.
 * The heartbeat TTL applies only once a runner has reported progress: runners
 * of older versions send none, and for them the timeout and the stale sweep
 * remain.
 *
 * A STARTING scan whose worker is stale or gone (an orphaned claim) goes back
 * to QUEUED, or FAILED with ATTEMPTS_EXHAUSTED after VEGA_SCAN_MAX_ATTEMPTS claims.
 *
 * Who may apply a decision (`recoveryAuthority`, checked by the API): the
 * worker that holds the scan; any worker when the holder is stale or gone; any
 * worker when the scan is, by the API's own rows and clock, past the heartbeat
 * TTL, the timeout or the stale threshold. A live worker's healthy scan is
 * nobody else's to recover.
 */
import type { TaskStatus } from "./launcher.ts";

export interface RunningScan {
  id: string;
  /** Null when the runner reported before its worker could record the task, and the worker then died. */
  taskId: string | null;
  startedAt: Date;
  /** The runner's last progress report; null for a runner that sent none (yet, or ever: older versions). */
  lastHeartbeatAt: Date | null;
  /** Whether the stale sweep already warned about this scan. */
  warned: boolean;
}

export interface OrphanedScan {
  id: string;
  attempts: number;
  workerId: string | null;
}

export type RecoveryCode =
  | "RUNNER_EXITED"
  | "RUNNER_HUNG"
  | "SCAN_TIMEOUT"
  | "STALE_SCAN"
  | "STALE_SCAN_TASK_ALIVE"
  | "ATTEMPTS_EXHAUSTED"
  | "ORPHANED_CLAIM";

export type RecoveryAction = "FAIL" | "STOP_AND_FAIL" | "REQUEUE" | "WARN";

export interface RecoveryDecision {
  scanId: string;
  /**
   * FAIL: → FAILED. STOP_AND_FAIL: the recoverer stops the task first, then → FAILED.
   * REQUEUE: STARTING → QUEUED. WARN: an event only, the scan keeps running.
   */
  action: RecoveryAction;
  expectedStatus: "RUNNING" | "STARTING";
  code: RecoveryCode;
  reason: string;
  task?: TaskStatus;
}

export interface RecoveryPolicy {
  staleAfterSeconds: number;
  heartbeatTtlSeconds: number;
  timeoutSeconds: number;
  maxAttempts: number;
  now: Date;
}

export interface Overdue {
  ageSeconds: number;
  /** Seconds since the runner's last progress report; undefined when it never sent one. */
  silentSeconds: number | undefined;
  timedOut: boolean;
  silent: boolean;
  stale: boolean;
}

/** Which thresholds a running scan is past, from its own timestamps alone (no task state needed). */
export function runningScanOverdue(scan: Pick<RunningScan, "startedAt" | "lastHeartbeatAt">, policy: RecoveryPolicy): Overdue {
  const ageSeconds = (policy.now.getTime() - scan.startedAt.getTime()) / 1000;
  const silentSeconds = scan.lastHeartbeatAt ? (policy.now.getTime() - scan.lastHeartbeatAt.getTime()) / 1000 : undefined;
  return {
    ageSeconds,
    silentSeconds,
    timedOut: ageSeconds >= policy.timeoutSeconds,
    silent: silentSeconds !== undefined && silentSeconds >= policy.heartbeatTtlSeconds,
    stale: ageSeconds >= policy.staleAfterSeconds,
  };
}

const seconds = (value: number) => `${Math.round(value)} s`;

function describeEnd(task: TaskStatus | undefined): string {
  if (!task) return "no task was ever recorded for it";
  if (task.state === "MISSING") return "the task is no longer known to the launcher";
  const parts = [task.stopCode, task.stoppedReason, task.exitCode !== undefined ? `exit code ${task.exitCode}` : undefined, task.signal];
  return parts.filter(Boolean).join("; ") || "the task stopped";
}

export function decideRunningScan(scan: RunningScan, task: TaskStatus | undefined, policy: RecoveryPolicy): RecoveryDecision | undefined {
  const overdue = runningScanOverdue(scan, policy);
  // A pid reused by another scan's runner is not this scan's task: this one is gone.
  const ours = task && (task.scanId === undefined || task.scanId === scan.id) ? task : undefined;
  const known = scan.taskId === null ? undefined : (ours ?? { taskId: scan.taskId, state: "MISSING" as const });
  const state = known?.state ?? "MISSING";
  const taskName = scan.taskId === null ? "of unknown task" : `task ${scan.taskId}`;
  const decision = (action: RecoveryAction, code: RecoveryCode, reason: string): RecoveryDecision => ({
    scanId: scan.id,
    action,
    expectedStatus: "RUNNING",
    code,
    reason,
    ...(known ? { task: known } : {}),
  });
  const silence = `no progress report for ${seconds(overdue.silentSeconds ?? 0)} (TTL ${policy.heartbeatTtlSeconds} s)`;

  if (state === "STOPPED" || state === "MISSING") {
    if (overdue.stale) {
      return decision(
        "FAIL",
        "STALE_SCAN",
        `Running for ${seconds(overdue.ageSeconds)} (threshold ${policy.staleAfterSeconds} s) and ${taskName} is gone: ${describeEnd(known)}`,
      );
    }
    if (state === "STOPPED") {
      return decision("FAIL", "RUNNER_EXITED", `The runner ${taskName} stopped without completing the scan: ${describeEnd(known)}`);
    }
    if (overdue.silent || overdue.timedOut) {
      const why = overdue.silent ? silence : `running for ${seconds(overdue.ageSeconds)} (timeout ${policy.timeoutSeconds} s)`;
      return decision("FAIL", "RUNNER_EXITED", `The runner ${taskName} is gone without completing the scan (${why}): ${describeEnd(known)}`);
    }
    return undefined;
  }
  if (overdue.timedOut) {
    return decision(
      "STOP_AND_FAIL",
      "SCAN_TIMEOUT",
      `Running for ${seconds(overdue.ageSeconds)}, past the timeout of ${policy.timeoutSeconds} s: ${taskName} (${state}) is stopped`,
    );
  }
  if (overdue.silent) {
    return decision("STOP_AND_FAIL", "RUNNER_HUNG", `The runner is hung, ${silence}, while ${taskName} is still ${state}: the task is stopped`);
  }
  if (overdue.stale && !scan.warned) {
    return decision(
      "WARN",
      "STALE_SCAN_TASK_ALIVE",
      `Running for ${seconds(overdue.ageSeconds)} (threshold ${policy.staleAfterSeconds} s); ${taskName} is still ${state}, so it is left running`,
    );
  }
  return undefined;
}

export function decideOrphanedScan(scan: OrphanedScan, policy: Pick<RecoveryPolicy, "maxAttempts">): RecoveryDecision {
  const whose = scan.workerId ? `worker ${scan.workerId} is stale or gone` : "its worker is gone";
  if (scan.attempts >= policy.maxAttempts) {
    return {
      scanId: scan.id,
      action: "FAIL",
      expectedStatus: "STARTING",
      code: "ATTEMPTS_EXHAUSTED",
      reason: `Claimed ${scan.attempts} times (limit ${policy.maxAttempts}) and ${whose}: not retried again`,
    };
  }
  return {
    scanId: scan.id,
    action: "REQUEUE",
    expectedStatus: "STARTING",
    code: "ORPHANED_CLAIM",
    reason: `Claim ${scan.attempts} was orphaned (${whose}); queued again`,
  };
}

/** Every decision for one look at the system: running scans (task watch, heartbeats, timeout, stale sweep), then orphaned claims. */
export function planRecovery(
  running: RunningScan[],
  tasks: Map<string, TaskStatus>,
  orphaned: OrphanedScan[],
  policy: RecoveryPolicy,
): RecoveryDecision[] {
  const decisions: RecoveryDecision[] = [];
  for (const scan of running) {
    const decision = decideRunningScan(scan, scan.taskId === null ? undefined : tasks.get(scan.taskId), policy);
    if (decision) decisions.push(decision);
  }
  for (const scan of orphaned) decisions.push(decideOrphanedScan(scan, policy));
  return decisions;
}

/** A scan a worker sent a decision about, as the API's rows show it. */
export interface RecoveryTarget {
  status: string;
  workerId: string | null;
  /** Whether the holding worker is registered and heartbeating within VEGA_WORKER_HEARTBEAT_TTL_SECONDS. */
  workerLive: boolean;
  startedAt: Date | null;
  lastHeartbeatAt: Date | null;
}

export type RecoveryAuthority = "HOLDS_IT" | "WORKER_GONE" | "OVERDUE";

/** Why `workerId` may apply a recovery decision to this scan, or undefined: the decision is refused. */
export function recoveryAuthority(target: RecoveryTarget, workerId: string, policy: RecoveryPolicy): RecoveryAuthority | undefined {
  if (target.workerId === workerId) return "HOLDS_IT";
  if (target.workerId === null || !target.workerLive) return "WORKER_GONE";
  if (target.status === "RUNNING" && target.startedAt) {
    const overdue = runningScanOverdue({ startedAt: target.startedAt, lastHeartbeatAt: target.lastHeartbeatAt }, policy);
    if (overdue.timedOut || overdue.silent || overdue.stale) return "OVERDUE";
  }
  return undefined;
}

/** Whether a launcher of this kind can tell about a task: ECS task ARNs, or `local:<pid>` processes. */
export function launcherCanDescribe(kind: "local" | "ecs", taskId: string): boolean {
  return kind === "ecs" ? taskId.startsWith("arn:") : taskId.startsWith("local:");
}
