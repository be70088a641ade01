/**
 * Applying stale-scan recovery (the decisions of src/hardening/recovery-rules.ts).
 * Workers send their decisions through Mutation.recoverScans; the maintenance
 * task and Mutation.recoverStaleScans run the whole sweep here, asking the
 * configured launcher about tasks themselves.
 */
import type { Principal } from "../auth.ts";
import type { Deps } from "../context.ts";
import { badUserInput } from "../errors.ts";
import { planRecovery, type OrphanedScan, type RecoveryDecision, type RunningScan } from "../hardening/recovery-rules.ts";
import type { Prisma } from "../generated/prisma/client.ts";
import type { Launcher } from "../../worker/launchers/types.ts";
import { recordAudit } from "./audit.ts";
import { transitionScansInBulk } from "./scan-state.ts";
import { authorizeWorkerAccess } from "./workers.ts";

type RecoveryDeps = Pick<Deps, "prisma" | "pubsub" | "config" | "signingKey">;

/** Scans one sweep looks at, at most: 10,000 running scans fit in 100 DescribeTasks calls. */
export const MAX_RUNNING_CANDIDATES = 10_000;
export const MAX_ORPHANED_CANDIDATES = 1_000;
/** Decisions applied per statement batch. */
const APPLY_BATCH = 500;

export interface RecoveryCandidates {
  running: RunningScan[];
  orphaned: OrphanedScan[];
}

/** RUNNING scans with a task, oldest first, and STARTING scans whose worker is stale, deregistered or gone. */
export async function listRecoveryCandidates(deps: Pick<Deps, "prisma" | "config">, now = new Date()): Promise<RecoveryCandidates> {
  const running = await deps.prisma.scan.findMany({
    where: { status: "RUNNING", taskId: { not: null } },
    orderBy: [{ startedAt: "asc" }, { id: "asc" }],
    take: MAX_RUNNING_CANDIDATES,
    select: { id: true, taskId: true, startedAt: true, staleWarnedAt: true },
  });
  const staleBefore = new Date(now.getTime() - deps.config.workerHeartbeatTtlSeconds * 1000);
  const orphaned = await deps.prisma.scan.findMany({
    where: {
      status: "STARTING",
      OR: [{ workerId: null }, { worker: { deregisteredAt: { not: null } } }, { worker: { lastHeartbeatAt: { lt: staleBefore } } }],
    },
    orderBy: [{ claimedAt: "asc" }, { id: "asc" }],
    take: MAX_ORPHANED_CANDIDATES,
    select: { id: true, attempts: true, workerId: true },
  });
  return {
    running: running.map((scan) => ({ id: scan.id, taskId: scan.taskId!, startedAt: scan.startedAt ?? now, warned: scan.staleWarnedAt !== null })),
    orphaned,
  };
}

export interface RecoveryOutcome {
  scanId: string;
  code: string;
  action: RecoveryDecision["action"];
  /** False when another recoverer (or the runner itself) got there first. */
  applied: boolean;
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
      }
    : {};

/** Applies decisions, each a compare-and-set on the status it expects. */
export async function applyRecoveryDecisions(deps: RecoveryDeps, decisions: RecoveryDecision[]): Promise<RecoveryOutcome[]> {
  const applied = new Set<string>();
  const groups: [RecoveryDecision["action"], "RUNNING" | "STARTING"][] = [
    ["FAIL", "RUNNING"],
    ["FAIL", "STARTING"],
    ["REQUEUE", "STARTING"],
  ];
  for (const [action, expected] of groups) {
    const group = decisions.filter((decision) => decision.action === action && decision.expectedStatus === expected);
    for (let index = 0; index < group.length; index += APPLY_BATCH) {
      const batch = group.slice(index, index + APPLY_BATCH);
      const results = await transitionScansInBulk(
        deps,
        expected,
        action === "FAIL" ? "FAILED" : "QUEUED",
        batch.map((decision) => ({
          scanId: decision.scanId,
          errorCode: action === "FAIL" ? decision.code : null,
          errorMessage: action === "FAIL" ? decision.reason : null,
          event: { kind: action === "FAIL" ? "ERROR" : "STATE", code: decision.code, message: decision.reason, data: taskData(decision) },
        })),
      );
      for (const result of results) applied.add(result.scanId);
    }
  }
  const warnings = decisions.filter((decision) => decision.action === "WARN");
  for (let index = 0; index < warnings.length; index += APPLY_BATCH) {
    for (const scanId of await warnOnce(deps, warnings.slice(index, index + APPLY_BATCH))) applied.add(scanId);
  }
  return decisions.map((decision) => ({ scanId: decision.scanId, code: decision.code, action: decision.action, applied: applied.has(decision.scanId) }));
}

/** One warning event per long-running scan whose task lives: staleWarnedAt is the compare-and-set. */
async function warnOnce(deps: RecoveryDeps, decisions: RecoveryDecision[]): Promise<string[]> {
  const byId = new Map(decisions.map((decision) => [decision.scanId, decision]));
  const now = new Date();
  return deps.prisma.$transaction(async (tx) => {
    // Locked in id order first, as transitionScansInBulk does, so that concurrent recoverers cannot deadlock.
    const locked = await tx.$queryRaw<{ id: string }[]>`
      SELECT id FROM "Scan" WHERE id = ANY(${[...byId.keys()]}::text[]) AND status = 'RUNNING' AND "staleWarnedAt" IS NULL
      ORDER BY id FOR UPDATE`;
    if (locked.length === 0) return [];
    const marked = await tx.$queryRaw<{ id: string; lastEventSeq: number }[]>`
      UPDATE "Scan" SET "staleWarnedAt" = ${now}, "lastEventSeq" = "lastEventSeq" + 1, "updatedAt" = ${now}
      WHERE id = ANY(${locked.map((row) => row.id)}::text[]) AND status = 'RUNNING' AND "staleWarnedAt" IS NULL
      RETURNING id, "lastEventSeq"`;
    if (marked.length === 0) return [];
    await tx.scanEvent.createMany({
      data: marked.map((row) => {
        const decision = byId.get(row.id)!;
        return { scanId: row.id, seq: row.lastEventSeq, kind: "WARNING", code: decision.code, message: decision.reason, data: taskData(decision), createdAt: now };
      }),
    });
    return marked.map((row) => row.id);
  });
}

export interface RecoveryDecisionInput {
  scanId: string;
  action: RecoveryDecision["action"];
  expectedStatus: RecoveryDecision["expectedStatus"];
  code: RecoveryDecision["code"];
  reason: string;
  task?: RecoveryDecision["task"] | null;
}

/** Mutation.recoverScans: a worker's decisions, applied with the same compare-and-set. */
export async function recoverScansForWorker(deps: RecoveryDeps, principal: Principal, workerId: string, decisions: RecoveryDecisionInput[]) {
  authorizeWorkerAccess(principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  if (decisions.length > MAX_RUNNING_CANDIDATES) throw badUserInput(`At most ${MAX_RUNNING_CANDIDATES} decisions per call`);
  return applyRecoveryDecisions(
    deps,
    decisions.map((decision) => ({ ...decision, reason: decision.reason.slice(0, 2000), task: decision.task ?? undefined })),
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
 * Mutation.recoverStaleScans. `launcher` is the configured one (ECS, or local
 * processes on this machine).
 */
export async function recoverStaleScans(
  deps: RecoveryDeps,
  launcher: Pick<Launcher, "describe">,
  options: { dryRun: boolean; actor?: string },
): Promise<RecoverySweep> {
  const now = new Date();
  const candidates = await listRecoveryCandidates(deps, now);
  const tasks = await launcher.describe(candidates.running.map((scan) => scan.taskId));
  const decisions = planRecovery(candidates.running, tasks, candidates.orphaned, {
    now,
    staleAfterSeconds: deps.config.scanRunningStaleSeconds,
    maxAttempts: deps.config.scanMaxAttempts,
  });
  const outcomes = options.dryRun ? [] : await applyRecoveryDecisions(deps, decisions);
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
