/**
 * Stale-scan recovery, as a decision: from the running and orphaned scans and
 * what the launcher says of their tasks, what happens to each. Pure, so the
 * worker's loop, `vega maintenance recover-stale` and Mutation.recoverStaleScans
 * decide alike; the API applies each decision as a compare-and-set, so several
 * recoverers acting at once produce one transition and one event per scan.
 *
 * - Task watch: a RUNNING scan whose task has STOPPED died without reporting:
 *   FAILED with RUNNER_EXITED (ECS's stopCode, stoppedReason, exit code).
 * - Stale sweep: a RUNNING scan started more than VEGA_SCAN_RUNNING_STALE_SECONDS
 *   ago whose task is gone (STOPPED, or MISSING once ECS has forgotten it):
 *   FAILED with STALE_SCAN; if its task is alive, one warning event.
 *   A young scan whose task is MISSING is left alone: ECS can be briefly
 *   inconsistent right after RunTask.
 * - Orphaned claims: a STARTING scan whose worker is stale or gone goes back to
 *   QUEUED, or FAILED with ATTEMPTS_EXHAUSTED after VEGA_SCAN_MAX_ATTEMPTS claims.
 */
import type { TaskStatus } from "../../worker/launchers/types.ts";

export interface RunningScan {
  id: string;
  taskId: string;
  startedAt: Date;
  /** Whether the stale sweep already warned about this scan. */
  warned: boolean;
}

export interface OrphanedScan {
  id: string;
  attempts: number;
  workerId: string | null;
}

export type RecoveryCode = "RUNNER_EXITED" | "STALE_SCAN" | "STALE_SCAN_TASK_ALIVE" | "ATTEMPTS_EXHAUSTED" | "ORPHANED_CLAIM";

export interface RecoveryDecision {
  scanId: string;
  /** FAIL: → FAILED; REQUEUE: STARTING → QUEUED; WARN: an event only, the scan keeps running. */
  action: "FAIL" | "REQUEUE" | "WARN";
  expectedStatus: "RUNNING" | "STARTING";
  code: RecoveryCode;
  reason: string;
  task?: TaskStatus;
}

export interface RecoveryPolicy {
  staleAfterSeconds: number;
  maxAttempts: number;
  now: Date;
}

function describeEnd(task: TaskStatus): string {
  if (task.state === "MISSING") return "the task is no longer known to the launcher";
  const parts = [task.stopCode, task.stoppedReason, task.exitCode !== undefined ? `exit code ${task.exitCode}` : undefined, task.signal];
  return parts.filter(Boolean).join("; ") || "the task stopped";
}

export function decideRunningScan(scan: RunningScan, task: TaskStatus | undefined, policy: RecoveryPolicy): RecoveryDecision | undefined {
  const ageSeconds = (policy.now.getTime() - scan.startedAt.getTime()) / 1000;
  const stale = ageSeconds >= policy.staleAfterSeconds;
  const state = task?.state ?? "MISSING";
  const gone = state === "STOPPED" || state === "MISSING";
  const known = task ?? { taskId: scan.taskId, state: "MISSING" as const };
  if (stale && gone) {
    return {
      scanId: scan.id,
      action: "FAIL",
      expectedStatus: "RUNNING",
      code: "STALE_SCAN",
      reason: `Running for ${Math.round(ageSeconds)} s (threshold ${policy.staleAfterSeconds} s) and task ${scan.taskId} is gone: ${describeEnd(known)}`,
      task: known,
    };
  }
  if (state === "STOPPED") {
    return {
      scanId: scan.id,
      action: "FAIL",
      expectedStatus: "RUNNING",
      code: "RUNNER_EXITED",
      reason: `The runner task ${scan.taskId} stopped without completing the scan: ${describeEnd(known)}`,
      task: known,
    };
  }
  if (stale && !gone && !scan.warned) {
    return {
      scanId: scan.id,
      action: "WARN",
      expectedStatus: "RUNNING",
      code: "STALE_SCAN_TASK_ALIVE",
      reason: `Running for ${Math.round(ageSeconds)} s (threshold ${policy.staleAfterSeconds} s); task ${scan.taskId} is still ${state}, so it is left running`,
      task: known,
    };
  }
  return undefined;
}

export function decideOrphanedScan(scan: OrphanedScan, policy: RecoveryPolicy): RecoveryDecision {
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

/** Every decision for one look at the system, in the order of the issue: task watch and stale sweep, then orphaned claims. */
export function planRecovery(
  running: RunningScan[],
  tasks: Map<string, TaskStatus>,
  orphaned: OrphanedScan[],
  policy: RecoveryPolicy,
): RecoveryDecision[] {
  const decisions: RecoveryDecision[] = [];
  for (const scan of running) {
    const decision = decideRunningScan(scan, tasks.get(scan.taskId), policy);
    if (decision) decisions.push(decision);
  }
  for (const scan of orphaned) decisions.push(decideOrphanedScan(scan, policy));
  return decisions;
}

/** Whether a launcher of this kind can tell about a task: ECS task ARNs, or `local:<pid>` processes. */
export function launcherCanDescribe(kind: "local" | "ecs", taskId: string): boolean {
  return kind === "ecs" ? taskId.startsWith("arn:") : taskId.startsWith("local:");
}
