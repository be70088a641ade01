import {
  addRunnerFindings,
  assignedScans,
  appendRunnerEvents,
  claimScans,
  completeScan,
  reportLaunchFailed,
  reportScanProgress,
  reportScanStarted,
  type ClaimedScan,
} from "../services/scan-execution.ts";
import { sourceDownloadForRunner, type SourceDownload } from "../services/source-download.ts";
import { builder } from "./builder.ts";
import { ScanEventRef, ScanPhaseEnum, ScanProgressRef, ScanRef, SeverityEnum } from "./scans.ts";

const ClaimedScanRef = builder.objectRef<ClaimedScan>("ClaimedScan").implement({
  description: "A scan a worker claimed: launch a runner for it with this token.",
  fields: (t) => ({
    scan: t.field({ type: ScanRef, resolve: (claim) => claim.scan }),
    attempt: t.exposeInt("attempt", { description: "The claim count; with the scan id it makes a launch idempotent." }),
    runnerToken: t.exposeString("runnerToken", {
      description: "A token with vega_scope=runner bound to this scan and this claim: refused once the scan ends or is claimed again.",
    }),
    sourceArtifactId: t.id({ resolve: (claim) => claim.scan.sourceArtifactId }),
  }),
});

const ReportedEventKind = builder.enumType("ReportedEventKind", { values: ["PROGRESS", "LOG", "WARNING", "ERROR"] as const });

const AddFindingsPayload = builder.objectRef<{ added: number; duplicates: number }>("AddFindingsPayload").implement({
  fields: (t) => ({
    added: t.exposeInt("added"),
    duplicates: t.exposeInt("duplicates", { description: "Findings whose fingerprint the scan already had." }),
  }),
});

const CompletionStatus = builder.enumType("CompletionStatus", { values: ["SUCCEEDED", "FAILED"] as const });

builder.queryField("assignedScans", (t) =>
  t.field({
    type: [ScanRef],
    description: "Of the given scans, those claimed by this worker, as they are now (a worker stops the tasks of cancelled ones).",
    authScopes: { worker: true },
    args: { workerId: t.arg.id({ required: true }), ids: t.arg.idList({ required: true }) },
    resolve: (_root, { workerId, ids }, ctx) => assignedScans(ctx.deps, ctx.viewer!, { workerId: String(workerId), scanIds: ids.map(String) }),
  }),
);

const ScanEventInput = builder.inputType("ScanEventInput", {
  fields: (t) => ({
    kind: t.field({ type: ReportedEventKind, required: true }),
    code: t.string({ required: false }),
    message: t.string({ required: true }),
    data: t.field({ type: "JSON", required: false }),
  }),
});

const FindingInput = builder.inputType("FindingInput", {
  fields: (t) => ({
    ruleId: t.string({ required: true }),
    severity: t.field({ type: SeverityEnum, required: true }),
    path: t.string({ required: true }),
    line: t.int({ required: true }),
    column: t.int({ required: false }),
    endLine: t.int({ required: false, description: "The line the secret ends on (a private key spans several)." }),
    endColumn: t.int({ required: false, description: "The column after the secret's last character, on endLine (SARIF's region.endColumn)." }),
    message: t.string({ required: true }),
    snippet: t.string({ required: false, description: "The line with the secret redacted; never the secret." }),
    fingerprint: t.string({ required: true, description: "Stable per secret and place: one secret is one finding." }),
  }),
});

const ScanProgressInput = builder.inputType("ScanProgressInput", {
  description: "Counts a phase knows; totals once known. Files and bytes of DOWNLOADING are the archive's, of EXTRACTING its entries, of ANALYZING the files read.",
  fields: (t) => ({
    phase: t.field({ type: ScanPhaseEnum, required: true }),
    filesDone: t.int({ required: false }),
    filesTotal: t.int({ required: false }),
    bytesDone: t.field({ type: "BigInt", required: false }),
    bytesTotal: t.field({ type: "BigInt", required: false }),
    findings: t.int({ required: true, description: "Findings found so far." }),
  }),
});

const CompleteScanInput = builder.inputType("CompleteScanInput", {
  fields: (t) => ({
    status: t.field({ type: CompletionStatus, required: true }),
    errorCode: t.string({ required: false }),
    errorMessage: t.string({ required: false }),
  }),
});

builder.mutationField("claimScans", (t) =>
  t.field({
    type: [ClaimedScanRef],
    description: "Moves up to `max` queued scans, oldest first, to STARTING for this worker (FOR UPDATE SKIP LOCKED).",
    authScopes: { worker: true },
    args: { workerId: t.arg.id({ required: true }), max: t.arg.int({ required: true }) },
    resolve: (_root, { workerId, max }, ctx) => claimScans(ctx.deps, ctx.viewer!, { workerId: String(workerId), max }),
  }),
);

builder.mutationField("reportScanStarted", (t) =>
  t.field({
    type: ScanRef,
    description:
      "STARTING → RUNNING with the launched task's id (or, when the runner reported first, records the task of the RUNNING " +
      "scan). CONFLICT if the scan was cancelled, requeued or claimed again (another `attempt`) meanwhile: stop the task.",
    authScopes: { worker: true },
    args: {
      scanId: t.arg.id({ required: true }),
      taskId: t.arg.string({ required: true }),
      attempt: t.arg.int({ required: false, description: "The claim this launch is for (ClaimedScan.attempt)." }),
    },
    resolve: (_root, { scanId, taskId, attempt }, ctx) => reportScanStarted(ctx.deps, ctx.viewer!, { scanId: String(scanId), taskId, attempt }),
  }),
);

builder.mutationField("reportLaunchFailed", (t) =>
  t.field({
    type: ScanRef,
    description: "STARTING → FAILED with a LAUNCH_FAILED event carrying the platform's reason.",
    authScopes: { worker: true },
    args: {
      scanId: t.arg.id({ required: true }),
      reason: t.arg.string({ required: true }),
      detail: t.arg.string({ required: false }),
    },
    resolve: (_root, { scanId, reason, detail }, ctx) => reportLaunchFailed(ctx.deps, ctx.viewer!, { scanId: String(scanId), reason, detail }),
  }),
);

builder.mutationField("appendScanEvents", (t) =>
  t.field({
    type: [ScanEventRef],
    description: "Appends progress, log, warning or error events to the runner's own scan (at most 500 a batch).",
    authScopes: { runner: true },
    args: { scanId: t.arg.id({ required: true }), events: t.arg({ type: [ScanEventInput], required: true }) },
    resolve: (_root, { scanId, events }, ctx) =>
      appendRunnerEvents(ctx.deps, ctx.viewer!, {
        scanId: String(scanId),
        events: events.map((event) => ({ kind: event.kind, code: event.code, message: event.message, data: event.data })),
      }),
  }),
);

builder.mutationField("addFindings", (t) =>
  t.field({
    type: AddFindingsPayload,
    description: "Adds findings to the runner's own scan, deduplicated by fingerprint (at most 1000 a batch).",
    authScopes: { runner: true },
    args: { scanId: t.arg.id({ required: true }), findings: t.arg({ type: [FindingInput], required: true }) },
    resolve: (_root, { scanId, findings }, ctx) => addRunnerFindings(ctx.deps, ctx.viewer!, { scanId: String(scanId), findings }),
  }),
);

builder.mutationField("reportScanProgress", (t) =>
  t.field({
    type: ScanProgressRef,
    description:
      "The runner's heartbeat: its progress on its own scan, kept as Scan.progress and published on scanProgress. The first " +
      "report of a STARTING scan moves it to RUNNING. CONFLICT once the scan has ended or was claimed again: stop.",
    authScopes: { runner: true },
    args: { scanId: t.arg.id({ required: true }), input: t.arg({ type: ScanProgressInput, required: true }) },
    resolve: (_root, { scanId, input }, ctx) => reportScanProgress(ctx.deps, ctx.viewer!, { scanId: String(scanId), report: input }),
  }),
);

builder.mutationField("completeScan", (t) =>
  t.field({
    type: ScanRef,
    description:
      "The runner's last report: RUNNING (or STARTING, through RUNNING) → SUCCEEDED or FAILED. CONFLICT if the scan was " +
      "cancelled, recovered or claimed again.",
    authScopes: { runner: true },
    args: { scanId: t.arg.id({ required: true }), input: t.arg({ type: CompleteScanInput, required: true }) },
    resolve: (_root, { scanId, input }, ctx) => completeScan(ctx.deps, ctx.viewer!, { scanId: String(scanId), completion: input }),
  }),
);

const SourceDownloadRef = builder.objectRef<SourceDownload>("SourceDownload").implement({
  description: "Where a runner downloads its scan's source archive; check the bytes against `sha256`.",
  fields: (t) => ({
    url: t.exposeString("url", { description: "A presigned S3 URL, or a path on the API (GET /v1/artifacts/:id)." }),
    withToken: t.exposeBoolean("withToken", { description: "Send the runner token as a bearer token (the API's route only)." }),
    expiresAt: t.field({ type: "DateTime", nullable: true, description: "When a presigned URL stops being accepted.", resolve: (download) => download.expiresAt }),
    sizeBytes: t.field({ type: "BigInt", resolve: (download) => download.sizeBytes }),
    sha256: t.exposeString("sha256"),
  }),
});

builder.queryField("sourceDownload", (t) =>
  t.field({
    type: SourceDownloadRef,
    description:
      "The runner's source archive download: a short-lived presigned URL with the S3 store, the API's route with the local one. " +
      "CONFLICT once the scan ended or was claimed again.",
    authScopes: { runner: true },
    args: { scanId: t.arg.id({ required: true }) },
    resolve: (_root, { scanId }, ctx) => sourceDownloadForRunner(ctx.deps, ctx.viewer!, { scanId: String(scanId) }),
  }),
);
