/**
 * Retrying a scan (Mutation.retryScan): a FAILED or CANCELLED scan becomes a
 * new QUEUED scan of the same source archive, owned by the same user, in the
 * same workspace, counted against that user's active-scan quota (refused with
 * QUOTA_EXCEEDED as a submission would be), with `retryOf` naming the scan it
 * retries. The original stays as it was: its events and findings are its own.
 * Its owner or an operator may retry; an operator's retry is audited.
 */
import type { Deps, Viewer } from "../context.ts";
import { conflict, forbidden, notFound } from "../../shared/errors.ts";
import type { Scan, ScanStatus } from "../generated/prisma/client.ts";
import { recordAudit } from "./audit.ts";
import { opsScanAuditActions } from "./ops-scans.ts";
import { withActiveScanQuota } from "./quota.ts";
import { writeScans } from "./scan-state.ts";

/** The statuses a retry starts from: a scan that ended without a result. */
export const retryableStatuses: readonly ScanStatus[] = ["FAILED", "CANCELLED"];

export async function retryScan(deps: Pick<Deps, "prisma" | "pubsub" | "config">, viewer: Viewer, args: { id: string }): Promise<Scan> {
  const original = await deps.prisma.scan.findUnique({ where: { id: args.id } });
  const isOwner = Boolean(original && viewer.user?.id === original.ownerId);
  if (!original) throw notFound("Scan", args.id);
  if (!isOwner && !viewer.isOperator) {
    // A scan of a workspace the viewer is not in answers like a missing one (ids cannot be probed).
    const member = viewer.user
      ? await deps.prisma.membership.findUnique({ where: { workspaceId_userId: { workspaceId: original.workspaceId, userId: viewer.user.id } } })
      : null;
    if (!member) throw notFound("Scan", args.id);
    throw forbidden("only the scan's owner or an operator can retry it");
  }
  if (!retryableStatuses.includes(original.status)) {
    throw conflict(`Scan ${args.id} is ${original.status}; only a FAILED or CANCELLED scan can be retried`, { status: original.status });
  }

  const { scan } = await writeScans(
    deps,
    async (writes) => {
      // The artifact row is locked while the new scan is created, so that a cleanup run cannot mark it deleted in between.
      const [artifact] = await writes.tx.$queryRaw<{ deletedAt: Date | null }[]>`
        SELECT "deletedAt" FROM "Artifact" WHERE id = ${original.sourceArtifactId} FOR UPDATE`;
      if (!artifact || artifact.deletedAt) {
        throw conflict(
          `Scan ${args.id} cannot be retried: its source archive was removed by retention (VEGA_ARTIFACT_RETENTION_SECONDS); submit it again`,
          { reason: "SOURCE_DELETED", deletedAt: artifact?.deletedAt?.toISOString() ?? null },
        );
      }
      const created = await writes.createWithFirstEvent(
        { workspaceId: original.workspaceId, ownerId: original.ownerId, label: original.label, sourceArtifactId: original.sourceArtifactId, retryOfId: original.id },
        { by: viewer.principal.sub },
      );
      if (!isOwner) {
        await recordAudit(writes.tx, {
          actor: viewer.principal.sub,
          action: opsScanAuditActions.retry,
          target: `Scan:${original.id}`,
          details: { retryScanId: created.scan.id, ownerId: original.ownerId, workspaceId: original.workspaceId, status: original.status },
        });
      }
      return created;
    },
    // Counted against the owner's quota under its lock, as a submission is.
    (body) => withActiveScanQuota(deps.prisma, deps.config, original.ownerId, body),
  );
  return scan;
}
