/**
 * The worker's recovery step, run before each claim: it asks the API for
 * running scans and orphaned claims, asks its launcher whether their tasks live
 * (DescribeTasks in batches of 100 for ECS), decides with the shared rules
 * (src/hardening/recovery-rules.ts) and sends the decisions back; the API
 * applies each as a compare-and-set, so workers recovering at once never
 * double a transition.
 */
import type { Logger } from "../src/logger.ts";
import { launcherCanDescribe, planRecovery, type RecoveryDecision } from "../src/hardening/recovery-rules.ts";
import type { ApiClient } from "./api-client.ts";
import { RecoverScansDocument, RecoveryCandidatesDocument, type RecoveryDecisionInput } from "./generated/graphql.ts";
import type { Launcher } from "./launchers/types.ts";
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

export function createRecoveryStep(launcher: Pick<Launcher, "kind" | "describe">, log: Logger): BeforeClaim {
  return async (api: ApiClient, workerId: string) => {
    const { recoveryCandidates: candidates } = await api.request(RecoveryCandidatesDocument, { workerId });
    const running = candidates.running
      .filter((scan) => launcherCanDescribe(launcher.kind, scan.taskId))
      .map((scan) => ({ ...scan, startedAt: new Date(scan.startedAt) }));
    const tasks = running.length > 0 ? await launcher.describe(running.map((scan) => scan.taskId)) : new Map();
    const decisions = planRecovery(running, tasks, candidates.orphaned, {
      now: new Date(candidates.now),
      staleAfterSeconds: candidates.staleAfterSeconds,
      maxAttempts: candidates.maxAttempts,
    });
    for (let index = 0; index < decisions.length; index += DECISIONS_PER_CALL) {
      const batch = decisions.slice(index, index + DECISIONS_PER_CALL);
      const { recoverScans } = await api.request(RecoverScansDocument, { workerId, decisions: batch.map(toInput) }, { timeoutMs: 60_000 });
      const applied = recoverScans.filter((outcome) => outcome.applied);
      if (applied.length > 0) log.warn({ recovered: applied.map((outcome) => `${outcome.scanId}:${outcome.code}`) }, "recovered scans");
    }
  };
}
