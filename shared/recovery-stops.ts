/**
 * Stopping the task of a STOP_AND_FAIL recovery decision (RUNNER_HUNG,
 * SCAN_TIMEOUT) before the decision is sent. In that order because the other
 * order can leak: a scan failed while its hung task lives on leaves the task
 * running with no scan to stop it for (a SIGSTOPped process forever, an ECS task
 * billed until someone notices), whereas a task stopped whose scan is not failed
 * yet is found STOPPED by the next sweep and failed then.
 *
 * A hung runner is killed outright (`force`: SIGKILL for a local process, since
 * a SIGSTOPped one does nothing with SIGTERM until it is continued); one past its
 * timeout is stopped gracefully (SIGTERM, then SIGKILL after the grace period),
 * so that it removes its work directory. ECS has one way to stop a task
 * (StopTask: SIGTERM, SIGKILL after the container's stop timeout).
 */
import type { Launcher } from "./launcher.ts";
import type { RecoveryDecision } from "./recovery-rules.ts";

export interface StopLogger {
  warn(details: object, message: string): void;
}

/** The decisions to send: all but those whose task could not be stopped (they are decided again at the next sweep). */
export async function stopTasksBeforeFailing(
  decisions: RecoveryDecision[],
  stop: Launcher["stop"],
  log: StopLogger,
): Promise<RecoveryDecision[]> {
  const stopped = await Promise.all(
    decisions.map(async (decision) => {
      if (decision.action !== "STOP_AND_FAIL" || !decision.task) return true;
      try {
        await stop(decision.task.taskId, `${decision.code}: ${decision.reason}`, { force: decision.code === "RUNNER_HUNG" });
        return true;
      } catch (error) {
        log.warn({ err: error, scanId: decision.scanId, taskId: decision.task.taskId, code: decision.code }, "could not stop the task; the scan is left for the next sweep");
        return false;
      }
    }),
  );
  return decisions.filter((_, index) => stopped[index]);
}
