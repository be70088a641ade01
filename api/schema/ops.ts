import type { Config } from "../../shared/config.ts";
import { activeScanQuota, listActiveScans, type QuotaStatus } from "../services/quota.ts";
import { builder } from "./builder.ts";
import { ScanRef } from "./scans.ts";
import { ViewerRef } from "./viewer.ts";

/** The operator's window: every Ops field needs the operator scope. */
export const OpsRef = builder.objectRef<Record<string, never>>("Ops");

const LimitsRef = builder.objectRef<Config>("Limits").implement({
  description: "Every limit in force, as read from the settings at start.",
  fields: (t) => ({
    maxActiveScansPerUser: t.exposeInt("maxActiveScansPerUser"),
    maxSessionsPerWorkspace: t.exposeInt("maxSessionsPerWorkspace"),
    maxSourceBytes: t.field({ type: "BigInt", resolve: (config) => config.maxSourceBytes }),
    maxArchiveEntries: t.exposeInt("maxArchiveEntries"),
    maxArchiveUncompressedBytes: t.field({ type: "BigInt", resolve: (config) => config.maxArchiveUncompressedBytes }),
    maxArchiveCompressionRatio: t.exposeInt("maxCompressionRatio"),
    sessionTtlSeconds: t.exposeInt("sessionTtlSeconds"),
    workerHeartbeatIntervalSeconds: t.exposeInt("workerHeartbeatIntervalSeconds"),
    workerHeartbeatTtlSeconds: t.exposeInt("workerHeartbeatTtlSeconds"),
    scanRunningStaleSeconds: t.exposeInt("scanRunningStaleSeconds"),
    scanMaxAttempts: t.exposeInt("scanMaxAttempts"),
  }),
});

OpsRef.implement({
  description: "Operational state for operators (members of a group in VEGA_OPS_GROUPS).",
  authScopes: { operator: true },
  fields: (t) => ({
    limits: t.field({ type: LimitsRef, resolve: (_ops, _args, ctx) => ctx.deps.config }),
  }),
});

const ViewerQuotaRef = builder.objectRef<QuotaStatus>("ViewerQuota").implement({
  description: "The caller's active-scan quota: QUEUED + STARTING + RUNNING scans against the limit.",
  fields: (t) => ({
    maxActiveScans: t.exposeInt("limit"),
    activeScans: t.exposeInt("active"),
    remaining: t.exposeInt("remaining"),
  }),
});

builder.objectField(ViewerRef, "quota", (t) =>
  t.field({
    type: ViewerQuotaRef,
    resolve: (viewer, _args, ctx) => activeScanQuota(ctx.deps, viewer.id),
  }),
);

const UserQuotaRef = builder.objectRef<QuotaStatus & { userId: string }>("UserQuota").implement({
  description: "How many scans a user has queued, starting or running, and which (oldest first), to cancel stuck ones.",
  fields: (t) => ({
    userId: t.exposeID("userId"),
    limit: t.exposeInt("limit"),
    active: t.exposeInt("active"),
    activeScans: t.field({
      type: [ScanRef],
      resolve: (quota, _args, ctx) => listActiveScans(ctx.deps, quota.userId),
    }),
  }),
});

builder.queryField("ops", (t) =>
  t.field({
    type: OpsRef,
    authScopes: { operator: true },
    resolve: () => ({}),
  }),
);

builder.objectField(OpsRef, "userQuota", (t) =>
  t.field({
    type: UserQuotaRef,
    args: { userId: t.arg.id({ required: true }) },
    resolve: async (_ops, { userId }, ctx) => ({
      userId: String(userId),
      ...(await activeScanQuota(ctx.deps, String(userId))),
    }),
  }),
);
