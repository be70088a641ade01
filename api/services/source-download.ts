/**
 * Where a runner downloads its scan's source archive. With the S3 store it is a
 * presigned GET URL valid for VEGA_ARTIFACT_URL_TTL_SECONDS, so archives of
 * gigabytes go from S3 to the runner without passing through an API replica,
 * and the runner needs no AWS permission of its own; with the local store it
 * is the API's GET /v1/artifacts/:id, with the runner's token. Either way the
 * runner checks the bytes against the artifact's sha256.
 *
 * Only the runner of the scan's current claim gets one (CONFLICT once the scan
 * ended or was claimed again), as for the download route itself.
 */
import type { Deps, Viewer } from "../context.ts";
import { notFound } from "../../shared/errors.ts";
import { currentRunnerScan } from "./scan-execution.ts";

export interface SourceDownload {
  /** Absolute (presigned) or a path on the API. */
  url: string;
  /** Send the runner's bearer token with the request (the API's route); never to a presigned URL. */
  withToken: boolean;
  /** When a presigned URL stops being accepted (a download already under way goes on). */
  expiresAt: Date | null;
  sizeBytes: bigint;
  sha256: string;
}

export async function sourceDownloadForRunner(
  deps: Pick<Deps, "prisma" | "artifacts" | "config">,
  viewer: Viewer,
  args: { scanId: string },
): Promise<SourceDownload> {
  const scan = await currentRunnerScan(deps, viewer, args.scanId);
  const artifact = await deps.prisma.artifact.findUnique({ where: { id: scan.sourceArtifactId } });
  if (!artifact || artifact.deletedAt) throw notFound("Artifact", scan.sourceArtifactId);
  const location = await deps.artifacts.downloadLocation(artifact.storageKey, deps.config.artifactUrlTtlSeconds);
  const checks = { sizeBytes: artifact.sizeBytes, sha256: artifact.sha256 };
  if (location.kind === "presigned") return { url: location.url, withToken: false, expiresAt: location.expiresAt, ...checks };
  return { url: `/v1/artifacts/${artifact.id}`, withToken: true, expiresAt: null, ...checks };
}
