/**
 * The API server: one Node HTTP server for GraphQL over HTTP (yoga), GraphQL
 * over WebSocket (graphql-ws) and SSE on /graphql, the health probes, and the
 * REST paths operators' scripts and runners use.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { GraphQLError } from "graphql";
import { createTokenVerifier, resolveSigningKey } from "./auth.ts";
import type { Config } from "../shared/config.ts";
import { authenticate, type Deps } from "./context.ts";
import { openDatabase, type Database } from "./db/client.ts";
import { migrate, MigrationError, pendingMigrations } from "./db/migrate.ts";
import { errorCodeOf, requestTimeout, vegaError } from "../shared/errors.ts";
import { createGraphQLHandler, type VegaYoga } from "./http/graphql.ts";
import {
  BodyIdleError,
  BodyTooLargeError,
  ClientGoneError,
  readBoundedBody,
  refuseAndClose,
  refuseRequest,
  requestUrl,
  sendError,
  sendJson,
  sendWebResponse,
} from "./http/respond.ts";
import { ARTIFACT_ROUTE, downloadArtifact } from "./http/artifacts.ts";
import { downloadSarif, SARIF_ROUTE } from "./http/sarif.ts";
import { attachSubscriptions } from "./http/subscriptions.ts";
import { createSubscriptionGroups } from "./http/subscription-groups.ts";
import { handleMultipartGraphQL } from "./http/uploads.ts";
import { closeUploadHasher } from "./http/upload-file.ts";
import { handleOpsRest, OPS_REST_PREFIX } from "./http/ops-rest.ts";
import { createLogger, type Logger } from "../shared/logger.ts";
import { createVegaPubSub, type RedisStatus } from "./pubsub.ts";
import { openConfiguredArtifactStore } from "./services/artifact-store.ts";
import { CleanupGate } from "./services/cleanup-runs.ts";
import { CleanupScheduler } from "./services/cleanup-scheduler.ts";
import { SeenUsers } from "./services/users.ts";
import type { OpenLauncher } from "../shared/launcher.ts";
import { startWorkerSweeper } from "./services/worker-sweeper.ts";
import { createMetrics } from "./services/metrics.ts";
import { METRICS_ROUTE, serveMetrics } from "./http/metrics.ts";
import { dashboardAssetOf, dashboardAssets, serveDashboard, type DashboardAssets } from "./http/dashboard.ts";

export interface AppOptions {
  /** An already opened database (tests); otherwise opened from the settings. */
  database?: Database;
  log?: Logger;
  /** What the process runs, recorded as the embedded data directory's owner ("vega start"). */
  purpose?: string;
  /** The configured launcher (the CLI passes it: the API never imports the launchers). */
  openLauncher: OpenLauncher;
}

export interface App {
  deps: Deps;
  httpServer: Server;
  yoga: VegaYoga;
  /**
   * Listens on VEGA_HOST:VEGA_PORT (or the given port; 0 for an ephemeral one), then starts the
   * background work (worker sweep, cleanup schedule), and answers the base URL. Rejects with
   * ListenError when the address cannot be had.
   */
  listen(port?: number, host?: string): Promise<string>;
  close(): Promise<void>;
}

/** The port is taken, or the address is not this machine's: nothing was started. */
export class ListenError extends Error {
  override name = "ListenError";
}

/** Requests other than uploads may carry JSON bodies only: a form post from another site cannot reach GraphQL. */
const JSON_CONTENT_TYPE = /^application\/(json|graphql-response\+json)\b/i;

/**
 * Opens the database (migrating the embedded one; refusing to serve a
 * PostgreSQL database with pending migrations), then builds the server.
 */
export async function createApp(config: Config, options: AppOptions): Promise<App> {
  const log = options.log ?? createLogger(config, { service: "vega-api" });
  const signingKey = await resolveSigningKey(config);
  const database = options.database ?? (await openDatabase(config, { purpose: options.purpose }));
  if (!options.database) {
    await prepareSchema(config, database, log).catch(async (error: unknown) => {
      await database.close();
      throw error;
    });
  }
  const { pubsub, redisStatus, close: closePubSub } = createVegaPubSub(config, log);
  const metrics = createMetrics(pubsub);
  const deps: Deps = {
    config,
    database,
    prisma: database.prisma,
    pubsub,
    log,
    verifyToken: createTokenVerifier(config, signingKey),
    signingKey,
    seenUsers: new SeenUsers(),
    artifacts: await openConfiguredArtifactStore(config, log),
    openLauncher: options.openLauncher,
    cleanupGate: new CleanupGate(),
    cleanupScheduler: new CleanupScheduler(config.cleanupIntervalSeconds),
    metrics,
    subscriptionGroups: createSubscriptionGroups({ onExecution: () => metrics.countSubscriptionExecution() }),
  };
  const yoga = createGraphQLHandler(deps);
  const dashboard = dashboardAssets(log);
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const requestId = requestIdOf(req);
    res.setHeader("x-request-id", requestId);
    handle(deps, yoga, dashboard, req, res, requestId, redisStatus).catch((error: unknown) => {
      log.error({ err: error, requestId }, "request failed");
      if (!res.headersSent) sendJson(res, 500, { errors: [{ message: "Unexpected error", extensions: { code: "INTERNAL_SERVER_ERROR", requestId } }] });
      else res.destroy();
    });
  };
  // Node's default cuts any request not received within 5 minutes, which a 2 GiB
  // upload on a slow link needs; bodies are bounded by VEGA_UPLOAD_IDLE_SECONDS
  // between bytes instead, and headers still by a minute (the default, which
  // would otherwise follow requestTimeout to 0).
  const httpServer = createServer({ requestTimeout: 0, headersTimeout: 60_000 }, onRequest);
  // A client sending `Expect: 100-continue` is answered 100 only when its body is
  // about to be read (respond.ts startReadingBody), so refusals come before the body.
  httpServer.on("checkContinue", onRequest);
  // Started once listening: a process that cannot listen must not sweep the database meanwhile, and
  // a WebSocket server attached before listen() would report the listen failure as its own internal error.
  let subscriptions: ReturnType<typeof attachSubscriptions> | undefined;
  let background: { stop(): Promise<void> }[] = [];

  return {
    deps,
    httpServer,
    yoga,
    listen(port = config.port, host = config.host) {
      return new Promise((resolve, reject) => {
        const refused = (error: NodeJS.ErrnoException) => {
          const reason = error.code === "EADDRINUSE" ? "the port is already in use" : error.code === "EADDRNOTAVAIL" ? "the address is not this machine's" : error.message;
          reject(new ListenError(`cannot listen on ${host}:${port}: ${reason} (VEGA_HOST, VEGA_PORT)`, { cause: error }));
        };
        httpServer.once("error", refused);
        httpServer.listen(port, host, () => {
          httpServer.off("error", refused);
          subscriptions ??= attachSubscriptions(httpServer, yoga, deps);
          if (background.length === 0) {
            deps.cleanupScheduler.start(deps);
            background = [startWorkerSweeper(deps), deps.cleanupScheduler];
          }
          const address = httpServer.address() as AddressInfo;
          const shownHost = address.address === "0.0.0.0" || address.address === "::" ? "127.0.0.1" : address.address;
          log.info({ port: address.port, host: address.address, database: database.description }, "Vega API listening");
          resolve(`http://${shownHost}:${address.port}`);
        });
      });
    },
    async close() {
      for (const work of background) await work.stop();
      await subscriptions?.close();
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await closePubSub();
      deps.metrics.close();
      await closeUploadHasher();
      if (!options.database) await database.close();
    },
  };
}

/** The embedded database is migrated at start; PostgreSQL is migrated by the maintenance task. */
async function prepareSchema(config: Config, database: Database, log: Logger) {
  if (!config.databaseUrl) {
    const result = await migrate(database.sql, { log: (message) => log.info(message) });
    if (result.applied.length > 0) log.info({ applied: result.applied }, "embedded database migrated");
    return;
  }
  const pending = await pendingMigrations(database.sql);
  if (pending.length > 0) {
    throw new MigrationError(`The database has pending migrations (${pending.join(", ")}): run \`vega maintenance migrate\` first`);
  }
}

function requestIdOf(req: IncomingMessage): string {
  const given = req.headers["x-request-id"];
  // Echo a caller's id when it looks like one, so their logs and ours correlate.
  return typeof given === "string" && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
}

async function handle(
  deps: Deps,
  yoga: VegaYoga,
  dashboard: DashboardAssets,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  redisStatus: () => RedisStatus | undefined,
) {
  const url = requestUrl(req);
  if (url.pathname === "/healthz") return sendJson(res, 200, { status: "ok" });
  if (url.pathname === "/readyz") return readiness(deps, res, redisStatus());
  if (url.pathname === METRICS_ROUTE) return serveMetrics(deps, req, res);
  if (url.pathname === yoga.graphqlEndpoint) return graphqlOverHttp(deps, yoga, req, res, url, requestId);
  if (url.pathname.startsWith(OPS_REST_PREFIX)) return handleOpsRest(deps, yoga, req, res, url, requestId);
  const artifact = ARTIFACT_ROUTE.exec(url.pathname);
  if (artifact && (req.method === "GET" || req.method === "HEAD")) return downloadArtifact(deps, req, res, artifact[1]);
  const sarif = SARIF_ROUTE.exec(url.pathname);
  if (sarif && req.method === "GET") return downloadSarif(deps, req, res, sarif[1]);
  const page = dashboardAssetOf(url.pathname);
  if (page && (req.method === "GET" || req.method === "HEAD")) return serveDashboard(dashboard, req, res, page);
  sendJson(res, 404, { errors: [{ message: `No route for ${req.method} ${url.pathname}`, extensions: { code: "NOT_FOUND" } }] });
}

/**
 * The database alone decides readiness: without it nothing works. Redis down
 * only narrows subscriptions to this replica's subscribers, so it is reported
 * in the body (`redis.status: "degraded"`) and the replica stays in service.
 */
async function readiness(deps: Deps, res: ServerResponse, redis: RedisStatus | undefined) {
  const dependencies = redis ? { redis } : {};
  try {
    await deps.prisma.$queryRaw`SELECT 1`;
    sendJson(res, 200, { status: "ready", database: { status: "ok" }, ...dependencies });
  } catch (error) {
    deps.log.warn({ err: error }, "readiness check failed: database unreachable");
    sendJson(res, 503, { status: "unavailable", reason: "database unreachable", database: { status: "unreachable" }, ...dependencies });
  }
}

async function graphqlOverHttp(
  deps: Deps,
  yoga: VegaYoga,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  requestId: string,
) {
  const method = req.method ?? "GET";
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(", ") : value);
  }
  const contentType = req.headers["content-type"] ?? "";
  if (method === "POST" && /^multipart\/form-data/i.test(contentType)) {
    return handleMultipartGraphQL(deps, yoga, req, res, url, requestId);
  }
  if (method === "POST" && !JSON_CONTENT_TYPE.test(contentType)) {
    return refuseRequest(
      req,
      res,
      vegaError("BAD_USER_INPUT", "GraphQL POST requests must be `Content-Type: application/json` (or multipart for uploads)"),
    );
  }
  // The caller is known before yoga parses the query: what the schema reveals (introspection, suggestions) depends on it.
  let viewer;
  try {
    viewer = await authenticate(deps, req.headers.authorization);
  } catch (error) {
    if (errorCodeOf(error)) return refuseRequest(req, res, error as GraphQLError);
    throw error;
  }
  let body: Buffer | undefined;
  if (method === "POST") {
    try {
      body = await readBoundedBody(req, res, { limit: deps.config.maxRequestBytes, idleSeconds: deps.config.uploadIdleSeconds });
    } catch (error) {
      if (error instanceof ClientGoneError) return;
      if (error instanceof BodyIdleError) return refuseAndClose(res, requestTimeout({ idleSeconds: deps.config.uploadIdleSeconds }));
      if (error instanceof BodyTooLargeError) return refuseRequest(req, res, tooLarge(deps.config.maxRequestBytes));
      throw error;
    }
  }
  const request = new Request(url, { method, headers, body: body ? new Uint8Array(body) : undefined });
  const response = await yoga.fetch(request, { vega: { requestId, viewer } });
  // Yoga answers an Accept header it cannot serve with a bare 406; clients act on codes.
  if (response.status === 406 && !response.body) {
    const accepted = response.headers.get("accept");
    return sendError(res, vegaError("NOT_ACCEPTABLE", `No type in \`Accept: ${req.headers.accept ?? ""}\` is one this server answers`, { accepted }));
  }
  await sendWebResponse(res, response);
}

const tooLarge = (limit: number): GraphQLError =>
  vegaError("PAYLOAD_TOO_LARGE", `Request body is over the limit of ${limit} bytes (uploads use multipart)`, { limit });
