import { randomUUID } from "node:crypto";
import type { Config } from "../shared/config.ts";
import type { Database, PrismaClient } from "./db/client.ts";
import type { Logger } from "../shared/logger.ts";
import type { VegaPubSub } from "./pubsub.ts";
import { bearerToken, isOperator, type Principal, type TokenVerifier } from "./auth.ts";
import { createLoaders, type Loaders } from "./services/loaders.ts";
import { ensureUser, type KnownUser, type SeenUsers } from "./services/users.ts";
import type { ArtifactStore } from "./services/artifact-store.ts";
import type { StoredUpload } from "./services/uploads.ts";
import type { OpenLauncher } from "../shared/launcher.ts";
import type { CleanupGate } from "./services/cleanup-runs.ts";
import type { CleanupScheduler } from "./services/cleanup-scheduler.ts";
import type { VegaMetrics } from "./services/metrics.ts";
import type { SubscriptionGroups } from "./http/subscription-groups.ts";

/** What services need, built once per process and passed in (never imported as globals). */
export interface Deps {
  config: Config;
  database: Database;
  prisma: PrismaClient;
  pubsub: VegaPubSub;
  log: Logger;
  verifyToken: TokenVerifier;
  /** The HS256 key, when this process may mint tokens (runner tokens, worker session tokens). */
  signingKey?: Uint8Array;
  seenUsers: SeenUsers;
  artifacts: ArtifactStore;
  /** The configured launcher, for recovery that no worker runs (Mutation.recoverStaleScans, the maintenance task). */
  openLauncher: OpenLauncher;
  /** This process's cleanup run, if any: excludes a second run in one database session (cleanup-runs.ts). */
  cleanupGate: CleanupGate;
  /** The API's scheduled cleanup (started once the server listens; never started by the CLI's tasks). */
  cleanupScheduler: CleanupScheduler;
  /** This process's Prometheus registry: counters of what it saw, gauges read at scrape time (GET /metrics). */
  metrics: VegaMetrics;
  /** The WebSocket subscribers grouped by operation and visibility, each group executed once per event (http/subscription-groups.ts). */
  subscriptionGroups: SubscriptionGroups;
}

export interface Viewer {
  principal: Principal;
  isOperator: boolean;
  /** The User row of a person's token (absent for worker and runner tokens). */
  user: KnownUser | null;
}

export interface Context {
  deps: Deps;
  viewer: Viewer | null;
  loaders: Loaders;
  requestId: string;
  log: Logger;
  /** Files the upload path stored for this request, by the placeholder the File variable carries. */
  uploads: Map<string, StoredUpload>;
}

export async function authenticate(deps: Deps, authorization: string | null | undefined): Promise<Viewer | null> {
  const token = bearerToken(authorization);
  if (!token) return null;
  const principal = await deps.verifyToken(token);
  const user = principal.scope === "user" ? await ensureUser(deps.prisma, principal, deps.seenUsers) : null;
  return { principal, isOperator: isOperator(principal, deps.config.opsGroups), user };
}

export function createContext(
  deps: Deps,
  viewer: Viewer | null,
  options: { requestId?: string; uploads?: Map<string, StoredUpload> } = {},
): Context {
  const requestId = options.requestId ?? randomUUID();
  return {
    deps,
    viewer,
    loaders: createLoaders(deps.prisma),
    requestId,
    log: deps.log.child({ requestId, sub: viewer?.principal.sub }),
    uploads: options.uploads ?? new Map(),
  };
}
