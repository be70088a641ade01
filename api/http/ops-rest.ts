/**
 * The seed's REST paths for operators' scripts, a thin layer in front of
 * GraphQL: each path runs one fixed operation through yoga (the same bearer
 * authentication, operator scope, armor limits and error masking as
 * /graphql) and answers the JSON of its result.
 *
 *   GET  /v1/ops/limits                   200 { "limits": Limits }
 *   GET  /v1/ops/workers[?includeStale=false]
 *                                         200 { "workers": [Worker] }
 *   GET  /v1/ops/cleanup                  200 { "cleanup": { running, lastRun, nextScheduledAt, intervalSeconds, runs: [CleanupRun] } }
 *                                             (runs: the 20 newest)
 *   POST /v1/ops/cleanup[?dryRun=true]    202 { "cleanupRun": CleanupRun } (the run started, or the one in progress)
 *   GET  /v1/ops/diagnostics              200 { "diagnostics": [Diagnostic] }
 *   GET  /v1/ops/claims                   200 { "claims": ClaimsPause }
 *   POST /v1/ops/claims/pause?reason=…    200 { "claims": ClaimsPause } (workers claim nothing until resumed)
 *   POST /v1/ops/claims/resume            200 { "claims": ClaimsPause }
 *   GET  /v1/ops/summary                  200 { "summary": OpsSummary }
 *   POST /v1/ops/scans/cancel?userId=…&workspaceId=…&status=QUEUED,RUNNING&olderThanSeconds=…
 *                                         200 { "cancelled": n, "scanIds": [id] } (at least one criterion)
 *
 * Objects carry every field of their GraphQL type (selections are built from
 * the schema, so a field added to Limits shows here too); BigInt and DateTime
 * are strings as in GraphQL. Errors have GraphQL's shape and status:
 * `{ "errors": [{ "message", "extensions": { "code", "http": { "status" } } }] }`
 * with 401 UNAUTHENTICATED, 403 FORBIDDEN, 400 BAD_USER_INPUT (a malformed
 * query parameter), 404 NOT_FOUND (another path or method), 500 otherwise.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { getNamedType, isLeafType, isObjectType, isNonNullType, type GraphQLNamedType } from "graphql";
import { authenticate, type Deps } from "../context.ts";
import { badUserInput, errorCodes, isGraphQLError, notFound } from "../../shared/errors.ts";
import { schema } from "../schema/index.ts";
import type { VegaYoga } from "./graphql.ts";
import { sendError, sendJson } from "./respond.ts";

export const OPS_REST_PREFIX = "/v1/ops/";

/** Recent runs listed by GET /v1/ops/cleanup. */
const RECENT_RUNS = 20;

/**
 * Every field of a type that takes no required argument, nested objects
 * included (to `depth`), for a fixed operation that mirrors the type.
 */
function selectionOf(typeName: string, depth = 3): string {
  const type = schema.getType(typeName);
  if (!type || !isObjectType(type)) throw new Error(`ops-rest: ${typeName} is not an object type of the schema`);
  const fields = Object.values(type.getFields()).flatMap((field) => {
    if (field.args.some((arg) => isNonNullType(arg.type) && arg.defaultValue === undefined)) return [];
    const named: GraphQLNamedType = getNamedType(field.type);
    if (isLeafType(named)) return [field.name];
    if (isObjectType(named) && depth > 1 && !named.name.endsWith("Connection")) return [`${field.name} { ${selectionOf(named.name, depth - 1)} }`];
    return [];
  });
  return fields.join(" ");
}

interface OpsRoute {
  method: "GET" | "POST";
  status: number;
  operation: () => string;
  variables: (url: URL) => Record<string, unknown>;
  answer: (data: any) => unknown;
}

/** Operations are built on first use: the schema is complete by then. */
const memo = (build: () => string) => {
  let text: string | undefined;
  return () => (text ??= build());
};

const routes: Record<string, OpsRoute[]> = {
  "/v1/ops/limits": [
    {
      method: "GET",
      status: 200,
      operation: memo(() => `query OpsLimits { ops { limits { ${selectionOf("Limits")} } } }`),
      variables: () => ({}),
      answer: (data) => ({ limits: data.ops.limits }),
    },
  ],
  "/v1/ops/workers": [
    {
      method: "GET",
      status: 200,
      operation: memo(() => `query OpsWorkers($includeStale: Boolean) { ops { workers(includeStale: $includeStale) { ${selectionOf("Worker")} } } }`),
      variables: (url) => ({ includeStale: booleanParameter(url, "includeStale") ?? true }),
      answer: (data) => ({ workers: data.ops.workers }),
    },
  ],
  "/v1/ops/cleanup": [
    {
      method: "GET",
      status: 200,
      operation: memo(() => {
        const run = selectionOf("CleanupRun");
        return (
          `query OpsCleanup { ops { cleanup { running { ${run} } lastRun { ${run} } nextScheduledAt intervalSeconds ` +
          `runs(first: ${RECENT_RUNS}) { edges { node { ${run} } } } } } }`
        );
      }),
      variables: () => ({}),
      answer: (data) => {
        const { runs, ...status } = data.ops.cleanup;
        return { cleanup: { ...status, runs: runs.edges.map((edge: { node: unknown }) => edge.node) } };
      },
    },
    {
      method: "POST",
      // Accepted: the run goes on in the background.
      status: 202,
      operation: memo(() => `mutation OpsTriggerCleanup($dryRun: Boolean) { triggerCleanup(dryRun: $dryRun) { ${selectionOf("CleanupRun")} } }`),
      variables: (url) => ({ dryRun: booleanParameter(url, "dryRun") ?? false }),
      answer: (data) => ({ cleanupRun: data.triggerCleanup }),
    },
  ],
  "/v1/ops/diagnostics": [
    {
      method: "GET",
      status: 200,
      operation: memo(() => `query OpsDiagnostics { ops { diagnostics { ${selectionOf("Diagnostic")} } } }`),
      variables: () => ({}),
      answer: (data) => ({ diagnostics: data.ops.diagnostics }),
    },
  ],
  "/v1/ops/claims": [
    {
      method: "GET",
      status: 200,
      operation: memo(() => `query OpsClaims { ops { claimsPaused { ${selectionOf("ClaimsPause")} } } }`),
      variables: () => ({}),
      answer: (data) => ({ claims: data.ops.claimsPaused }),
    },
  ],
  "/v1/ops/claims/pause": [
    {
      method: "POST",
      status: 200,
      operation: memo(() => `mutation OpsPauseClaims($reason: String!) { pauseClaims(reason: $reason) { ${selectionOf("ClaimsPause")} } }`),
      variables: (url) => ({ reason: requiredParameter(url, "reason") }),
      answer: (data) => ({ claims: data.pauseClaims }),
    },
  ],
  "/v1/ops/claims/resume": [
    {
      method: "POST",
      status: 200,
      operation: memo(() => `mutation OpsResumeClaims { resumeClaims { ${selectionOf("ClaimsPause")} } }`),
      variables: () => ({}),
      answer: (data) => ({ claims: data.resumeClaims }),
    },
  ],
  "/v1/ops/summary": [
    {
      method: "GET",
      status: 200,
      operation: memo(() => `query OpsSummary { ops { summary { ${selectionOf("OpsSummary")} } } }`),
      variables: () => ({}),
      answer: (data) => ({ summary: data.ops.summary }),
    },
  ],
  "/v1/ops/scans/cancel": [
    {
      method: "POST",
      status: 200,
      operation: memo(() => `mutation OpsCancelScans($filter: ScanCancelFilter!) { cancelScans(filter: $filter) { cancelled scanIds } }`),
      variables: (url) => ({
        filter: {
          userId: url.searchParams.get("userId"),
          workspaceId: url.searchParams.get("workspaceId"),
          status: url.searchParams.get("status")?.split(",").map((status) => status.trim()).filter(Boolean) ?? null,
          olderThanSeconds: integerParameter(url, "olderThanSeconds"),
        },
      }),
      answer: (data) => data.cancelScans,
    },
  ],
};

function requiredParameter(url: URL, name: string): string {
  const value = url.searchParams.get(name);
  if (value === null || value.trim() === "") throw badUserInput(`Query parameter ${name} is required`, { parameter: name });
  return value;
}

function integerParameter(url: URL, name: string): number | null {
  const value = url.searchParams.get(name);
  if (value === null) return null;
  if (!/^\d{1,9}$/.test(value)) throw badUserInput(`Query parameter ${name} must be a non-negative integer, not ${JSON.stringify(value)}`, { parameter: name });
  return Number(value);
}

function booleanParameter(url: URL, name: string): boolean | undefined {
  const value = url.searchParams.get(name);
  if (value === null) return undefined;
  if (["true", "1", ""].includes(value)) return true;
  if (["false", "0"].includes(value)) return false;
  throw badUserInput(`Query parameter ${name} must be true or false, not ${JSON.stringify(value)}`, { parameter: name });
}

interface GraphQLResult {
  data?: any;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
}

export async function handleOpsRest(deps: Deps, yoga: VegaYoga, req: IncomingMessage, res: ServerResponse, url: URL, requestId: string) {
  const method = req.method ?? "GET";
  const candidates = routes[url.pathname.replace(/\/+$/, "")] ?? [];
  const route = candidates.find((candidate) => candidate.method === method);
  if (!route) {
    if (candidates.length > 0) res.setHeader("allow", candidates.map((candidate) => candidate.method).join(", "));
    return sendError(res, notFound("Route", `${method} ${url.pathname}`));
  }
  let variables: Record<string, unknown>;
  let viewer;
  try {
    variables = route.variables(url);
    viewer = await authenticate(deps, req.headers.authorization);
  } catch (error) {
    if (isGraphQLError(error)) return sendError(res, error);
    throw error;
  }
  const response = await yoga.fetch(
    new Request(new URL(yoga.graphqlEndpoint, url), {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/graphql-response+json" },
      body: JSON.stringify({ query: route.operation(), variables }),
    }),
    { vega: { requestId, viewer } },
  );
  const result = (await response.json()) as GraphQLResult;
  if (result.errors?.length) return sendErrors(res, response.status, result.errors);
  sendJson(res, route.status, route.answer(result.data));
}

/** GraphQL's errors, without locations and paths (they name the fixed operation, not the client's request). */
function sendErrors(res: ServerResponse, graphqlStatus: number, errors: NonNullable<GraphQLResult["errors"]>) {
  const code = errors[0].extensions?.code;
  const status =
    typeof code === "string" && code in errorCodes ? errorCodes[code as keyof typeof errorCodes].status : graphqlStatus >= 400 ? graphqlStatus : 500;
  sendJson(res, status, { errors: errors.map(({ message, extensions }) => ({ message, extensions })) });
}
