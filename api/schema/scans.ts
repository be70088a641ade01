import type { Artifact, Finding, Scan, ScanEvent } from "../generated/prisma/client.ts";
import type { ScanProgressPayload, ScanProgressSnapshot } from "../pubsub.ts";
import type { FindingCounts } from "../services/loaders.ts";
import {
  cancelScan,
  currentVisibleScan,
  exportSarif,
  getVisibleScan,
  listScanEvents,
  listScanFindings,
  listScans,
  resolveScanStateChange,
  subscribeToScanProgress,
  subscribeToQueuedScans,
  subscribeToScanStateChanges,
} from "../services/scans.ts";
import { submitScan } from "../services/submissions.ts";
import { SCAN_STATUSES } from "../../shared/scan-status.ts";
import { SEVERITIES } from "../../shared/severity.ts";
import { builder } from "./builder.ts";
import { UserRef, WorkspaceRef } from "./viewer.ts";

export const ScanStatusEnum = builder.enumType("ScanStatus", { values: SCAN_STATUSES });

export const SeverityEnum = builder.enumType("Severity", { values: SEVERITIES });

export const ScanPhaseEnum = builder.enumType("ScanPhase", {
  values: {
    DOWNLOADING: { description: "Fetching the source archive (bytes of the archive)." },
    EXTRACTING: { description: "Extracting it (entries and uncompressed bytes written)." },
    ANALYZING: { description: "Running the analyzers (files gone through of those listed, bytes read)." },
    REPORTING: { description: "Sending the last findings and completing the scan." },
  } as const,
});

export const ScanProgressRef = builder.objectRef<ScanProgressSnapshot>("ScanProgress").implement({
  description: "A runner's progress report (its heartbeat, every VEGA_RUNNER_HEARTBEAT_SECONDS). Totals are null until the phase knows them.",
  fields: (t) => ({
    phase: t.field({ type: ScanPhaseEnum, resolve: (progress) => progress.phase }),
    filesDone: t.exposeInt("filesDone", { nullable: true }),
    filesTotal: t.exposeInt("filesTotal", { nullable: true }),
    bytesDone: t.field({ type: "BigInt", nullable: true, resolve: (progress) => progress.bytesDone }),
    bytesTotal: t.field({ type: "BigInt", nullable: true, resolve: (progress) => progress.bytesTotal }),
    findings: t.exposeInt("findings", { description: "Findings the runner had found when it reported." }),
    updatedAt: t.field({ type: "DateTime", resolve: (progress) => progress.updatedAt }),
  }),
});

export const ScanEventRef = builder.objectRef<ScanEvent>("ScanEvent").implement({
  description: "One entry of a scan's append-only log, ordered by seq.",
  fields: (t) => ({
    id: t.exposeID("id"),
    seq: t.exposeInt("seq"),
    kind: t.exposeString("kind", { description: "STATE, PROGRESS, LOG, WARNING or ERROR" }),
    code: t.exposeString("code", { nullable: true }),
    message: t.exposeString("message"),
    data: t.field({ type: "JSON", nullable: true, resolve: (event) => event.data }),
    createdAt: t.field({ type: "DateTime", resolve: (event) => event.createdAt }),
  }),
});

export const FindingRef = builder.objectRef<Finding>("Finding").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    ruleId: t.exposeString("ruleId"),
    severity: t.field({ type: SeverityEnum, resolve: (finding) => finding.severity }),
    path: t.exposeString("path"),
    line: t.exposeInt("line"),
    column: t.exposeInt("column"),
    endLine: t.exposeInt("endLine", { nullable: true, description: "The line the secret ends on; null for findings of older runners." }),
    endColumn: t.exposeInt("endColumn", { nullable: true, description: "The column after the secret's last character, on endLine." }),
    message: t.exposeString("message"),
    snippet: t.exposeString("snippet", { nullable: true, description: "The line with the secret redacted." }),
    fingerprint: t.exposeString("fingerprint"),
    createdAt: t.field({ type: "DateTime", resolve: (finding) => finding.createdAt }),
  }),
});

const FindingCountsRef = builder.objectRef<FindingCounts>("FindingCounts").implement({
  fields: (t) => ({
    critical: t.exposeInt("critical"),
    high: t.exposeInt("high"),
    medium: t.exposeInt("medium"),
    low: t.exposeInt("low"),
    info: t.exposeInt("info"),
  }),
});

export const ArtifactRef = builder.objectRef<Artifact>("Artifact").implement({
  description: "A stored file: a scan's source archive. Download it at GET /v1/artifacts/:id.",
  fields: (t) => ({
    id: t.exposeID("id"),
    kind: t.exposeString("kind", { description: "SOURCE or REPORT" }),
    fileName: t.exposeString("fileName", { nullable: true }),
    sizeBytes: t.field({ type: "BigInt", resolve: (artifact) => artifact.sizeBytes }),
    sha256: t.exposeString("sha256"),
    entryCount: t.exposeInt("entryCount", { nullable: true }),
    uncompressedBytes: t.field({ type: "BigInt", nullable: true, resolve: (artifact) => artifact.uncompressedBytes }),
    createdAt: t.field({ type: "DateTime", resolve: (artifact) => artifact.createdAt }),
    deletedAt: t.field({
      type: "DateTime",
      nullable: true,
      description: "When retention removed the file; the scan, its events and findings stay.",
      resolve: (artifact) => artifact.deletedAt,
    }),
  }),
});

export const ScanRef = builder.objectRef<Scan>("Scan").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    status: t.field({ type: ScanStatusEnum, resolve: (scan) => scan.status }),
    workspace: t.field({ type: WorkspaceRef, resolve: async (scan, _args, ctx) => (await ctx.loaders.workspace.load(scan.workspaceId))! }),
    owner: t.field({ type: UserRef, resolve: async (scan, _args, ctx) => (await ctx.loaders.user.load(scan.ownerId))! }),
    label: t.exposeString("label", { nullable: true }),
    source: t.field({ type: ArtifactRef, resolve: async (scan, _args, ctx) => (await ctx.loaders.artifact.load(scan.sourceArtifactId))! }),
    attempts: t.exposeInt("attempts", { description: "How many times a worker has claimed the scan." }),
    taskId: t.exposeString("taskId", { nullable: true, description: "ECS task ARN, or local:<pid>." }),
    createdAt: t.field({ type: "DateTime", resolve: (scan) => scan.createdAt }),
    queuedAt: t.field({ type: "DateTime", resolve: (scan) => scan.queuedAt }),
    startedAt: t.field({ type: "DateTime", nullable: true, resolve: (scan) => scan.startedAt }),
    finishedAt: t.field({ type: "DateTime", nullable: true, resolve: (scan) => scan.finishedAt }),
    errorCode: t.exposeString("errorCode", { nullable: true }),
    errorMessage: t.exposeString("errorMessage", { nullable: true }),
    lastHeartbeatAt: t.field({
      type: "DateTime",
      nullable: true,
      description: "When the runner last reported its progress; a running scan silent for VEGA_SCAN_HEARTBEAT_TTL_SECONDS is stopped.",
      resolve: (scan) => scan.lastHeartbeatAt,
    }),
    progress: t.field({
      type: ScanProgressRef,
      nullable: true,
      description: "The runner's last progress report; null until it sends one.",
      resolve: (scan) => scan.progress as ScanProgressSnapshot | null,
    }),
    events: t.connection({
      type: ScanEventRef,
      description: "The scan's log in order (`first` or `last` at most 100).",
      resolve: (scan, args, ctx) => listScanEvents(ctx.loaders, { scanId: scan.id, ...args }),
    }),
    findings: t.connection({
      type: FindingRef,
      args: {
        severity: t.arg({ type: [SeverityEnum], required: false }),
        ruleId: t.arg.string({ required: false }),
      },
      description: "Most severe first, then by path and line (`first` or `last` at most 100).",
      resolve: (scan, args, ctx) => listScanFindings(ctx.loaders, { scanId: scan.id, ...args }),
    }),
    findingCounts: t.field({ type: FindingCountsRef, resolve: (scan, _args, ctx) => ctx.loaders.findingCounts.load(scan.id) }),
    sarif: t.field({
      type: "JSON",
      description:
        "The findings as a SARIF 2.1.0 log that GitHub code scanning accepts (also at GET /v1/scans/:id/sarif). " +
        "At most 25,000 results. CONFLICT until the scan has SUCCEEDED; a FAILED scan's log holds its partial results " +
        "with `invocations[0].executionSuccessful: false` and the error.",
      resolve: (scan, _args, ctx) => exportSarif(ctx.deps, ctx.viewer!, scan.id, ctx.loaders),
    }),
  }),
});

interface ScanStateChangeShape {
  scan: Scan;
  from: string | null;
  to: string;
  at: string;
  event: ScanEvent | null;
}

const ScanStateChangeRef = builder.objectRef<ScanStateChangeShape>("ScanStateChange").implement({
  fields: (t) => ({
    scan: t.field({ type: ScanRef, resolve: (change) => change.scan }),
    from: t.field({ type: ScanStatusEnum, nullable: true, resolve: (change) => change.from as Scan["status"] | null }),
    to: t.field({ type: ScanStatusEnum, resolve: (change) => change.to as Scan["status"] }),
    at: t.field({ type: "DateTime", resolve: (change) => change.at }),
    event: t.field({ type: ScanEventRef, nullable: true, resolve: (change) => change.event }),
  }),
});

const ScanProgressEventRef = builder.objectRef<ScanProgressPayload>("ScanProgressEvent").implement({
  fields: (t) => ({
    scanId: t.exposeID("scanId"),
    progress: t.field({ type: ScanProgressRef, resolve: (event) => event.progress }),
    scan: t.field({
      type: ScanRef,
      description: "The scan as it is now (read when asked for; the progress alone needs no read).",
      resolve: (event, _args, ctx) => currentVisibleScan(ctx.loaders, ctx.viewer, event.scanId),
    }),
  }),
});

const SubmitScanPayload = builder.objectRef<{ scan: Scan }>("SubmitScanPayload").implement({
  fields: (t) => ({ scan: t.field({ type: ScanRef, resolve: (payload) => payload.scan }) }),
});

builder.queryField("scan", (t) =>
  t.field({
    type: ScanRef,
    description: "A scan of a workspace the caller belongs to; any other id answers NOT_FOUND.",
    authScopes: { authenticated: true, runner: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => getVisibleScan(ctx.loaders, ctx.viewer, String(id)),
  }),
);

builder.queryField("scans", (t) =>
  t.connection({
    type: ScanRef,
    description: "The caller's scans, newest first (`first` or `last` at most 100).",
    authScopes: { authenticated: true },
    args: {
      status: t.arg({ type: [ScanStatusEnum], required: false }),
      workspaceId: t.arg.id({ required: false }),
    },
    resolve: (_root, args, ctx) =>
      listScans(
        ctx.deps,
        ctx.viewer!,
        {
          first: args.first,
          after: args.after,
          last: args.last,
          before: args.before,
          status: args.status,
          workspaceId: args.workspaceId ? String(args.workspaceId) : null,
        },
        ctx.loaders,
      ),
  }),
);

const SubmitScanInput = builder.inputType("SubmitScanInput", {
  fields: (t) => ({
    workspaceId: t.id({ required: false, description: "Defaults to the caller's personal workspace." }),
    label: t.string({ required: false }),
    source: t.field({ type: "File", required: true, description: "The source archive (zip)." }),
  }),
});

builder.mutationField("cancelScan", (t) =>
  t.field({
    type: ScanRef,
    description: "Cancels a queued, starting or running scan (its owner or an operator). A finished scan answers CONFLICT.",
    authScopes: { authenticated: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => cancelScan(ctx.deps, ctx.viewer!, String(id), ctx.loaders),
  }),
);

builder.mutationField("submitScan", (t) =>
  t.field({
    type: SubmitScanPayload,
    description:
      "Queues a scan of an uploaded source archive (GraphQL multipart request). Refused before any work when the " +
      "active-scan quota is reached (QUOTA_EXCEEDED), the file is too large (SOURCE_TOO_LARGE) or the archive fails " +
      "inspection (ARCHIVE_TOO_MANY_ENTRIES, ARCHIVE_TOO_LARGE, ARCHIVE_INVALID).",
    authScopes: { authenticated: true },
    args: { input: t.arg({ type: SubmitScanInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      submitScan(
        ctx.deps,
        ctx.viewer!,
        { workspaceId: input.workspaceId ? String(input.workspaceId) : null, label: input.label, source: input.source },
        ctx.uploads,
      ),
  }),
);

builder.subscriptionField("scanStateChanged", (t) =>
  t.field({
    type: ScanStateChangeRef,
    description:
      "Every status change of one scan, of one workspace's scans, or (neither given) of every scan the caller may see. " +
      "Members of the scan's workspace, or operators for any scan.",
    authScopes: { authenticated: true },
    args: { scanId: t.arg.id({ required: false }), workspaceId: t.arg.id({ required: false }) },
    subscribe: (_root, args, ctx) =>
      subscribeToScanStateChanges(
        ctx.deps,
        ctx.viewer!,
        {
          scanId: args.scanId ? String(args.scanId) : undefined,
          workspaceId: args.workspaceId ? String(args.workspaceId) : undefined,
        },
        ctx.loaders,
      ),
    resolve: (payload, _args, ctx) => resolveScanStateChange(ctx.deps, payload, ctx.loaders),
  }),
);

builder.subscriptionField("scanQueued", (t) =>
  t.field({
    type: "ID",
    description:
      "The id of each scan queued (submitted, retried or requeued), for workers: a worker claims at once instead of at its " +
      "next poll. A signal only: claims still go through claimScans. Worker tokens and operators.",
    authScopes: { worker: true, operator: true },
    subscribe: (_root, _args, ctx) => subscribeToQueuedScans(ctx.deps),
    resolve: (change) => change.scanId,
  }),
);

builder.subscriptionField("scanProgress", (t) =>
  t.field({
    type: ScanProgressEventRef,
    description:
      "Every progress report of one running scan's runner (every VEGA_RUNNER_HEARTBEAT_SECONDS). Members of the scan's " +
      "workspace, or operators for any scan; any other id answers NOT_FOUND.",
    authScopes: { authenticated: true },
    args: { scanId: t.arg.id({ required: true }) },
    subscribe: (_root, { scanId }, ctx) => subscribeToScanProgress(ctx.deps, ctx.viewer!, String(scanId), ctx.loaders),
    resolve: (payload) => payload,
  }),
);
