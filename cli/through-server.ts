/**
 * `vega maintenance` while a Vega server holds the embedded data directory:
 * the job cannot open the database (one process's, see api/db/data-dir-lock.ts),
 * so it runs through that server's API, as an operator. The token is minted
 * here from the server's own key (VEGA_JWT_SECRET, or the data directory's
 * jwt-secret), the subject being the CLI's user@host, so the run and its audit
 * entry name who asked. The server's URL comes from its lock record.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { resolveSigningKey, signToken } from "../api/auth.ts";
import type { Config } from "../shared/config.ts";
import { liveOwnerOf, type DataDirOwner } from "../api/db/data-dir-lock.ts";
import {
  MaintenanceCleanupRunDocument,
  MaintenanceRecoverStaleScansDocument,
  MaintenanceRunningCleanupDocument,
  MaintenanceTriggerCleanupDocument,
  type CleanupJob,
  type MaintenanceCleanupRunFragment,
} from "./generated/graphql.ts";
import { cleanupJobEnumValue, type CleanupJobName } from "../api/services/cleanup.ts";
import { ApiRequestError, createApiClient, type ApiRequest } from "../worker/api-client.ts";

export type ServerCleanupRun = MaintenanceCleanupRunFragment;

/** A server still starting (PGlite opening, migrations) has not announced its URL yet. */
const STARTING_SERVER_WAIT_MS = 120_000;
const POLL_MS = 250;
const RUN_POLL_MS = 500;
const TOKEN_TTL_SECONDS = 600;

export interface HoldingServer {
  url: string;
  owner: DataDirOwner;
  request: ApiRequest;
}

const isServer = (owner: DataDirOwner) => /^vega (start|serve)\b/.test(owner.command);

/**
 * The server holding the data directory, once it listens. "gone" when the
 * owner ended meanwhile (the directory is free again); undefined when the owner
 * is not a server (another maintenance job) or never announced a URL.
 */
export async function findHoldingServer(config: Config, owner: DataDirOwner, caller: string): Promise<HoldingServer | "gone" | undefined> {
  let current: DataDirOwner | undefined = owner;
  const deadline = Date.now() + STARTING_SERVER_WAIT_MS;
  while (!current.url) {
    if (!isServer(current) || Date.now() > deadline) return undefined;
    await sleep(POLL_MS);
    current = await liveOwnerOf(config.dataDir);
    if (!current) return "gone";
  }
  return { url: current.url, owner: current, request: await operatorClient(config, `${current.url}/graphql`, caller) };
}

async function operatorClient(config: Config, graphqlUrl: string, caller: string): Promise<ApiRequest> {
  const key = await resolveSigningKey(config);
  if (!key) {
    throw new Error(
      "the server verifies tokens against VEGA_JWT_JWKS_URL, so vega cannot mint an operator token: " +
        "run the job through the API with an operator's token (POST /v1/ops/cleanup, Mutation.recoverStaleScans)",
    );
  }
  const group = config.opsGroups[0];
  if (!group) throw new Error("VEGA_OPS_GROUPS is empty: no token can have the operator scope the job needs");
  let token = "";
  const api = createApiClient({ url: graphqlUrl, token: () => token, timeoutMs: 60_000 });
  // A fresh short-lived token per call: a long cleanup outlives any one of them.
  return async (document, variables, options) => {
    token = await signToken(key, { sub: caller, groups: [group], ttlSeconds: TOKEN_TTL_SECONDS });
    return api.request(document, variables, options);
  };
}

export type ServerCleanup = { outcome: "finished"; run: ServerCleanupRun } | { outcome: "inProgress"; run: ServerCleanupRun | null };

/** Starts a run through the server unless one is in progress, and waits for it to finish. */
export async function cleanupThroughServer(server: HoldingServer, options: { dryRun: boolean; jobs?: CleanupJobName[] }): Promise<ServerCleanup> {
  let run: ServerCleanupRun;
  try {
    run = (await server.request(MaintenanceTriggerCleanupDocument, { dryRun: options.dryRun, jobs: options.jobs?.map((job) => cleanupJobEnumValue(job) as CleanupJob) })).triggerCleanup;
  } catch (error) {
    if (!(error instanceof ApiRequestError && error.hasCode("CONFLICT"))) throw error;
    const { ops } = await server.request(MaintenanceRunningCleanupDocument, {});
    return { outcome: "inProgress", run: ops.cleanup.running ?? null };
  }
  while (run.status === "RUNNING") {
    await sleep(RUN_POLL_MS);
    const { ops } = await server.request(MaintenanceCleanupRunDocument, { id: run.id });
    if (!ops.cleanup.run) throw new Error(`the server no longer knows cleanup run ${run.id}`);
    run = ops.cleanup.run;
  }
  return { outcome: "finished", run };
}

export async function recoverThroughServer(server: HoldingServer, dryRun: boolean) {
  return (await server.request(MaintenanceRecoverStaleScansDocument, { dryRun })).recoverStaleScans;
}
