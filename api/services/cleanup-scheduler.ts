/**
 * The API's scheduled cleanup: a run every VEGA_CLEANUP_INTERVAL_SECONDS (0
 * turns it off), counted across replicas. The schedule is kept in the database,
 * not in each process: a scheduled run is due when the newest SCHEDULE run
 * started an interval ago (or there is none), so N replicas make one run per
 * interval, a restart does not postpone it, and the due check is repeated under
 * the cleanup start lock so two replicas waking together start one run.
 * Operator and CLI runs do not move the schedule.
 *
 * One scheduler per API process, a member of Deps (`Deps.cleanupScheduler`),
 * started once the server listens. The timer is unref'd (it never keeps a
 * process alive), re-armed for the due time after each check, and stopped on
 * close together with a run in progress.
 * Errors are logged, never fatal: the next check comes a minute later.
 */
import type { PrismaClient } from "../db/client.ts";
import { startCleanup, stopCleanupInProcess, type CleanupDeps } from "./cleanup-runs.ts";

/** Longest single wait: timers cannot exceed 2^31 ms, and a long sleep would miss a changed schedule. */
const MAX_WAIT_MS = 60 * 60 * 1000;
/** Wait after a failed check, or while another process's run is in progress. */
const RETRY_WAIT_MS = 60 * 1000;

/** When the next scheduled run is due by the database's record, whoever ran the last one. */
export async function scheduledCleanupDueAt(prisma: PrismaClient, intervalSeconds: number, now = new Date()): Promise<Date> {
  const last = await prisma.cleanupRun.findFirst({
    where: { trigger: "SCHEDULE" },
    orderBy: [{ startedAt: "desc" }, { id: "desc" }],
    select: { startedAt: true },
  });
  return last ? new Date(last.startedAt.getTime() + intervalSeconds * 1000) : now;
}

export class CleanupScheduler {
  /** When this process started scheduling (diagnostics give a fresh process two intervals before complaining); unset until started. */
  since: Date | undefined;
  private deps: CleanupDeps | undefined;
  private timer: NodeJS.Timeout | undefined;
  private nextCheckAt: Date | undefined;
  private checking: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly intervalSeconds: number) {}

  /** Starts scheduling for these deps: the first check at once, so a run overdue (or never made) starts with the API. */
  start(deps: CleanupDeps): void {
    if (this.deps) return;
    this.deps = deps;
    this.since = new Date();
    if (this.intervalSeconds > 0) this.runCheck();
  }

  /** When the next scheduled run should start; null when scheduling is off or not started. */
  async nextScheduledAt(): Promise<Date | null> {
    if (this.intervalSeconds === 0 || !this.deps) return null;
    const dueAt = await scheduledCleanupDueAt(this.deps.prisma, this.intervalSeconds);
    // Due already: the run starts at this process's next check (or is starting now).
    return this.nextCheckAt && this.nextCheckAt > dueAt ? this.nextCheckAt : dueAt;
  }

  /** Settles when no check is in progress (a check lasts as long as the run it starts). */
  async idle(): Promise<void> {
    await this.checking;
  }

  /** Stops the timer, interrupts a run in progress in this process and waits for it to record its outcome. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.deps) await stopCleanupInProcess(this.deps);
    await this.checking;
  }

  private runCheck() {
    this.checking = this.check().finally(() => (this.checking = undefined));
  }

  /** The next check at `at`, or sooner (MAX_WAIT_MS) to look again. */
  private armAt(at: Date) {
    if (this.stopped) return;
    const wait = Math.min(Math.max(at.getTime() - Date.now(), 0), MAX_WAIT_MS);
    this.nextCheckAt = wait < MAX_WAIT_MS ? at : new Date(Date.now() + wait);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runCheck();
    }, wait);
    this.timer.unref();
  }

  private retryAt() {
    return new Date(Date.now() + Math.min(RETRY_WAIT_MS, this.intervalSeconds * 1000));
  }

  private async check() {
    const deps = this.deps!;
    const isDue = async () => (await scheduledCleanupDueAt(deps.prisma, this.intervalSeconds)).getTime() <= Date.now();
    try {
      const dueAt = await scheduledCleanupDueAt(deps.prisma, this.intervalSeconds);
      if (dueAt.getTime() > Date.now()) return this.armAt(dueAt);
      const start = await startCleanup(deps, { trigger: "SCHEDULE", triggeredBy: null, isDue });
      if (start.outcome === "started") await start.finished;
      if (this.stopped) return;
      if (start.outcome === "inProgress") return this.armAt(this.retryAt());
      this.armAt(await scheduledCleanupDueAt(deps.prisma, this.intervalSeconds));
    } catch (error) {
      if (!this.stopped) deps.log.error({ err: error }, "scheduled cleanup failed");
      this.armAt(this.retryAt());
    }
  }
}
