import { cancelScansInBulk, searchScans, summarizeScans, type OpsSummary, type ThroughputBucket } from "../services/ops-scans.ts";
import { retryScan } from "../services/scan-retry.ts";
import { builder } from "./builder.ts";
import { OpsRef } from "./ops.ts";
import { ScanRef, ScanStatusEnum } from "./scans.ts";

builder.objectField(ScanRef, "retryOf", (t) =>
  t.field({
    type: ScanRef,
    nullable: true,
    description: "The FAILED or CANCELLED scan this one retries (retryScan); null for a submitted scan.",
    resolve: async (scan, _args, ctx) => (scan.retryOfId ? ((await ctx.loaders.scan.load(scan.retryOfId)) ?? null) : null),
  }),
);

const OpsScanFilter = builder.inputType("OpsScanFilter", {
  description: "Every criterion given must hold; none: every scan.",
  fields: (t) => ({
    status: t.field({ type: [ScanStatusEnum], required: false }),
    userId: t.id({ required: false, description: "The owner." }),
    workspaceId: t.id({ required: false }),
    workerId: t.id({ required: false, description: "The worker that claimed it (last)." }),
    errorCode: t.string({ required: false }),
    createdAfter: t.field({ type: "DateTime", required: false, description: "Created at or after." }),
    createdBefore: t.field({ type: "DateTime", required: false, description: "Created before." }),
  }),
});

builder.objectField(OpsRef, "scans", (t) =>
  t.connection(
    {
      type: ScanRef,
      description: "Every scan matching the filter, newest first (`first` or `last` at most 100).",
      args: { filter: t.arg({ type: OpsScanFilter, required: false }) },
      resolve: (_ops, args, ctx) =>
        searchScans(ctx.deps, ctx.viewer!, {
          first: args.first,
          after: args.after,
          last: args.last,
          before: args.before,
          filter: args.filter
            ? {
                status: args.filter.status,
                userId: args.filter.userId ? String(args.filter.userId) : null,
                workspaceId: args.filter.workspaceId ? String(args.filter.workspaceId) : null,
                workerId: args.filter.workerId ? String(args.filter.workerId) : null,
                errorCode: args.filter.errorCode,
                createdAfter: args.filter.createdAfter,
                createdBefore: args.filter.createdBefore,
              }
            : null,
        }),
    },
    { name: "ScanConnection" },
    { name: "ScanEdge" },
  ),
);

const ScanStatusCountRef = builder.objectRef<OpsSummary["counts"][number]>("ScanStatusCount").implement({
  fields: (t) => ({
    status: t.field({ type: ScanStatusEnum, resolve: (count) => count.status }),
    count: t.exposeInt("count"),
  }),
});

const ThroughputBucketRef = builder.objectRef<ThroughputBucket>("ThroughputBucket").implement({
  description: "Five minutes of finished scans.",
  fields: (t) => ({
    bucketStart: t.field({ type: "DateTime", resolve: (bucket) => bucket.bucketStart }),
    finished: t.exposeInt("finished", { description: "Scans that reached SUCCEEDED, FAILED or CANCELLED in these five minutes." }),
    failed: t.exposeInt("failed", { description: "Of those, the FAILED ones." }),
  }),
});

const OpsSummaryRef = builder.objectRef<OpsSummary>("OpsSummary").implement({
  description: "The queue at a glance: the data of a status board and a throughput chart.",
  fields: (t) => ({
    counts: t.field({ type: [ScanStatusCountRef], description: "Scans by status, every status listed (zeros included).", resolve: (summary) => summary.counts }),
    oldestQueuedAgeSeconds: t.float({
      nullable: true,
      description: "How long the oldest QUEUED scan has waited; null when none is queued.",
      resolve: (summary) => summary.oldestQueuedAgeSeconds,
    }),
    throughput: t.field({
      type: [ThroughputBucketRef],
      description: "288 five-minute buckets covering the last 24 hours, oldest first, the last holding now (zeros included).",
      resolve: (summary) => summary.throughput,
    }),
  }),
});

builder.objectField(OpsRef, "summary", (t) =>
  t.field({ type: OpsSummaryRef, resolve: (_ops, _args, ctx) => summarizeScans(ctx.deps, ctx.viewer!) }),
);

builder.mutationField("retryScan", (t) =>
  t.field({
    type: ScanRef,
    description:
      "Queues a new scan of a FAILED or CANCELLED scan's source archive, for the same owner and workspace, counted against " +
      "the owner's quota (QUOTA_EXCEEDED as for submitScan); `retryOf` links it to the original. Its owner or an operator " +
      "(audited). CONFLICT when the scan is not FAILED or CANCELLED, or retention removed its archive.",
    authScopes: { authenticated: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => retryScan(ctx.deps, ctx.viewer!, { id: String(id) }),
  }),
);

const ScanCancelFilter = builder.inputType("ScanCancelFilter", {
  description: "Every criterion given must hold; at least one is required.",
  fields: (t) => ({
    userId: t.id({ required: false, description: "The owner." }),
    workspaceId: t.id({ required: false }),
    status: t.field({ type: [ScanStatusEnum], required: false, description: "Active statuses only (QUEUED, STARTING, RUNNING); default: all three." }),
    olderThanSeconds: t.int({ required: false, description: "Created more than this many seconds ago." }),
  }),
});

const CancelScansResultRef = builder.objectRef<{ cancelled: number; scanIds: string[] }>("CancelScansResult").implement({
  fields: (t) => ({
    cancelled: t.exposeInt("cancelled", { description: "Scans cancelled by this call (at most 1000: call again while it answers 1000)." }),
    scanIds: t.exposeIDList("scanIds"),
  }),
});

builder.mutationField("cancelScans", (t) =>
  t.field({
    type: CancelScansResultRef,
    description:
      "Cancels the active scans matching the filter, oldest first, at most 1000 per call (operators; audited). Each is a " +
      "compare-and-set with its CANCELLED event; workers stop the tasks of starting and running ones; the owners' quota is free at once.",
    authScopes: { operator: true },
    args: { filter: t.arg({ type: ScanCancelFilter, required: true }) },
    resolve: (_root, { filter }, ctx) =>
      cancelScansInBulk(ctx.deps, ctx.viewer!, {
        userId: filter.userId ? String(filter.userId) : null,
        workspaceId: filter.workspaceId ? String(filter.workspaceId) : null,
        status: filter.status,
        olderThanSeconds: filter.olderThanSeconds,
      }),
  }),
);
