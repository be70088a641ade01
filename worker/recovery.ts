/**
 * The worker's recovery step, run before each claim: it asks the API for the
 * scans to look at (the running scans it holds; and, while it holds the
 * recovery lease, other workers' scans that need it and orphaned claims), asks
 * its launcher whether their tasks live (DescribeTasks in batches of 100 for
 * ECS), decides with the shared rules (shared/recovery-rules.ts), stops
 * the tasks of hung and timed-out scans, and sends the decisions back. The API
 * checks that this worker may apply each one, then applies it as a
 * compare-and-set, so workers recovering at once never double a transition.
 */
import type { Logger } from "../shared/logger.ts";
import { launcherCanDescribe, planRecovery, type RecoveryDecision } from "../shared/recovery-rules.ts";
import { stopTasksBeforeFailing } from "../shared/recovery-stops.ts";
import type { ApiClient } from "./api-client.ts";
import { RecoverScansDocument, RecoveryCandidatesDocument, type RecoveryDecisionInput } from "./generated/graphql.ts";
import type { Launcher } from "../shared/launcher.ts";
import type { BeforeClaim } from "./scan-loop.ts";

const DECISIONS_PER_CALL = 1000;

const toInput = (decision: RecoveryDecision): RecoveryDecisionInput => ({
  scanId: decision.scanId,
  action: decision.action,
  expectedStatus: decision.expectedStatus,
  code: decision.code,
  reason: decision.reason,
  task: decision.task
    ? {
        taskId: decision.task.taskId,
        state: decision.task.state,
        stopCode: decision.task.stopCode,
        stoppedReason: decision.task.stoppedReason,
        exitCode: decision.task.exitCode,
        signal: decision.task.signal,
      }
    : undefined,
});

export function createRecoveryStep(launcher: Pick<Launcher, "kind" | "describe" | "stop">, log: Logger): BeforeClaim {
  return async (api: ApiClient, workerId: string) => {
    const { recoveryCandidates: candidates } = await api.request(RecoveryCandidatesDocument, { workerId });
    // A task this launcher cannot tell about (an ECS task seen by a local worker) is not judged MISSING; a
    // scan with no task recorded at all is, once it is overdue.
    const running = candidates.running
      .filter((scan) => scan.taskId == null || launcherCanDescribe(launcher.kind, scan.taskId))
      .map((scan) => ({
        ...scan,
        taskId: scan.taskId ?? null,
        startedAt: new Date(scan.startedAt),
        lastHeartbeatAt: scan.lastHeartbeatAt ? new Date(scan.lastHeartbeatAt) : null,
      }));
    const taskIds = running.flatMap((scan) => (scan.taskId === null ? [] : [scan.taskId]));
    const tasks = taskIds.length > 0 ? await launcher.describe(taskIds) : new Map();
    const planned = planRecovery(running, tasks, candidates.orphaned, {
      now: new Date(candidates.now),
      staleAfterSeconds: candidates.staleAfterSeconds,
      heartbeatTtlSeconds: candidates.heartbeatTtlSeconds,
      timeoutSeconds: candidates.timeoutSeconds,
      maxAttempts: candidates.maxAttempts,
    });
    const decisions = await stopTasksBeforeFailing(planned, (taskId, reason, options) => launcher.stop(taskId, reason, options), log);
    for (let index = 0; index < decisions.length; index += DECISIONS_PER_CALL) {
      const batch = decisions.slice(index, index + DECISIONS_PER_CALL);
      const { recoverScans } = await api.request(RecoverScansDocument, { workerId, decisions: batch.map(toInput) }, { timeoutMs: 60_000 });
      const applied = recoverScans.filter((outcome) => outcome.applied);
      if (applied.length > 0) log.warn({ recovered: applied.map((outcome) => `${outcome.scanId}:${outcome.code}`) }, "recovered scans");
      const refused = recoverScans.filter((outcome) => outcome.refused);
      if (refused.length > 0) log.warn({ refused: refused.map((outcome) => `${outcome.scanId}: ${outcome.refused}`) }, "the API refused recovery decisions");
    }
  };
}
