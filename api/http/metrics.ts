/**
 * GET /metrics — the Prometheus text exposition (services/metrics.ts). Read
 * with VEGA_METRICS_TOKEN as the bearer (a scrape config's
 * `authorization: { credentials: … }`) or an operator's token; 401 without a
 * token or with an invalid one, 403 for a token without the operator scope.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { GraphQLError } from "graphql";
import { authenticate, type Deps } from "../context.ts";
import { errorCodeOf, notFound } from "../../shared/errors.ts";
import { authorizeMetricsScrape, scrapeMetrics } from "../services/metrics.ts";
import { sendError } from "./respond.ts";

export const METRICS_ROUTE = "/metrics";

export async function serveMetrics(deps: Deps, req: IncomingMessage, res: ServerResponse) {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    return sendError(res, notFound("Route", `${req.method} ${METRICS_ROUTE}`));
  }
  try {
    await authorizeMetricsScrape(deps, req.headers.authorization, (authorization) => authenticate(deps, authorization));
  } catch (error) {
    if (errorCodeOf(error)) return sendError(res, error as GraphQLError);
    throw error;
  }
  const { contentType, body } = await scrapeMetrics(deps);
  res.writeHead(200, { "content-type": contentType, "cache-control": "no-store" });
  res.end(req.method === "HEAD" ? undefined : body);
}
