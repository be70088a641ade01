/**
 * The API's scheduled cleanup: a run every VEGA_CLEANUP_INTERVAL_SECONDS (0
 * turns it off), counted across replicas. The schedule is kept in the database,
 * not in each process: a scheduled run is due when the newest SCHEDULE run
 * started an interval ago (or there is none), so N replicas make one run per
 * interval, a restart does not postpone it, and the due check is repeated under
 * the cleanup start lock so two replicas waking together start one run.
 * Operator and CLI runs do not move the schedule.
 *
 * The timer is unref'd (it never keeps a process alive), re-armed for the due
 * time after each check, and stopped on close together with a run in progress.
 * Errors are logged, never fatal: the next check comes a minute later.
 */
import type { PrismaClient } from "../db/client.ts";
import { startCleanup, stopCleanupInProcess, type CleanupDeps } from "./cleanup.ts";

export interface CleanupScheduler {
  readonly enabled: boolean;
  /** When this process started scheduling (diagnostics give a fresh process two intervals before complaining). */
  readonly since: Date;
  /** When the next scheduled run should start; null when scheduling is off. */
  nextScheduledAt(): Promise<Date | null>;
  /** Settles when no check is in progress (a check lasts as long as the run it starts). */
  idle(): Promise<void>;
  /** Stops the timer, interrupts a run in progress in this process and waits for it to record its outcome. */
  stop(): Promise<void>;
}

/** Longest single wait: timers cannot exceed 2^31 ms, and a long sleep would miss a changed schedule. */
const MAX_WAIT_MS = 60 * 60 * 1000;
/** Wait after a failed check, or while another process's run is in progress. */
const RETRY_WAIT_MS = 60 * 1000;

const schedulers = new WeakMap<object, CleanupScheduler>();

/** The scheduler started for these deps (by createApp), if any. */
export function cleanupSchedulerOf(deps: object): CleanupScheduler | undefined {
  return schedulers.get(deps);
}

/** When the next scheduled run is due by the database's record, whoever ran the last one. */
export async function scheduledCleanupDueAt(prisma: PrismaClient, intervalSeconds: number, now = new Date()): Promise<Date> {
  const last = await prisma.cleanupRun.findFirst({
    where: { trigger: "SCHEDULE" },
    orderBy: [{ startedAt: "desc" }, { id: "desc" }],
    select: { startedAt: true },
  });
  return last ? new Date(last.startedAt.getTime() + intervalSeconds * 1000) : now;
}

export function startCleanupScheduler(deps: CleanupDeps): CleanupScheduler {
  const intervalSeconds = deps.config.cleanupIntervalSeconds;
  const since = new Date();
  let timer: NodeJS.Timeout | undefined;
  let nextCheckAt: Date | undefined;
  let checking: Promise<void> | undefined;
  let stopped = false;

  const runCheck = () => {
    checking = check().finally(() => (checking = undefined));
  };

  /** The next check at `at`, or sooner (MAX_WAIT_MS) to look again. */
  const armAt = (at: Date) => {
    if (stopped) return;
    const wait = Math.min(Math.max(at.getTime() - Date.now(), 0), MAX_WAIT_MS);
    nextCheckAt = wait < MAX_WAIT_MS ? at : new Date(Date.now() + wait);
    timer = setTimeout(() => {
      timer = undefined;
      runCheck();
    }, wait);
    timer.unref();
  };

  const retryAt = () => new Date(Date.now() + Math.min(RETRY_WAIT_MS, intervalSeconds * 1000));
  const isDue = async () => (await scheduledCleanupDueAt(deps.prisma, intervalSeconds)).getTime() <= Date.now();

  async function check() {
    try {
      const dueAt = await scheduledCleanupDueAt(deps.prisma, intervalSeconds);
      if (dueAt.getTime() > Date.now()) return armAt(dueAt);
      const start = await startCleanup(deps, { trigger: "SCHEDULE", triggeredBy: null, isDue });
      if (start.outcome === "started") await start.finished;
      if (stopped) return;
      if (start.outcome === "inProgress") return armAt(retryAt());
      armAt(await scheduledCleanupDueAt(deps.prisma, intervalSeconds));
    } catch (error) {
      if (!stopped) deps.log.error({ err: error }, "scheduled cleanup failed");
      armAt(retryAt());
    }
  }

  const scheduler: CleanupScheduler = {
    enabled: intervalSeconds > 0,
    since,
    async nextScheduledAt() {
      if (intervalSeconds === 0) return null;
      const dueAt = await scheduledCleanupDueAt(deps.prisma, intervalSeconds);
      // Due already: the run starts at this process's next check (or is starting now).
      return nextCheckAt && nextCheckAt > dueAt ? nextCheckAt : dueAt;
    },
    async idle() {
      await checking;
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await stopCleanupInProcess(deps);
      await checking;
    },
  };
  schedulers.set(deps, scheduler);
  // The first check at once: a run overdue (or never made) starts with the API.
  if (intervalSeconds > 0) runCheck();
  return scheduler;
}
