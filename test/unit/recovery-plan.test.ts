/**
 * The recovery rules (shared/recovery-rules.ts), called directly: what
 * happens to a running scan for each combination of its task's state, its
 * runner's last heartbeat and its age, to an orphaned claim, and who may apply
 * a decision.
 */
import { describe, expect, it } from "vitest";
import {
  decideOrphanedScan,
  decideRunningScan,
  planRecovery,
  recoveryAuthority,
  runningScanOverdue,
  type RecoveryPolicy,
  type RunningScan,
} from "../../shared/recovery-rules.ts";
import type { TaskStatus } from "../../shared/launcher.ts";

const NOW = new Date("2026-12-01T12:00:00Z");
const policy: RecoveryPolicy = { now: NOW, staleAfterSeconds: 21_600, heartbeatTtlSeconds: 120, timeoutSeconds: 3_600, maxAttempts: 3 };
const ago = (seconds: number) => new Date(NOW.getTime() - seconds * 1000);
const TASK = "arn:aws:ecs:us-east-1:123456789012:task/vega/0123456789abcdef0123456789abcdef";

const scan = (overrides: Partial<RunningScan> = {}): RunningScan => ({
  id: "scan-1",
  taskId: TASK,
  startedAt: ago(600),
  lastHeartbeatAt: ago(10),
  warned: false,
  ...overrides,
});
const task = (state: TaskStatus["state"], extra: Partial<TaskStatus> = {}): TaskStatus => ({ taskId: TASK, state, ...extra });
const decided = (running: RunningScan, status: TaskStatus | undefined) => {
  const decision = decideRunningScan(running, status, policy);
  return decision && [decision.action, decision.code];
};

describe("a running scan whose runner heartbeats and whose task lives", () => {
  it("is left alone", () => {
    expect(decided(scan(), task("RUNNING"))).toBeUndefined();
    expect(decided(scan(), task("PENDING"))).toBeUndefined();
  });
});

describe("a hung runner: its task lives, its heartbeat is older than the TTL", () => {
  it("is stopped and failed with RUNNER_HUNG, naming how long it was silent", () => {
    const decision = decideRunningScan(scan({ lastHeartbeatAt: ago(121) }), task("RUNNING"), policy)!;
    expect(decision).toMatchObject({ action: "STOP_AND_FAIL", code: "RUNNER_HUNG", expectedStatus: "RUNNING", task: { state: "RUNNING" } });
    expect(decision.reason).toContain("no progress report for 121 s (TTL 120 s)");
  });

  it("counts from the last report, exactly at the TTL", () => {
    expect(decided(scan({ lastHeartbeatAt: ago(120) }), task("RUNNING"))).toEqual(["STOP_AND_FAIL", "RUNNER_HUNG"]);
    expect(decided(scan({ lastHeartbeatAt: ago(119) }), task("RUNNING"))).toBeUndefined();
  });

  it("does not apply to a runner that never reported (older versions send no heartbeats)", () => {
    expect(decided(scan({ lastHeartbeatAt: null, startedAt: ago(3000) }), task("RUNNING"))).toBeUndefined();
  });
});

describe("a runner whose task is gone", () => {
  it("is failed RUNNER_EXITED when its task STOPPED, with what is known of its end", () => {
    const decision = decideRunningScan(scan(), task("STOPPED", { stopCode: "SpotInterruption", exitCode: 137 }), policy)!;
    expect(decision).toMatchObject({ action: "FAIL", code: "RUNNER_EXITED" });
    expect(decision.reason).toContain("SpotInterruption; exit code 137");
  });

  it("is failed RUNNER_EXITED when its task is MISSING and it is silent past the TTL (not ECS's lag after RunTask)", () => {
    const decision = decideRunningScan(scan({ lastHeartbeatAt: ago(500) }), undefined, policy)!;
    expect(decision).toMatchObject({ action: "FAIL", code: "RUNNER_EXITED", task: { taskId: TASK, state: "MISSING" } });
    expect(decision.reason).toContain("no longer known to the launcher");
  });

  it("is left alone when MISSING while young and heartbeating (ECS can lag right after RunTask)", () => {
    expect(decided(scan(), undefined)).toBeUndefined();
    expect(decided(scan({ lastHeartbeatAt: null, startedAt: ago(30) }), task("MISSING"))).toBeUndefined();
  });

  it("is failed RUNNER_EXITED when MISSING past the timeout, heartbeats or not", () => {
    expect(decided(scan({ lastHeartbeatAt: null, startedAt: ago(3600) }), task("MISSING"))).toEqual(["FAIL", "RUNNER_EXITED"]);
  });

  it("is failed with the stale sweep's STALE_SCAN once past the stale threshold", () => {
    expect(decided(scan({ startedAt: ago(21_600) }), task("STOPPED"))).toEqual(["FAIL", "STALE_SCAN"]);
    expect(decided(scan({ startedAt: ago(30_000), lastHeartbeatAt: null }), undefined)).toEqual(["FAIL", "STALE_SCAN"]);
  });

  it("counts a live pid that runs another scan's runner (a reused pid) as gone", () => {
    const reused = task("RUNNING", { taskId: "local:4242", scanId: "another-scan" });
    expect(decided(scan({ taskId: "local:4242", lastHeartbeatAt: ago(500) }), reused)).toEqual(["FAIL", "RUNNER_EXITED"]);
    expect(decided(scan({ taskId: "local:4242", lastHeartbeatAt: ago(500) }), { ...reused, scanId: "scan-1" })).toEqual(["STOP_AND_FAIL", "RUNNER_HUNG"]);
  });

  it("with no task recorded at all (the runner reported first and its worker died), is judged as gone", () => {
    const decision = decideRunningScan(scan({ taskId: null, lastHeartbeatAt: ago(500) }), undefined, policy)!;
    expect(decision).toMatchObject({ action: "FAIL", code: "RUNNER_EXITED" });
    expect(decision.task).toBeUndefined();
    expect(decision.reason).toContain("no task was ever recorded");
  });
});

describe("a scan past VEGA_SCAN_TIMEOUT_SECONDS whose task lives", () => {
  it("is stopped and failed with SCAN_TIMEOUT, before any hung verdict", () => {
    expect(decided(scan({ startedAt: ago(3600) }), task("RUNNING"))).toEqual(["STOP_AND_FAIL", "SCAN_TIMEOUT"]);
    expect(decided(scan({ startedAt: ago(4000), lastHeartbeatAt: ago(1000) }), task("RUNNING"))).toEqual(["STOP_AND_FAIL", "SCAN_TIMEOUT"]);
    expect(decided(scan({ startedAt: ago(3599) }), task("RUNNING"))).toBeUndefined();
  });
});

describe("the stale sweep of a live task", () => {
  const longTimeout = { ...policy, timeoutSeconds: 86_400 };

  it("warns once past the stale threshold when the timeout is longer", () => {
    expect(decideRunningScan(scan({ startedAt: ago(21_600) }), task("RUNNING"), longTimeout)).toMatchObject({ action: "WARN", code: "STALE_SCAN_TASK_ALIVE" });
    expect(decideRunningScan(scan({ startedAt: ago(21_600), warned: true }), task("RUNNING"), longTimeout)).toBeUndefined();
  });
});

describe("an orphaned claim", () => {
  it("goes back to the queue, or fails with ATTEMPTS_EXHAUSTED at the limit", () => {
    expect(decideOrphanedScan({ id: "s", attempts: 2, workerId: "w" }, policy)).toMatchObject({ action: "REQUEUE", code: "ORPHANED_CLAIM" });
    expect(decideOrphanedScan({ id: "s", attempts: 3, workerId: null }, policy)).toMatchObject({ action: "FAIL", code: "ATTEMPTS_EXHAUSTED" });
  });
});

describe("planRecovery", () => {
  it("decides every running scan against its own task, then the orphaned claims", () => {
    const tasks = new Map([
      ["t-1", { taskId: "t-1", state: "STOPPED" as const }],
      ["t-2", { taskId: "t-2", state: "RUNNING" as const }],
    ]);
    const decisions = planRecovery(
      [scan({ id: "a", taskId: "t-1" }), scan({ id: "b", taskId: "t-2" }), scan({ id: "c", taskId: "t-2", lastHeartbeatAt: ago(300) })],
      tasks,
      [{ id: "d", attempts: 1, workerId: null }],
      policy,
    );
    expect(decisions.map((decision) => [decision.scanId, decision.code])).toEqual([
      ["a", "RUNNER_EXITED"],
      ["c", "RUNNER_HUNG"],
      ["d", "ORPHANED_CLAIM"],
    ]);
  });
});

describe("who may apply a recovery decision", () => {
  const target = { status: "RUNNING", workerId: "holder", workerLive: true, startedAt: ago(600), lastHeartbeatAt: ago(10) };

  it("the worker that holds the scan", () => {
    expect(recoveryAuthority(target, "holder", policy)).toBe("HOLDS_IT");
  });

  it("any worker when the holder is stale or gone, or there is none", () => {
    expect(recoveryAuthority({ ...target, workerLive: false }, "other", policy)).toBe("WORKER_GONE");
    expect(recoveryAuthority({ ...target, workerId: null, workerLive: false }, "other", policy)).toBe("WORKER_GONE");
  });

  it("any worker when the scan is past the heartbeat TTL, the timeout or the stale threshold", () => {
    expect(recoveryAuthority({ ...target, lastHeartbeatAt: ago(120) }, "other", policy)).toBe("OVERDUE");
    expect(recoveryAuthority({ ...target, startedAt: ago(3600) }, "other", { ...policy, staleAfterSeconds: 99_999 })).toBe("OVERDUE");
    expect(recoveryAuthority({ ...target, startedAt: ago(21_600) }, "other", { ...policy, timeoutSeconds: 99_999 })).toBe("OVERDUE");
  });

  it("nobody else for a live worker's healthy scan, or its starting claim", () => {
    expect(recoveryAuthority(target, "other", policy)).toBeUndefined();
    expect(recoveryAuthority({ ...target, status: "STARTING", startedAt: null, lastHeartbeatAt: null }, "other", policy)).toBeUndefined();
  });

  it("judges from the API's rows alone (runningScanOverdue)", () => {
    expect(runningScanOverdue({ startedAt: ago(100), lastHeartbeatAt: null }, policy)).toEqual({
      ageSeconds: 100,
      silentSeconds: undefined,
      timedOut: false,
      silent: false,
      stale: false,
    });
  });
});
