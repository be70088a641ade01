/**
 * Artifacts of finished scans past VEGA_ARTIFACT_RETENTION_SECONDS: the file is
 * deleted and the row marked (`deletedAt`); the scan, its events and findings
 * stay. An artifact qualifies when at least one scan uses it and every scan
 * that uses it finished (SUCCEEDED, FAILED, CANCELLED) before the cutoff, so an
 * artifact still used by an active scan, or by one that finished recently, is
 * never touched.
 *
 * Rows are walked in keyset order (createdAt, id) over the live artifacts only
 * (index on deletedAt, createdAt), CLEANUP_BATCH_SIZE at a time. Each batch is
 * claimed by one UPDATE … WHERE deletedAt IS NULL that repeats the rule: of two
 * runs racing, each row is claimed (and its bytes counted) once. The row is
 * marked before its file is deleted: if the process dies in between, the file
 * is left with a deleted row, which the orphan-file job removes on a later run.
 */
import { stat } from "node:fs/promises";
import type { Prisma } from "../../generated/prisma/client.ts";
import { finishedStatuses } from "../../services/scan-state.ts";
import {
  CLEANUP_BATCH_SIZE,
  FILE_CONCURRENCY,
  FileFailures,
  forEachConcurrently,
  isMissing,
  type CleanupJobContext,
  type JobTally,
} from "./job.ts";

/** A scan that keeps its source artifact: still active, or finished after the cutoff (or at an unknown time). */
const keepsItsArtifact = (cutoff: Date): Prisma.ScanWhereInput => ({
  OR: [{ status: { notIn: [...finishedStatuses] } }, { finishedAt: null }, { finishedAt: { gte: cutoff } }],
});

export async function pruneFinishedScanArtifacts(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const cutoff = new Date(ctx.now.getTime() - ctx.config.artifactRetentionSeconds * 1000);
  const failures = new FileFailures();
  let after: { createdAt: Date; id: string } | undefined;
  for (;;) {
    ctx.signal?.throwIfAborted();
    const batch = await ctx.prisma.artifact.findMany({
      where: {
        deletedAt: null,
        // An artifact is older than the scans that use it: none made after the cutoff can qualify.
        createdAt: { lt: cutoff },
        sourceOfScans: { some: {}, none: keepsItsArtifact(cutoff) },
        ...(after ? { OR: [{ createdAt: { gt: after.createdAt } }, { createdAt: after.createdAt, id: { gt: after.id } }] } : {}),
      },
      orderBy: [{ createdAt: "asc" }, { id: "asc" }],
      take: CLEANUP_BATCH_SIZE,
      select: { id: true, storageKey: true, createdAt: true },
    });
    if (batch.length === 0) break;
    after = batch[batch.length - 1];

    if (ctx.dryRun) {
      tally.count += batch.length;
      await forEachConcurrently(batch, FILE_CONCURRENCY, async (artifact) => {
        const bytes = await sizeOf(ctx.artifacts.pathOf(artifact.storageKey));
        tally.bytes += bytes;
      });
    } else {
      const claimed = await ctx.prisma.artifact.updateManyAndReturn({
        where: { id: { in: batch.map((artifact) => artifact.id) }, deletedAt: null, sourceOfScans: { none: keepsItsArtifact(cutoff) } },
        data: { deletedAt: ctx.now },
        select: { storageKey: true },
      });
      tally.count += claimed.length;
      await forEachConcurrently(claimed, FILE_CONCURRENCY, async (artifact) => {
        try {
          // Read the size first: `tally.bytes += await …` would add to a total read before the await.
          const bytes = await ctx.artifacts.delete(artifact.storageKey);
          tally.bytes += bytes;
        } catch (error) {
          failures.add(artifact.storageKey, error);
        }
      });
    }
    if (batch.length < CLEANUP_BATCH_SIZE) break;
  }
  failures.throwIfAny("artifact files");
}

/** The size a delete would free: 0 for a file already gone. */
async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (error) {
    if (isMissing(error)) return 0;
    throw error;
  }
}
