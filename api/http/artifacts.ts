/**
 * GET /v1/artifacts/:id — streams a stored file. Runners fetch their scan's
 * source archive here with their runner token, while their claim is the scan's
 * current one (CONFLICT once the scan ended or was claimed again); members of
 * the artifact's workspace (and operators) may download it too. Anyone else
 * gets NOT_FOUND, as for a missing artifact.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import type { GraphQLError } from "graphql";
import { authenticate, type Deps, type Viewer } from "../context.ts";
import { errorCodeOf, notFound, unauthenticated } from "../../shared/errors.ts";
import type { Artifact } from "../generated/prisma/client.ts";
import { currentRunnerScan } from "../services/scan-execution.ts";
import { maySee, membershipIn } from "../services/visibility.ts";
import { sendError } from "./respond.ts";

export const ARTIFACT_ROUTE = /^\/v1\/artifacts\/([0-9a-f-]{36})$/;

/**
 * The visibility rule (services/visibility.ts) for an artifact: a runner reads
 * its scan's source while its claim is current (CONFLICT once superseded).
 */
function mayRead(deps: Deps, viewer: Viewer, artifact: Artifact): Promise<boolean> {
  return maySee(
    viewer,
    {
      workspaceId: artifact.workspaceId,
      ofRunnerScan: async (scanId) => (await currentRunnerScan(deps, viewer, scanId)).sourceArtifactId === artifact.id,
    },
    membershipIn(deps.prisma),
  );
}

export async function downloadArtifact(deps: Deps, req: IncomingMessage, res: ServerResponse, artifactId: string) {
  try {
    const viewer = await authenticate(deps, req.headers.authorization);
    if (!viewer) throw unauthenticated("A bearer token is required");
    const artifact = await deps.prisma.artifact.findUnique({ where: { id: artifactId } });
    if (!artifact || artifact.deletedAt || !(await mayRead(deps, viewer, artifact))) throw notFound("Artifact", artifactId);
    const { stream, sizeBytes } = await deps.artifacts.openRead(artifact.storageKey);
    res.writeHead(200, {
      "content-type": artifact.kind === "SOURCE" ? "application/zip" : "application/octet-stream",
      "content-length": String(sizeBytes),
      "content-disposition": `attachment; filename="${(artifact.fileName ?? artifact.id).replace(/[^\w.-]/g, "_")}"`,
      etag: `"${artifact.sha256}"`,
      "x-vega-sha256": artifact.sha256,
    });
    if (req.method === "HEAD") {
      stream.destroy();
      return res.end();
    }
    await pipeline(stream, res);
  } catch (error) {
    if (errorCodeOf(error)) return sendError(res, error as GraphQLError);
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      deps.log.error({ artifactId }, "artifact row exists but its file is missing from the store");
      return sendError(res, notFound("Artifact", artifactId));
    }
    throw error;
  }
}
