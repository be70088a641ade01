/** GET /v1/scans/:id/sarif — the same SARIF log as Scan.sarif, as a file for CI tools (`github/codeql-action/upload-sarif`). */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { GraphQLError } from "graphql";
import { authenticate, type Deps } from "../context.ts";
import { errorCodeOf, unauthenticated } from "../../shared/errors.ts";
import { createLoaders } from "../services/loaders.ts";
import { exportSarif } from "../services/scans.ts";
import { sendError, sendJson } from "./respond.ts";

export const SARIF_ROUTE = /^\/v1\/scans\/([0-9a-f-]{36})\/sarif$/;

export async function downloadSarif(deps: Deps, req: IncomingMessage, res: ServerResponse, scanId: string) {
  try {
    const viewer = await authenticate(deps, req.headers.authorization);
    if (!viewer) throw unauthenticated("A bearer token is required");
    const sarif = await exportSarif(deps, viewer, scanId, createLoaders(deps.prisma));
    sendJson(res, 200, sarif, {
      "content-type": "application/sarif+json; charset=utf-8",
      "content-disposition": `attachment; filename="vega-${scanId}.sarif"`,
    });
  } catch (error) {
    if (errorCodeOf(error)) return sendError(res, error as GraphQLError);
    throw error;
  }
}
