import type { RecoveryDecision } from "../../shared/recovery-rules.ts";
import { recoveryCandidatesForWorker, recoverScansForWorker, recoverStaleScans, type RecoveryOutcome, type RecoverySweep } from "../services/recovery.ts";
import { builder } from "./builder.ts";

const RecoveryAction = builder.enumType("RecoveryAction", {
  values: {
    FAIL: { description: "The scan becomes FAILED." },
    STOP_AND_FAIL: { description: "The recoverer stops the scan's task first (RUNNER_HUNG, SCAN_TIMEOUT), then the scan becomes FAILED." },
    REQUEUE: { description: "An orphaned claim goes back to the queue." },
    WARN: { description: "One warning event; the scan keeps running." },
  } as const,
});

const RecoveryExpectedStatus = builder.enumType("RecoveryExpectedStatus", { values: ["RUNNING", "STARTING"] as const });

const RecoveryCode = builder.enumType("RecoveryCode", {
  values: ["RUNNER_EXITED", "RUNNER_HUNG", "SCAN_TIMEOUT", "STALE_SCAN", "STALE_SCAN_TASK_ALIVE", "ATTEMPTS_EXHAUSTED", "ORPHANED_CLAIM"] as const,
});

const TaskState = builder.enumType("TaskState", { values: ["PENDING", "RUNNING", "STOPPED", "MISSING"] as const });

const RunningCandidateRef = builder
  .objectRef<{ id: string; taskId: string | null; startedAt: Date; lastHeartbeatAt: Date | null; warned: boolean }>("RunningScanCandidate")
  .implement({
    fields: (t) => ({
      id: t.exposeID("id"),
      taskId: t.exposeString("taskId", { nullable: true, description: "Null when the runner reported before its worker recorded the task." }),
      startedAt: t.field({ type: "DateTime", resolve: (scan) => scan.startedAt }),
      lastHeartbeatAt: t.field({
        type: "DateTime",
        nullable: true,
        description: "The runner's last progress report; null for a runner that sent none.",
        resolve: (scan) => scan.lastHeartbeatAt,
      }),
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

const RecoveryCandidatesRef = builder.objectRef<Awaited<ReturnType<typeof recoveryCandidatesForWorker>>>("RecoveryCandidates").implement({
  description:
    "What a worker's recovery step looks at: the running scans it holds and, while it holds the recovery lease, those of " +
    "other workers that need recovery (oldest first, up to 10,000) and orphaned claims; with the policy to decide by.",
  fields: (t) => ({
    now: t.field({ type: "DateTime", description: "The API's clock, against which ages are measured.", resolve: (candidates) => candidates.policy.now }),
    sweepsOthers: t.exposeBoolean("sweepsOthers", { description: "Whether this worker holds the recovery lease (sweeps other workers' scans)." }),
    staleAfterSeconds: t.int({ resolve: (candidates) => candidates.policy.staleAfterSeconds }),
    heartbeatTtlSeconds: t.int({ resolve: (candidates) => candidates.policy.heartbeatTtlSeconds }),
    timeoutSeconds: t.int({ resolve: (candidates) => candidates.policy.timeoutSeconds }),
    maxAttempts: t.int({ resolve: (candidates) => candidates.policy.maxAttempts }),
    running: t.field({ type: [RunningCandidateRef], resolve: (candidates) => candidates.running }),
    orphaned: t.field({ type: [OrphanedCandidateRef], resolve: (candidates) => candidates.orphaned }),
  }),
});

const RecoveryOutcomeRef = builder.objectRef<RecoveryOutcome>("RecoveryOutcome").implement({
  fields: (t) => ({
    scanId: t.exposeID("scanId"),
    code: t.exposeString("code"),
    action: t.field({ type: RecoveryAction, resolve: (outcome) => outcome.action }),
    applied: t.exposeBoolean("applied", { description: "False when another recoverer, or the runner, got there first, or when refused." }),
    refused: t.exposeString("refused", {
      nullable: true,
      description: "Why the API refused the decision: the scan is held by a live worker and is not overdue. Refusals are audited.",
    }),
  }),
});

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

builder.queryField("recoveryCandidates", (t) =>
  t.field({
    type: RecoveryCandidatesRef,
    description: "Takes or renews the recovery lease for this worker, and lists what its recovery step should look at.",
    authScopes: { worker: true },
    args: { workerId: t.arg.id({ required: true }) },
    resolve: (_root, { workerId }, ctx) => recoveryCandidatesForWorker(ctx.deps, ctx.viewer!, String(workerId)),
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

builder.mutationField("recoverScans", (t) =>
  t.field({
    type: [RecoveryOutcomeRef],
    description:
      "Applies a worker's recovery decisions, each a compare-and-set on the status it expects, once the API has checked the " +
      "worker may: it holds the scan, the scan's worker is stale or gone, or the scan is past the heartbeat TTL, the timeout " +
      "or the stale threshold.",
    authScopes: { worker: true },
    args: { workerId: t.arg.id({ required: true }), decisions: t.arg({ type: [RecoveryDecisionInput], required: true }) },
    resolve: (_root, { workerId, decisions }, ctx) =>
      recoverScansForWorker(ctx.deps, ctx.viewer!, {
        workerId: String(workerId),
        decisions: decisions.map((decision) => ({
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
      }),
  }),
);

builder.mutationField("recoverStaleScans", (t) =>
  t.field({
    type: RecoverySweepRef,
    description:
      "Runs stale-scan recovery now (task watch, heartbeat TTL, timeout, stale sweep, orphaned claims), for when no worker is up; " +
      "the tasks of hung and timed-out scans are stopped through the configured launcher. " +
      "With dryRun, reports what it would do and changes nothing.",
    authScopes: { operator: true },
    args: { dryRun: t.arg.boolean({ required: false, defaultValue: false }) },
    resolve: (_root, { dryRun }, ctx) => recoverStaleScans(ctx.deps, { dryRun: dryRun ?? false, actor: ctx.viewer!.principal.sub }),
  }),
);
