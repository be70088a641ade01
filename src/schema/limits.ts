import type { Config } from "../config.ts";
import { builder } from "./builder.ts";

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

builder.queryField("ops", (t) =>
  t.field({
    type: OpsRef,
    authScopes: { operator: true },
    resolve: () => ({}),
  }),
);
