import { diagnose, type Diagnostic } from "../services/diagnostics.ts";
import { builder } from "./builder.ts";
import { OpsRef } from "./ops.ts";

const DiagnosticCodeEnum = builder.enumType("DiagnosticCode", {
  values: {
    NO_LIVE_WORKER: { description: "Scans queued longer than VEGA_DIAGNOSTICS_QUEUED_SECONDS and no live worker." },
    STALE_WORKER: { description: "A registered worker stopped heartbeating; subjects list the scans it still holds." },
    SCAN_RUNNING_PAST_THRESHOLD: {
      description: "A scan RUNNING longer than VEGA_SCAN_RUNNING_STALE_SECONDS, with its task and whether it was last seen alive.",
    },
    USER_AT_QUOTA: { description: "A user at VEGA_MAX_ACTIVE_SCANS_PER_USER, with their oldest active scans." },
    CLEANUP_FAILING: { description: "The last cleanup run failed, or (when scheduled) none ran within two intervals." },
    CLAIMS_PAUSED: { description: "An operator paused claiming (pauseClaims): queued scans wait until resumeClaims." },
  } as const,
});

const DiagnosticSeverityEnum = builder.enumType("DiagnosticSeverity", {
  values: {
    CRITICAL: { description: "Work has stopped: act now." },
    WARNING: { description: "Something is stuck or failing and will not mend by itself soon." },
    INFO: { description: "Worth knowing; may be normal load." },
  } as const,
});

const DiagnosticRef = builder.objectRef<Diagnostic>("Diagnostic").implement({
  description: "One finding of the runbook's checks.",
  fields: (t) => ({
    code: t.field({ type: DiagnosticCodeEnum, resolve: (diagnostic) => diagnostic.code }),
    severity: t.field({ type: DiagnosticSeverityEnum, resolve: (diagnostic) => diagnostic.severity }),
    summary: t.exposeString("summary", { description: "What is wrong, with the numbers." }),
    action: t.exposeString("action", { description: "What the runbook says to do about it." }),
    subjects: t.exposeStringList("subjects", {
      description: "The objects concerned as <Type>:<id> (Scan, Worker, User, Task, CleanupRun), the main one first.",
    }),
    details: t.field({ type: "JSON", description: "The specifics, per code (ids, timestamps, counts).", resolve: (diagnostic) => diagnostic.details }),
  }),
});

builder.objectField(OpsRef, "diagnostics", (t) =>
  t.field({
    type: [DiagnosticRef],
    description: "The runbook's checks in one query, most severe first; a healthy system answers [].",
    resolve: (_ops, _args, ctx) => diagnose(ctx.deps, { cleanupScheduledSince: ctx.deps.cleanupScheduler.since }),
  }),
);
