/**
 * The recovery rules' thresholds and small judgements (shared/recovery-rules.ts),
 * at their boundaries: test/recovery-rules.test.ts walks the decisions
 * themselves; here, exactly where each threshold starts.
 */
import { describe, expect, it } from "vitest";
import { decideOrphanedScan, launcherCanDescribe, recoveryAuthority, runningScanOverdue, type RecoveryPolicy } from "../../shared/recovery-rules.ts";

const NOW = new Date("2026-12-01T12:00:00Z");
const policy: RecoveryPolicy = { now: NOW, staleAfterSeconds: 21_600, heartbeatTtlSeconds: 120, timeoutSeconds: 3_600, maxAttempts: 3 };
const ago = (seconds: number) => new Date(NOW.getTime() - seconds * 1000);

describe("runningScanOverdue", () => {
  it("is past each threshold from the second it is reached, not before", () => {
    expect(runningScanOverdue({ startedAt: ago(3_599.999), lastHeartbeatAt: ago(119.999) }, policy)).toMatchObject({ timedOut: false, silent: false, stale: false });
    expect(runningScanOverdue({ startedAt: ago(3_600), lastHeartbeatAt: ago(120) }, policy)).toMatchObject({ timedOut: true, silent: true, stale: false });
    expect(runningScanOverdue({ startedAt: ago(21_600), lastHeartbeatAt: ago(1) }, policy)).toMatchObject({ stale: true, silent: false });
  });

  it("never calls a runner that sent no heartbeat silent, and says how long each was", () => {
    const overdue = runningScanOverdue({ startedAt: ago(90_000), lastHeartbeatAt: null }, policy);
    expect(overdue).toMatchObject({ ageSeconds: 90_000, silentSeconds: undefined, silent: false, timedOut: true, stale: true });
  });
});

describe("decideOrphanedScan", () => {
  it("queues a claim again below the attempt limit and fails it at the limit", () => {
    expect(decideOrphanedScan({ id: "s", attempts: 2, workerId: "w" }, policy)).toMatchObject({ action: "REQUEUE", code: "ORPHANED_CLAIM", expectedStatus: "STARTING" });
    expect(decideOrphanedScan({ id: "s", attempts: 3, workerId: null }, policy)).toMatchObject({ action: "FAIL", code: "ATTEMPTS_EXHAUSTED", expectedStatus: "STARTING" });
  });
});

describe("recoveryAuthority", () => {
  const target = { status: "RUNNING", workerId: "holder", workerLive: true, startedAt: ago(60), lastHeartbeatAt: ago(5) };
  it("answers why a worker may act, or undefined", () => {
    expect(recoveryAuthority(target, "holder", policy)).toBe("HOLDS_IT");
    expect(recoveryAuthority({ ...target, workerLive: false }, "other", policy)).toBe("WORKER_GONE");
    expect(recoveryAuthority({ ...target, lastHeartbeatAt: ago(120) }, "other", policy)).toBe("OVERDUE");
    expect(recoveryAuthority(target, "other", policy)).toBeUndefined();
    // A live worker's starting claim is its own, however old.
    expect(recoveryAuthority({ ...target, status: "STARTING", startedAt: null, lastHeartbeatAt: null }, "other", policy)).toBeUndefined();
  });
});

describe("launcherCanDescribe", () => {
  it("lets each launcher judge only its own task ids", () => {
    expect(launcherCanDescribe("ecs", "arn:aws:ecs:eu-west-1:1:task/vega/abc")).toBe(true);
    expect(launcherCanDescribe("ecs", "local:4242")).toBe(false);
    expect(launcherCanDescribe("local", "local:4242")).toBe(true);
    expect(launcherCanDescribe("local", "arn:aws:ecs:eu-west-1:1:task/vega/abc")).toBe(false);
  });
});
