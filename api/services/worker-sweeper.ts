/**
 * Reports workers that stopped heartbeating. Every API replica runs the sweep
 * every VEGA_WORKER_SWEEP_INTERVAL_SECONDS; each transition to stale is
 * reported once across replicas:
 * - the sweep runs in one transaction under a transaction-scoped advisory lock
 *   (WORKER_SWEEP_LOCK below), so replicas sweep one after the other;
 * - it marks rows with `staleReportedAt` in the same UPDATE that selects them
 *   (`staleReportedAt IS NULL` in its WHERE), so the next sweep, on any replica,
 *   skips them; the worker's next heartbeat clears the mark;
 * - STALE events are published after commit, never for a rolled-back mark.
 */
import type { Deps } from "../context.ts";
import type { Worker } from "../generated/prisma/client.ts";
import { staleWorkerCutoff, staleWorkerWhere } from "./worker-staleness.ts";
import { publishWorkerEvent } from "./workers.ts";

/**
 * pg_advisory_xact_lock(int4, int4) key of the sweep: 7310 is the worker
 * registry's namespace (quota locks use 7301 with a per-user second key), 1 the
 * stale sweep. The two-key form cannot collide with single-bigint keys such as
 * Prisma's migration lock 72707369.
 */
export const WORKER_SWEEP_LOCK = { namespace: 7310, key: 1 } as const;

type SweepDeps = Pick<Deps, "prisma" | "pubsub" | "config" | "log">;

/** One sweep: marks and reports the live workers whose last heartbeat is older than the TTL. Answers those reported. */
export async function reportStaleWorkers(deps: SweepDeps, now = new Date()): Promise<Worker[]> {
  const reported = await deps.prisma.$transaction(async (tx) => {
    // $executeRaw: $queryRaw cannot deserialize the void this function returns.
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(${WORKER_SWEEP_LOCK.namespace}::int4, ${WORKER_SWEEP_LOCK.key}::int4)`;
    return tx.worker.updateManyAndReturn({
      where: { deregisteredAt: null, staleReportedAt: null, ...staleWorkerWhere(staleWorkerCutoff(deps.config, now)) },
      data: { staleReportedAt: now },
    });
  });
  for (const worker of reported) publishWorkerEvent(deps.pubsub, "STALE", worker, now);
  if (reported.length > 0) {
    deps.log.warn({ workers: reported.map((worker) => ({ id: worker.id, name: worker.name })) }, "workers stopped heartbeating");
  }
  return reported;
}

export interface WorkerSweeper {
  /** Stops the timer and waits for a sweep in progress. */
  stop(): Promise<void>;
}

export function startWorkerSweeper(deps: SweepDeps): WorkerSweeper {
  let running: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    if (running) return; // a slow sweep is not stacked with the next one
    running = reportStaleWorkers(deps)
      .catch((error: unknown) => deps.log.error({ err: error }, "worker sweep failed"))
      .finally(() => (running = undefined));
  }, deps.config.workerSweepIntervalSeconds * 1000);
  // The sweep alone must not keep a process alive.
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
