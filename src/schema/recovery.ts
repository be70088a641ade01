import type { RecoveryDecision } from "../hardening/recovery-rules.ts";
import { recoverStaleScansNow } from "../services/recovery-runner.ts";
import { listRecoveryCandidates, recoverScansForWorker, type RecoveryOutcome, type RecoverySweep } from "../services/recovery.ts";
import { authorizeWorkerAccess } from "../services/workers.ts";
import { builder } from "./builder.ts";

const RecoveryAction = builder.enumType("RecoveryAction", { values: ["FAIL", "REQUEUE", "WARN"] as const });
const RecoveryExpectedStatus = builder.enumType("RecoveryExpectedStatus", { values: ["RUNNING", "STARTING"] as const });
const RecoveryCode = builder.enumType("RecoveryCode", {
  values: ["RUNNER_EXITED", "STALE_SCAN", "STALE_SCAN_TASK_ALIVE", "ATTEMPTS_EXHAUSTED", "ORPHANED_CLAIM"] as const,
});
const TaskState = builder.enumType("TaskState", { values: ["PENDING", "RUNNING", "STOPPED", "MISSING"] as const });

const RunningCandidateRef = builder.objectRef<{ id: string; taskId: string; startedAt: Date; warned: boolean }>("RunningScanCandidate").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    taskId: t.exposeString("taskId"),
    startedAt: t.field({ type: "DateTime", resolve: (scan) => scan.startedAt }),
    warned: t.exposeBoolean("warned", { description: "Whether the stale sweep already warned about it." }),
  }),
});

const OrphanedCandidateRef = builder.objectRef<{ id: string; attempts: number; workerId: string | null }>("OrphanedScanCandidate").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    attempts: t.exposeInt("attempts"),
    workerId: t.exposeID("workerId", { nullable: true }),
  }),
});

const RecoveryCandidatesRef = builder
  .objectRef<Awaited<ReturnType<typeof listRecoveryCandidates>> & { now: Date; staleAfterSeconds: number; maxAttempts: number }>("RecoveryCandidates")
  .implement({
    description: "What a worker's recovery step looks at: running scans with a task (oldest first, up to 10,000) and orphaned claims.",
    fields: (t) => ({
      now: t.field({ type: "DateTime", description: "The API's clock, against which ages are measured.", resolve: (candidates) => candidates.now }),
      staleAfterSeconds: t.exposeInt("staleAfterSeconds"),
      maxAttempts: t.exposeInt("maxAttempts"),
      running: t.field({ type: [RunningCandidateRef], resolve: (candidates) => candidates.running }),
      orphaned: t.field({ type: [OrphanedCandidateRef], resolve: (candidates) => candidates.orphaned }),
    }),
  });

builder.queryField("recoveryCandidates", (t) =>
  t.field({
    type: RecoveryCandidatesRef,
    authScopes: { worker: true },
    args: { workerId: t.arg.id({ required: true }) },
    resolve: async (_root, { workerId }, ctx) => {
      authorizeWorkerAccess(ctx.viewer!.principal, String(workerId), { mintsSessionTokens: Boolean(ctx.deps.signingKey) });
      const now = new Date();
      return {
        ...(await listRecoveryCandidates(ctx.deps, now)),
        now,
        staleAfterSeconds: ctx.deps.config.scanRunningStaleSeconds,
        maxAttempts: ctx.deps.config.scanMaxAttempts,
      };
    },
  }),
);

const TaskInput = builder.inputType("RecoveryTaskInput", {
  fields: (t) => ({
    taskId: t.string({ required: true }),
    state: t.field({ type: TaskState, required: true }),
    stopCode: t.string({ required: false }),
    stoppedReason: t.string({ required: false }),
    exitCode: t.int({ required: false }),
    signal: t.string({ required: false }),
  }),
});

const RecoveryDecisionInput = builder.inputType("RecoveryDecisionInput", {
  fields: (t) => ({
    scanId: t.id({ required: true }),
    action: t.field({ type: RecoveryAction, required: true }),
    expectedStatus: t.field({ type: RecoveryExpectedStatus, required: true }),
    code: t.field({ type: RecoveryCode, required: true }),
    reason: t.string({ required: true }),
    task: t.field({ type: TaskInput, required: false }),
  }),
});

const RecoveryOutcomeRef = builder.objectRef<RecoveryOutcome>("RecoveryOutcome").implement({
  fields: (t) => ({
    scanId: t.exposeID("scanId"),
    code: t.exposeString("code"),
    action: t.field({ type: RecoveryAction, resolve: (outcome) => outcome.action }),
    applied: t.exposeBoolean("applied", { description: "False when another recoverer, or the runner, got there first." }),
  }),
});

builder.mutationField("recoverScans", (t) =>
  t.field({
    type: [RecoveryOutcomeRef],
    description: "Applies a worker's recovery decisions, each a compare-and-set on the status it expects.",
    authScopes: { worker: true },
    args: { workerId: t.arg.id({ required: true }), decisions: t.arg({ type: [RecoveryDecisionInput], required: true }) },
    resolve: (_root, { workerId, decisions }, ctx) =>
      recoverScansForWorker(
        ctx.deps,
        ctx.viewer!.principal,
        String(workerId),
        decisions.map((decision) => ({
          ...decision,
          scanId: String(decision.scanId),
          task: decision.task
            ? {
                taskId: decision.task.taskId,
                state: decision.task.state,
                stopCode: decision.task.stopCode ?? undefined,
                stoppedReason: decision.task.stoppedReason ?? undefined,
                exitCode: decision.task.exitCode ?? undefined,
                signal: decision.task.signal ?? undefined,
              }
            : undefined,
        })),
      ),
  }),
);

const RecoveryDecisionRef = builder.objectRef<RecoveryDecision>("RecoveryDecision").implement({
  fields: (t) => ({
    scanId: t.exposeID("scanId"),
    action: t.field({ type: RecoveryAction, resolve: (decision) => decision.action }),
    code: t.field({ type: RecoveryCode, resolve: (decision) => decision.code }),
    reason: t.exposeString("reason"),
    taskState: t.field({ type: TaskState, nullable: true, resolve: (decision) => decision.task?.state ?? null }),
  }),
});

const RecoverySweepRef = builder.objectRef<RecoverySweep>("RecoverySweep").implement({
  fields: (t) => ({
    dryRun: t.exposeBoolean("dryRun"),
    runningScansChecked: t.int({ resolve: (sweep) => sweep.candidates.running }),
    orphanedClaimsFound: t.int({ resolve: (sweep) => sweep.candidates.orphaned }),
    decisions: t.field({ type: [RecoveryDecisionRef], resolve: (sweep) => sweep.decisions }),
    applied: t.int({ resolve: (sweep) => sweep.outcomes.filter((outcome) => outcome.applied).length }),
  }),
});

builder.mutationField("recoverStaleScans", (t) =>
  t.field({
    type: RecoverySweepRef,
    description:
      "Runs stale-scan recovery now (task watch, stale sweep, orphaned claims), for when no worker is up. " +
      "With dryRun, reports what it would do and changes nothing.",
    authScopes: { operator: true },
    args: { dryRun: t.arg.boolean({ required: false, defaultValue: false }) },
    resolve: (_root, { dryRun }, ctx) => recoverStaleScansNow(ctx.deps, { dryRun: dryRun ?? false, actor: ctx.viewer!.principal.sub }),
  }),
);
