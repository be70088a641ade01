/**
 * For the recovery tests that kill real processes (recovery-restart.test.ts,
 * recovery-worker-death.test.ts): the scans' settings and fields they read,
 * the wait for both scans to be mid-analysis, and the processes they started
 * or SIGSTOPped, all killed after each test by the pids held.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterEach } from "vitest";
import { stopProcess, vegaBin } from "./cli.ts";
import { pidOfLocalTask, waitFor } from "./worker-process.ts";

export const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];
/** A runner silent this long is recovered; it reports every second (a busy machine delays some beats, not ten in a row). */
export const SHORT_TTL = { VEGA_SCAN_HEARTBEAT_TTL_SECONDS: "10", VEGA_RUNNER_HEARTBEAT_SECONDS: "1" };
export const SCAN_FIELDS = "id status errorCode errorMessage taskId lastHeartbeatAt findingCounts { critical high medium low info }";

export const totalFindings = (scan: { findingCounts: Record<string, number> }) =>
  Object.values(scan.findingCounts).reduce((sum, count) => sum + count, 0);

/** Waits until every scan is RUNNING with its task known, has heartbeated and stored a finding; answers them. */
export async function runningWithFindings(read: (scanId: string) => Promise<any>, scanIds: string[], details: () => string) {
  return waitFor(
    "both scans to run, heartbeat and store findings",
    async () => {
      const scans = await Promise.all(scanIds.map(read));
      const ended = scans.find((scan) => FINISHED.includes(scan.status));
      if (ended) throw new Error(`scan ${ended.id} ended (${ended.status}) before the kill:\n${details()}`);
      return scans.every((scan) => scan.status === "RUNNING" && scan.taskId && scan.lastHeartbeatAt && totalFindings(scan) > 0) && scans;
    },
    { timeoutMs: 180_000 },
  );
}

function isVegaRunner(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(-2).join(" ") === `${vegaBin} runner`;
  } catch {
    return false;
  }
}

/**
 * What a test file's tests start: process groups (killed whole), children, and runners stopped with
 * SIGSTOP; after each test, whatever is left of them is killed.
 */
export function trackRecoveryProcesses() {
  const groups: number[] = [];
  const children: ChildProcess[] = [];
  const runnerPids: number[] = [];
  afterEach(async () => {
    for (const pid of groups.splice(0)) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // The group is gone already.
      }
    }
    for (const child of children.splice(0)) await stopProcess(child, "SIGKILL");
    // Runners this test stopped and that outlived it (a failed assertion) are not left stopped on the machine;
    // only while the pid is still a vega runner, never a process that reused it.
    for (const pid of runnerPids.splice(0)) if (isVegaRunner(pid)) process.kill(pid, "SIGKILL");
  });
  return {
    groups,
    children,
    /** SIGSTOPs the runner of a local task (so that it cannot finish first), answering its pid. */
    stopRunner(taskId: string) {
      const pid = pidOfLocalTask(taskId);
      process.kill(pid, "SIGSTOP");
      runnerPids.push(pid);
      return pid;
    },
  };
}
