/**
 * Sessions that expired, or were closed, more than VEGA_SESSION_RETENTION_SECONDS
 * ago are deleted, CLEANUP_BATCH_SIZE at a time (indexes on expiresAt and closedAt).
 */
import type { Prisma } from "../../generated/prisma/client.ts";
import { CLEANUP_BATCH_SIZE, type CleanupJobContext, type JobTally } from "./job.ts";

export async function pruneEndedSessions(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const cutoff = new Date(ctx.now.getTime() - ctx.config.sessionRetentionSeconds * 1000);
  const ended: Prisma.SessionWhereInput = { OR: [{ expiresAt: { lt: cutoff } }, { closedAt: { lt: cutoff } }] };
  if (ctx.dryRun) {
    tally.count += await ctx.prisma.session.count({ where: ended });
    return;
  }
  for (;;) {
    ctx.signal?.throwIfAborted();
    const batch = await ctx.prisma.session.findMany({ where: ended, select: { id: true }, take: CLEANUP_BATCH_SIZE });
    if (batch.length === 0) return;
    // The rule again in the DELETE: a session reopened meanwhile (its expiry pushed out) stays.
    const { count } = await ctx.prisma.session.deleteMany({ where: { id: { in: batch.map((session) => session.id) }, ...ended } });
    tally.count += count;
    if (batch.length < CLEANUP_BATCH_SIZE) return;
  }
}
