/**
 * When a registered worker counts as stale: its last heartbeat is older than
 * VEGA_WORKER_HEARTBEAT_TTL_SECONDS. Every reader of that rule (the operator's
 * list and its `stale` field, the stale-worker sweep, stale-scan recovery and
 * its lease, diagnostics, registry pruning) takes the cut-off from
 * `staleWorkerCutoff` and compares the same way, in SQL or in memory.
 *
 * The boundary: a heartbeat exactly TTL seconds old is still fresh; stale is
 * strictly older (`lastHeartbeatAt < cutoff`). The TTL is how long one
 * heartbeat keeps a worker live, so a worker is live for the whole TTL,
 * inclusive. Before this rule had one place, five of its seven readers already
 * drew the line there (`lt`, `gte`, `>` on elapsed time); the registry list's
 * `gt` dropped a worker exactly at the cut-off, and now keeps it.
 */
import type { Config } from "../../shared/config.ts";
import type { Prisma } from "../generated/prisma/client.ts";

type StalenessSettings = Pick<Config, "workerHeartbeatTtlSeconds">;

/** The oldest heartbeat that still counts as fresh at `now`: anything older is stale. */
export function staleWorkerCutoff(config: StalenessSettings, now: Date): Date {
  return new Date(now.getTime() - config.workerHeartbeatTtlSeconds * 1000);
}

/** The rule in memory: stale when the last heartbeat is strictly older than the cut-off. */
export function isWorkerStale(lastHeartbeatAt: Date | string, cutoff: Date): boolean {
  return new Date(lastHeartbeatAt).getTime() < cutoff.getTime();
}

/** The rule as a Prisma filter on Worker: workers whose last heartbeat is older than the cut-off. */
export function staleWorkerWhere(cutoff: Date): Prisma.WorkerWhereInput {
  return { lastHeartbeatAt: { lt: cutoff } };
}

/** Its complement: workers heard from at or after the cut-off. */
export function freshWorkerWhere(cutoff: Date): Prisma.WorkerWhereInput {
  return { lastHeartbeatAt: { gte: cutoff } };
}

/** How long ago the worker last beat, and whether that makes it stale. Computed when read. */
export function workerLiveness(lastHeartbeatAt: string | Date, ttlSeconds: number, now: number | Date = Date.now()) {
  const at = new Date(now);
  const elapsedMs = Math.max(0, at.getTime() - new Date(lastHeartbeatAt).getTime());
  const cutoff = staleWorkerCutoff({ workerHeartbeatTtlSeconds: ttlSeconds }, at);
  return { secondsSinceHeartbeat: Math.floor(elapsedMs / 1000), stale: isWorkerStale(lastHeartbeatAt, cutoff) };
}
