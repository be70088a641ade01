/**
 * Artifacts of finished scans past VEGA_ARTIFACT_RETENTION_SECONDS: the file is
 * deleted and the row marked (`deletedAt`); the scan, its events and findings
 * stay. An artifact qualifies when at least one scan uses it and every scan
 * that uses it finished (SUCCEEDED, FAILED, CANCELLED) before the cutoff, so an
 * artifact still used by an active scan, or by one that finished recently, is
 * never touched.
 *
 * Rows are walked in keyset order (createdAt, id) over the live artifacts only
 * (index on deletedAt, createdAt), CLEANUP_BATCH_SIZE at a time, each one's
 * scans probed through the index on Scan.sourceArtifactId: a batch costs the
 * same whether the table holds a thousand artifacts or millions. Each batch is
 * claimed by one UPDATE … WHERE deletedAt IS NULL that repeats the rule: of two
 * runs racing, each row is claimed (and its bytes counted) once. The row is
 * marked before its file is deleted: if the process dies in between, the file
 * is left with a deleted row, which the orphan-file job removes on a later run.
 */
import { Prisma } from "../../generated/prisma/client.ts";
import { finishedStatuses } from "../../../shared/scan-status.ts";
import {
  CLEANUP_BATCH_SIZE,
  FILE_CONCURRENCY,
  FileFailures,
  forEachConcurrently,
  type CleanupJobContext,
  type JobTally,
} from "./job.ts";

/** UTC wall time, as Prisma stores DateTime in `timestamp(3)` columns: comparisons do not depend on the session's TimeZone. */
const utcTimestamp = (date: Date) => date.toISOString().replace("T", " ").replace("Z", "");

/**
 * The rule for one artifact `a`, as a correlated subquery that PostgreSQL runs
 * per candidate through the index on Scan.sourceArtifactId: true when every scan
 * using it finished before the cutoff; NULL (not true) when no scan uses it.
 * (As NOT EXISTS anti-joins, the planner scanned the whole Scan table per batch.)
 */
const everyScanFinishedBefore = (cutoff: string) => Prisma.sql`(
  SELECT bool_and(s.status::text = ANY(${[...finishedStatuses]}::text[]) AND coalesce(s."finishedAt" < ${cutoff}::timestamp(3), false))
  FROM "Scan" s WHERE s."sourceArtifactId" = a.id)`;

export async function pruneFinishedScanArtifacts(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const cutoff = utcTimestamp(new Date(ctx.now.getTime() - ctx.config.artifactRetentionSeconds * 1000));
  const failures = new FileFailures();
  // Keyset on (createdAt, id); the separate `createdAt >=` bound is what the index can seek to.
  let after = { createdAt: utcTimestamp(new Date(0)), id: "" };
  // The files of one batch are deleted (or measured) while the next batch is read and claimed:
  // at most two batches' files in flight.
  const files = new FileWork();
  let walked = false;
  try {
    for (;;) {
      ctx.signal?.throwIfAborted();
      // ORDER BY starts with deletedAt (NULL in every row here) so that the index (deletedAt, createdAt)
      // gives the order: PostgreSQL does not treat `IS NULL` as fixing a column for ordering.
      const batch = await ctx.prisma.$queryRaw<{ id: string; storageKey: string; createdAt: string }[]>`
        SELECT a.id, a."storageKey", to_char(a."createdAt", 'YYYY-MM-DD HH24:MI:SS.MS') AS "createdAt"
        FROM "Artifact" a
        WHERE a."deletedAt" IS NULL
          -- An artifact is older than the scans that use it: none made after the cutoff can qualify.
          AND a."createdAt" < ${cutoff}::timestamp(3)
          AND a."createdAt" >= ${after.createdAt}::timestamp(3)
          AND (a."createdAt", a.id) > (${after.createdAt}::timestamp(3), ${after.id})
          AND ${everyScanFinishedBefore(cutoff)}
        ORDER BY a."deletedAt", a."createdAt", a.id
        LIMIT ${CLEANUP_BATCH_SIZE}`;
      if (batch.length === 0) break;
      after = batch[batch.length - 1];

      if (ctx.dryRun) {
        tally.count += batch.length;
        await files.next(() =>
          forEachConcurrently(batch, FILE_CONCURRENCY, async (artifact) => {
            const bytes = await ctx.artifacts.sizeOf(artifact.storageKey);
            tally.bytes += bytes;
          }),
        );
      } else {
        const claimed = await ctx.prisma.$queryRaw<{ storageKey: string }[]>`
          UPDATE "Artifact" a SET "deletedAt" = ${utcTimestamp(ctx.now)}::timestamp(3)
          WHERE a.id = ANY(${batch.map((artifact) => artifact.id)}::text[])
            AND a."deletedAt" IS NULL
            AND ${everyScanFinishedBefore(cutoff)}
          RETURNING a."storageKey"`;
        tally.count += claimed.length;
        await files.next(async () => {
          // The sizes first (a file already gone frees 0), then one batch delete (S3: DeleteObjects).
          const sizes = new Map<string, number>();
          await forEachConcurrently(claimed, FILE_CONCURRENCY, async ({ storageKey }) => {
            try {
              sizes.set(storageKey, await ctx.artifacts.sizeOf(storageKey));
            } catch (error) {
              failures.add(storageKey, error);
            }
          });
          const outcome = await ctx.artifacts.deleteMany([...sizes.keys()]);
          for (const storageKey of outcome.deleted) tally.bytes += sizes.get(storageKey) ?? 0;
          for (const { storageKey, error } of outcome.failures) failures.add(storageKey, error);
        });
      }
      if (batch.length < CLEANUP_BATCH_SIZE) break;
    }
    walked = true;
  } finally {
    // Never return (or report counts) with file work still running; an error already
    // on its way out (an interruption) is the one reported.
    if (walked) await files.drain();
    else await files.drain().catch(() => {});
  }
  failures.throwIfAny("artifact files");
}

/** One batch of file work in the background at a time; its failure surfaces at the next step. */
class FileWork {
  private running: Promise<unknown> = Promise.resolve();
  private failure: { error: unknown } | undefined;

  /** Waits for the batch in flight, then starts `work` without waiting for it. */
  async next(work: () => Promise<void>) {
    await this.drain();
    // Caught at once (an unobserved rejection would end the process); rethrown by the next drain.
    this.running = work().catch((error: unknown) => (this.failure ??= { error }));
  }

  async drain() {
    await this.running;
    if (this.failure) throw this.failure.error;
  }
}
