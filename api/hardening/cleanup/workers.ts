/**
 * Workers gone for good leave the registry: those stale (no heartbeat within
 * VEGA_WORKER_HEARTBEAT_TTL_SECONDS) for longer than VEGA_WORKER_PRUNE_SECONDS,
 * and those deregistered that long ago. A worker that still holds a STARTING
 * scan stays until recovery has put that scan back in the queue; its RUNNING
 * scans lose their workerId (ON DELETE SET NULL) and keep their task id, which
 * is what stale-scan recovery checks.
 */
import type { Prisma } from "../../generated/prisma/client.ts";
import { staleWorkerCutoff, staleWorkerWhere } from "../../services/worker-staleness.ts";
import { CLEANUP_BATCH_SIZE, type CleanupJobContext, type JobTally } from "./job.ts";

export async function pruneGoneWorkers(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  // Stale for longer than the prune delay: the staleness rule, judged prune-delay seconds ago.
  const pruneHorizon = new Date(ctx.now.getTime() - ctx.config.workerPruneSeconds * 1000);
  const gone: Prisma.WorkerWhereInput = {
    OR: [staleWorkerWhere(staleWorkerCutoff(ctx.config, pruneHorizon)), { deregisteredAt: { lt: pruneHorizon } }],
    scans: { none: { status: "STARTING" } },
  };
  if (ctx.dryRun) {
    tally.count += await ctx.prisma.worker.count({ where: gone });
    return;
  }
  for (;;) {
    ctx.signal?.throwIfAborted();
    const batch = await ctx.prisma.worker.findMany({ where: gone, select: { id: true }, take: CLEANUP_BATCH_SIZE });
    if (batch.length === 0) return;
    // The rule again in the DELETE: a worker that heartbeat or claimed a scan meanwhile stays.
    const { count } = await ctx.prisma.worker.deleteMany({ where: { id: { in: batch.map((worker) => worker.id) }, ...gone } });
    tally.count += count;
    if (batch.length < CLEANUP_BATCH_SIZE) return;
  }
}
