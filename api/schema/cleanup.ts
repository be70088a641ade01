import type { CleanupRun } from "../generated/prisma/client.ts";
import { triggerCleanup } from "../services/cleanup-runs.ts";
import {
  allCleanupJobs,
  cleanupJobEnumValue,
  countsOfRun,
  findCleanupRun,
  getCleanupRun,
  lastFinishedCleanup,
  listCleanupRuns,
  runningCleanup,
  type CleanupCounts,
} from "../services/cleanup.ts";
import { builder } from "./builder.ts";
import { OpsRef } from "./ops.ts";

const CleanupTriggerEnum = builder.enumType("CleanupTrigger", {
  values: {
    SCHEDULE: { description: "The API's schedule (VEGA_CLEANUP_INTERVAL_SECONDS)." },
    OPERATOR: { description: "An operator's triggerCleanup (or POST /v1/ops/cleanup); triggeredBy names them." },
    CLI: { description: "`vega maintenance cleanup` or `prune-artifacts`." },
  } as const,
});

const CleanupJobEnum = builder.enumType("CleanupJob", {
  description: "One job of a cleanup run (the fields of CleanupCounts).",
  values: Object.fromEntries(allCleanupJobs.map((job) => [cleanupJobEnumValue(job), { value: job }])) as {
    [name: string]: { value: (typeof allCleanupJobs)[number] };
  },
});

const CleanupRunStatusEnum = builder.enumType("CleanupRunStatus", {
  values: ["RUNNING", "SUCCEEDED", "FAILED"] as const,
});

const CleanupCountsRef = builder.objectRef<CleanupCounts>("CleanupCounts").implement({
  description:
    "What each job removed (in a dry run: would remove). Null for a job the run did not execute " +
    "(prune-artifacts runs only `artifacts`) or has not reached yet.",
  fields: (t) => ({
    artifacts: t.int({
      nullable: true,
      description: "Artifacts of scans finished more than VEGA_ARTIFACT_RETENTION_SECONDS ago: file deleted, row marked deleted.",
      resolve: (counts) => counts.artifacts ?? null,
    }),
    orphanFiles: t.int({
      nullable: true,
      description: "Files under sources/ and reports/ that no live Artifact row names (older than an hour).",
      resolve: (counts) => counts.orphanFiles ?? null,
    }),
    uploadTemps: t.int({
      nullable: true,
      description: "Abandoned upload temporaries under tmp/ (older than an hour).",
      resolve: (counts) => counts.uploadTemps ?? null,
    }),
    sessions: t.int({
      nullable: true,
      description: "Sessions expired or closed more than VEGA_SESSION_RETENTION_SECONDS ago.",
      resolve: (counts) => counts.sessions ?? null,
    }),
    workers: t.int({
      nullable: true,
      description: "Workers stale, or deregistered, for more than VEGA_WORKER_PRUNE_SECONDS (and holding no STARTING scan).",
      resolve: (counts) => counts.workers ?? null,
    }),
  }),
});

export const CleanupRunRef = builder.objectRef<CleanupRun>("CleanupRun").implement({
  description: "One cleanup run. A dry run removes nothing and reports what a real run would remove.",
  fields: (t) => ({
    id: t.exposeID("id"),
    trigger: t.field({ type: CleanupTriggerEnum, resolve: (run) => run.trigger }),
    triggeredBy: t.exposeString("triggeredBy", { nullable: true, description: "The operator's id, or the CLI's user@host." }),
    dryRun: t.exposeBoolean("dryRun"),
    status: t.field({ type: CleanupRunStatusEnum, resolve: (run) => run.status }),
    startedAt: t.field({ type: "DateTime", resolve: (run) => run.startedAt }),
    finishedAt: t.field({ type: "DateTime", nullable: true, resolve: (run) => run.finishedAt }),
    counts: t.field({ type: CleanupCountsRef, resolve: countsOfRun }),
    bytesFreed: t.field({
      type: "BigInt",
      description: "Bytes of the files deleted (in a dry run: that a real run would delete); updated after each job.",
      resolve: (run) => run.bytesFreed,
    }),
    error: t.exposeString("error", { nullable: true, description: "Why the run failed: each failing job with its reason." }),
  }),
});

const CleanupStatusRef = builder.objectRef<Record<string, never>>("CleanupStatus").implement({
  description: "Cleanup of expired artifacts, orphaned files, upload temporaries, ended sessions and gone workers.",
  fields: (t) => ({
    running: t.field({
      type: CleanupRunRef,
      nullable: true,
      description: "The run in progress (one at a time across replicas and CLIs), if any.",
      resolve: (_status, _args, ctx) => runningCleanup(ctx.deps),
    }),
    lastRun: t.field({
      type: CleanupRunRef,
      nullable: true,
      description: "The newest run that finished (SUCCEEDED or FAILED).",
      resolve: (_status, _args, ctx) => lastFinishedCleanup(ctx.deps),
    }),
    run: t.field({
      type: CleanupRunRef,
      nullable: true,
      description: "One run by id (null if there is none).",
      args: { id: t.arg.id({ required: true }) },
      resolve: (_status, args, ctx) => findCleanupRun(ctx.deps, String(args.id)),
    }),
    runs: t.connection(
      {
        type: CleanupRunRef,
        description: "Every run, newest first (`first` or `last` at most 100).",
        resolve: (_status, args, ctx) => listCleanupRuns(ctx.deps, args),
      },
      { name: "CleanupRunConnection" },
      { name: "CleanupRunEdge" },
    ),
    nextScheduledAt: t.field({
      type: "DateTime",
      nullable: true,
      description: "When the next scheduled run starts (to within a minute); null when VEGA_CLEANUP_INTERVAL_SECONDS is 0.",
      resolve: (_status, _args, ctx) => ctx.deps.cleanupScheduler.nextScheduledAt(),
    }),
    intervalSeconds: t.int({
      description: "VEGA_CLEANUP_INTERVAL_SECONDS: 0 when the API does not schedule cleanups.",
      resolve: (_status, _args, ctx) => ctx.deps.config.cleanupIntervalSeconds,
    }),
  }),
});

builder.objectField(OpsRef, "cleanup", (t) => t.field({ type: CleanupStatusRef, resolve: () => ({}) }));

builder.mutationField("triggerCleanup", (t) =>
  t.field({
    type: CleanupRunRef,
    description:
      "Starts a cleanup run and answers at once with it (RUNNING); it finishes in the background (see " +
      "cleanupRunUpdated). While a run is in progress, answers that run instead of starting another " +
      "(with onlyIfIdle: CONFLICT, extensions.cleanupRunId naming it). Audited.",
    authScopes: { operator: true },
    args: {
      dryRun: t.arg.boolean({ required: false, defaultValue: false }),
      jobs: t.arg({ type: [CleanupJobEnum], required: false, description: "The jobs to run (default: every job)." }),
      onlyIfIdle: t.arg.boolean({ required: false, defaultValue: false, description: "Refuse, rather than answer the run in progress." }),
    },
    resolve: (_root, args, ctx) =>
      triggerCleanup(ctx.deps, ctx.viewer!, { dryRun: args.dryRun ?? false, jobs: args.jobs ?? undefined, onlyIfIdle: args.onlyIfIdle ?? false }),
  }),
);

builder.subscriptionField("cleanupRunUpdated", (t) =>
  t.field({
    type: CleanupRunRef,
    description: "A cleanup run started or finished (on any replica, with VEGA_REDIS_URL). Operators only.",
    authScopes: { operator: true },
    subscribe: (_root, _args, ctx) => ctx.deps.pubsub.subscribe("cleanupRunUpdated"),
    resolve: (payload, _args, ctx) => getCleanupRun(ctx.deps, payload.cleanupRunId),
  }),
);
