/**
 * Applying stale-scan recovery (the decisions of shared/recovery-rules.ts).
 * Workers send their decisions through Mutation.recoverScans, where the API
 * checks each one against its own rows (recoveryAuthority) before applying it;
 * the maintenance task and Mutation.recoverStaleScans run the whole sweep
 * here, asking the configured launcher about tasks themselves.
 *
 * What a worker sweeps: the RUNNING scans it holds, always; and, while it holds
 * the recovery lease, the scans of other workers that need it (their worker is
 * stale or gone, or they are past the heartbeat TTL, the timeout or the stale
 * threshold) and orphaned claims. One lease holder at a time, so that N workers
 * do not each describe every task of the fleet at every poll.
 */
import type { Config } from "../../shared/config.ts";
import type { Deps, Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import { badUserInput } from "../../shared/errors.ts";
import {
  launcherCanDescribe,
  planRecovery,
  recoveryAuthority,
  type OrphanedScan,
  type RecoveryAction,
  type RecoveryDecision,
  type RecoveryPolicy,
  type RunningScan,
} from "../../shared/recovery-rules.ts";
import { stopTasksBeforeFailing, type StopLogger } from "../../shared/recovery-stops.ts";
import type { Prisma } from "../generated/prisma/client.ts";
import type { Launcher } from "../../shared/launcher.ts";
import { recordAudit } from "./audit.ts";
import { recordScanWarnings, transitionScansInBulk } from "./scan-state.ts";
import { staleWorkerCutoff, staleWorkerWhere } from "./worker-staleness.ts";
import { authorizeWorkerAccess } from "./workers.ts";

type RecoveryDeps = Pick<Deps, "prisma" | "pubsub" | "config" | "signingKey">;

/** Scans one sweep looks at, at most: 10,000 running scans fit in 100 DescribeTasks calls. */
export const MAX_RUNNING_CANDIDATES = 10_000;
export const MAX_ORPHANED_CANDIDATES = 1_000;
/** Decisions applied per statement batch. */
const APPLY_BATCH = 500;
/** Refused decisions named in one audit entry (the count covers all of them). */
const AUDITED_REFUSALS = 100;
const RECOVERY_LEASE = "recovery-sweep";

const AUDIT_RECOVERY_REFUSED = "scan.recoverRefused";

export function recoveryPolicy(config: Config, now: Date): RecoveryPolicy {
  return {
    now,
    staleAfterSeconds: config.scanRunningStaleSeconds,
    heartbeatTtlSeconds: config.scanHeartbeatTtlSeconds,
    timeoutSeconds: config.scanTimeoutSeconds,
    maxAttempts: config.scanMaxAttempts,
  };
}

/** A worker that can no longer act for its scans: deregistered, or silent past VEGA_WORKER_HEARTBEAT_TTL_SECONDS. */
function goneWorker(config: Config, now: Date): Prisma.WorkerWhereInput {
  return { OR: [{ deregisteredAt: { not: null } }, staleWorkerWhere(staleWorkerCutoff(config, now))] };
}

/** Whose scans a sweep looks at: every scan (the operator's and the maintenance task's sweep), or one worker's view. */
export type SweepScope = { everything: true } | { workerId: string; sweepsOthers: boolean };

export interface RecoveryCandidates {
  running: RunningScan[];
  orphaned: OrphanedScan[];
}

/**
 * RUNNING scans, oldest first, and STARTING scans whose worker is stale,
 * deregistered or gone. For a worker: the scans it holds, and, when it sweeps
 * others', those of gone workers and those past a threshold by the API's clock.
 */
export async function listRecoveryCandidates(deps: Pick<Deps, "prisma" | "config">, scope: SweepScope, now = new Date()): Promise<RecoveryCandidates> {
  const sweepsOthers = "everything" in scope || scope.sweepsOthers;
  const config = deps.config;
  const silentBefore = new Date(now.getTime() - config.scanHeartbeatTtlSeconds * 1000);
  const overdueStartBefore = new Date(now.getTime() - Math.min(config.scanTimeoutSeconds, config.scanRunningStaleSeconds) * 1000);
  const runningWhere: Prisma.ScanWhereInput =
    "everything" in scope
      ? { status: "RUNNING" }
      : {
          status: "RUNNING",
          OR: [
            { workerId: scope.workerId },
            ...(scope.sweepsOthers
              ? [
                  { workerId: null },
                  { worker: goneWorker(config, now) },
                  { lastHeartbeatAt: { lt: silentBefore } },
                  { startedAt: { lt: overdueStartBefore } },
                ]
              : []),
          ],
        };
  const running = await deps.prisma.scan.findMany({
    where: runningWhere,
    orderBy: [{ startedAt: "asc" }, { id: "asc" }],
    take: MAX_RUNNING_CANDIDATES,
    select: { id: true, taskId: true, startedAt: true, lastHeartbeatAt: true, staleWarnedAt: true },
  });
  const orphaned = sweepsOthers
    ? await deps.prisma.scan.findMany({
        where: { status: "STARTING", OR: [{ workerId: null }, { worker: goneWorker(config, now) }] },
        orderBy: [{ claimedAt: "asc" }, { id: "asc" }],
        take: MAX_ORPHANED_CANDIDATES,
        select: { id: true, attempts: true, workerId: true },
      })
    : [];
  return {
    running: running.map((scan) => ({
      id: scan.id,
      taskId: scan.taskId,
      startedAt: scan.startedAt ?? now,
      lastHeartbeatAt: scan.lastHeartbeatAt,
      warned: scan.staleWarnedAt !== null,
    })),
    orphaned,
  };
}

/**
 * Takes or renews the recovery lease for `workerId` and answers whether it
 * holds it. The lease is free when it has expired or when its holder is
 * draining, deregistered or stale; it lasts the shorter of the worker and scan
 * heartbeat TTLs, so a holder that died delays the sweep of others' scans by no
 * more than a scan's own heartbeat TTL.
 */
export async function holdRecoveryLease(prisma: PrismaClient, config: Config, workerId: string, now = new Date()): Promise<boolean> {
  const expiresAt = new Date(now.getTime() + Math.min(config.workerHeartbeatTtlSeconds, config.scanHeartbeatTtlSeconds) * 1000);
  const gone = goneWorker(config, now);
  return prisma.$transaction(async (tx) => {
    await tx.$executeRaw`
      INSERT INTO "RecoveryLease" (name, "workerId", "acquiredAt", "expiresAt") VALUES (${RECOVERY_LEASE}, '', ${now}, ${now})
      ON CONFLICT (name) DO NOTHING`;
    const [lease] = await tx.$queryRaw<{ workerId: string; acquiredAt: Date; expiresAt: Date }[]>`
      SELECT "workerId", "acquiredAt", "expiresAt" FROM "RecoveryLease" WHERE name = ${RECOVERY_LEASE} FOR UPDATE`;
    // Only a registered, live worker that is not draining may hold it.
    const mayHold = async (id: string) => (await tx.worker.count({ where: { id, draining: false, NOT: gone } })) > 0;
    if (!(await mayHold(workerId))) return false;
    if (lease.workerId !== workerId && lease.expiresAt > now && (await mayHold(lease.workerId))) return false;
    await tx.recoveryLease.update({
      where: { name: RECOVERY_LEASE },
      data: { workerId, acquiredAt: lease.workerId === workerId ? lease.acquiredAt : now, expiresAt },
    });
    return true;
  });
}

/** Query.recoveryCandidates: what one worker's recovery step sweeps, with the policy it decides by. */
export async function recoveryCandidatesForWorker(deps: Pick<Deps, "prisma" | "config" | "signingKey">, viewer: Viewer, workerId: string) {
  authorizeWorkerAccess(viewer.principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  const now = new Date();
  const sweepsOthers = await holdRecoveryLease(deps.prisma, deps.config, workerId, now);
  return { ...(await listRecoveryCandidates(deps, { workerId, sweepsOthers }, now)), sweepsOthers, policy: recoveryPolicy(deps.config, now) };
}

export interface RecoveryOutcome {
  scanId: string;
  code: string;
  action: RecoveryAction;
  /** False when another recoverer (or the runner itself) got there first, or when the decision was refused. */
  applied: boolean;
  /** Why the API refused the decision (the worker had no authority over the scan), or null. */
  refused: string | null;
}

const taskData = (decision: RecoveryDecision): Prisma.InputJsonValue =>
  decision.task
    ? {
        task: {
          taskId: decision.task.taskId,
          state: decision.task.state,
          stopCode: decision.task.stopCode ?? null,
          stoppedReason: decision.task.stoppedReason ?? null,
          exitCode: decision.task.exitCode ?? null,
          signal: decision.task.signal ?? null,
        },
        ...(decision.action === "STOP_AND_FAIL" ? { taskStopped: true } : {}),
      }
    : {};

/** Applies decisions, each a compare-and-set on the status it expects. */
export async function applyRecoveryDecisions(deps: RecoveryDeps, decisions: RecoveryDecision[]): Promise<RecoveryOutcome[]> {
  const applied = new Set<string>();
  const groups: [RecoveryAction[], "RUNNING" | "STARTING", "FAILED" | "QUEUED"][] = [
    [["FAIL", "STOP_AND_FAIL"], "RUNNING", "FAILED"],
    [["FAIL"], "STARTING", "FAILED"],
    [["REQUEUE"], "STARTING", "QUEUED"],
  ];
  for (const [actions, expected, to] of groups) {
    const group = decisions.filter((decision) => actions.includes(decision.action) && decision.expectedStatus === expected);
    for (let index = 0; index < group.length; index += APPLY_BATCH) {
      const batch = group.slice(index, index + APPLY_BATCH);
      const failing = to === "FAILED";
      const results = await transitionScansInBulk(
        deps,
        expected,
        to,
        batch.map((decision) => ({
          scanId: decision.scanId,
          errorCode: failing ? decision.code : null,
          errorMessage: failing ? decision.reason : null,
          event: { kind: failing ? "ERROR" : "STATE", code: decision.code, message: decision.reason, data: taskData(decision) },
        })),
      );
      for (const result of results) applied.add(result.scanId);
    }
  }
  const warnings = decisions.filter((decision) => decision.action === "WARN");
  for (let index = 0; index < warnings.length; index += APPLY_BATCH) {
    // One warning per long-running scan whose task lives: scan-state's compare-and-set on staleWarnedAt.
    const warned = await recordScanWarnings(
      deps,
      warnings.slice(index, index + APPLY_BATCH).map((decision) => ({ scanId: decision.scanId, code: decision.code, message: decision.reason, data: taskData(decision) })),
    );
    for (const scanId of warned) applied.add(scanId);
  }
  return decisions.map((decision) => ({
    scanId: decision.scanId,
    code: decision.code,
    action: decision.action,
    applied: applied.has(decision.scanId),
    refused: null,
  }));
}

export interface RecoveryDecisionInput {
  scanId: string;
  action: RecoveryAction;
  expectedStatus: RecoveryDecision["expectedStatus"];
  code: RecoveryDecision["code"];
  reason: string;
  task?: RecoveryDecision["task"] | null;
}

/**
 * Mutation.recoverScans: a worker's decisions, each checked against the API's
 * own rows first (recoveryAuthority: the worker holds the scan, its holder is
 * stale or gone, or it is overdue), then applied with the same compare-and-set.
 * A refused decision changes nothing, is answered `refused` with the reason,
 * and is recorded in the audit log.
 */
export async function recoverScansForWorker(
  deps: RecoveryDeps,
  viewer: Viewer,
  { workerId, decisions: inputs }: { workerId: string; decisions: RecoveryDecisionInput[] },
) {
  authorizeWorkerAccess(viewer.principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  if (inputs.length > MAX_RUNNING_CANDIDATES) throw badUserInput(`At most ${MAX_RUNNING_CANDIDATES} decisions per call`);
  const decisions: RecoveryDecision[] = inputs.map((input) => ({ ...input, reason: input.reason.slice(0, 2000), task: input.task ?? undefined }));
  const now = new Date();
  const policy = recoveryPolicy(deps.config, now);
  const ids = [...new Set(decisions.map((decision) => decision.scanId))];
  const [targets, ofGoneWorkers] = await Promise.all([
    deps.prisma.scan.findMany({ where: { id: { in: ids } }, select: { id: true, status: true, workerId: true, startedAt: true, lastHeartbeatAt: true } }),
    deps.prisma.scan.findMany({ where: { id: { in: ids }, worker: goneWorker(deps.config, now) }, select: { id: true } }),
  ]);
  const gone = new Set(ofGoneWorkers.map((scan) => scan.id));
  const byId = new Map(targets.map((scan) => [scan.id, { ...scan, workerLive: scan.workerId !== null && !gone.has(scan.id) }]));
  const refusals = new Map<RecoveryDecision, string>();
  for (const decision of decisions) {
    const target = byId.get(decision.scanId);
    // A scan that no longer exists is simply not applied.
    if (target && !recoveryAuthority(target, workerId, policy)) {
      refusals.set(decision, `scan ${decision.scanId} is held by live worker ${target.workerId} and is not past the heartbeat TTL, the timeout or the stale threshold`);
    }
  }
  const outcomes = await applyRecoveryDecisions(
    deps,
    decisions.filter((decision) => !refusals.has(decision)),
  );
  if (refusals.size > 0) {
    const refused = [...refusals.keys()];
    await recordAudit(deps.prisma, {
      actor: viewer.principal.sub,
      action: AUDIT_RECOVERY_REFUSED,
      target: `Worker:${workerId}`,
      details: {
        workerId,
        refused: refused.length,
        decisions: refused.slice(0, AUDITED_REFUSALS).map((decision) => ({ scanId: decision.scanId, action: decision.action, code: decision.code })),
      },
    });
  }
  const appliedById = new Map(outcomes.map((outcome) => [outcome.scanId, outcome]));
  return decisions.map(
    (decision): RecoveryOutcome =>
      refusals.has(decision)
        ? { scanId: decision.scanId, code: decision.code, action: decision.action, applied: false, refused: refusals.get(decision)! }
        : appliedById.get(decision.scanId)!,
  );
}

export interface RecoverySweep {
  dryRun: boolean;
  decisions: RecoveryDecision[];
  outcomes: RecoveryOutcome[];
  candidates: { running: number; orphaned: number };
}

/**
 * The whole sweep where no worker runs it: `vega maintenance recover-stale` and
 * Mutation.recoverStaleScans. The launcher is the configured one (ECS, or local
 * processes on this machine), opened for the sweep; it stops the tasks of hung
 * and timed-out scans.
 */
export async function recoverStaleScans(
  deps: RecoveryDeps & Pick<Deps, "log" | "openLauncher">,
  options: { dryRun: boolean; actor?: string },
): Promise<RecoverySweep> {
  const launcher = deps.openLauncher(deps.log);
  try {
    return await sweepWithLauncher(deps, launcher, options);
  } finally {
    await launcher.close();
  }
}

async function sweepWithLauncher(
  deps: RecoveryDeps & { log: StopLogger },
  launcher: Pick<Launcher, "kind" | "describe" | "stop">,
  options: { dryRun: boolean; actor?: string },
): Promise<RecoverySweep> {
  const now = new Date();
  const candidates = await listRecoveryCandidates(deps, { everything: true }, now);
  // As in a worker's step: a task this launcher cannot tell about is not judged gone.
  const running = candidates.running.filter((scan) => scan.taskId === null || launcherCanDescribe(launcher.kind, scan.taskId));
  const taskIds = running.flatMap((scan) => (scan.taskId === null ? [] : [scan.taskId]));
  const tasks = taskIds.length > 0 ? await launcher.describe(taskIds) : new Map();
  const decisions = planRecovery(running, tasks, candidates.orphaned, recoveryPolicy(deps.config, now));
  const outcomes = options.dryRun
    ? []
    : await applyRecoveryDecisions(deps, await stopTasksBeforeFailing(decisions, (taskId, reason, stop) => launcher.stop(taskId, reason, stop), deps.log));
  if (options.actor) {
    await recordAudit(deps.prisma, {
      actor: options.actor,
      action: "scan.recoverStale",
      target: null,
      details: { dryRun: options.dryRun, decisions: decisions.length, applied: outcomes.filter((outcome) => outcome.applied).length },
    });
  }
  return { dryRun: options.dryRun, decisions, outcomes, candidates: { running: candidates.running.length, orphaned: candidates.orphaned.length } };
}
