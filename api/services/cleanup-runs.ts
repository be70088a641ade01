/**
 * The life of a cleanup run: one entry point (`startCleanup`) for the API's
 * schedule, the operator's `triggerCleanup` and `vega maintenance
 * cleanup|prune-artifacts`; stopping a run when its process stops. The jobs
 * and the queries over runs are cleanup.ts.
 * A run executes the jobs of api/hardening/cleanup/ in order, records itself as
 * a CleanupRun row (RUNNING → SUCCEEDED | FAILED, counts per job, bytes freed)
 * and publishes `cleanupRunUpdated` when it starts and when it ends.
 *
 * One run at a time across every API replica and CLI. The lock is a
 * session-level advisory lock (CLEANUP_LOCK.run) taken with
 * pg_try_advisory_lock on one connection pinned for the whole run through
 * `database.sql.withConnection`; the jobs' own queries go through Prisma on
 * other connections. Why not a transaction-scoped lock inside one long
 * interactive transaction: on PGlite a Prisma transaction holds the single
 * connection's transaction mutex, so every other query of the API would wait
 * for the whole cleanup; on PostgreSQL a transaction open for minutes holds back
 * vacuum. A session lock costs one idle connection and is released by
 * PostgreSQL if the process dies.
 *
 * PGlite is a single session (in one process: the data directory opens in one
 * process at a time), and advisory locks are re-entrant within a session, so
 * there the in-process gate (`CleanupGate`, `Deps.cleanupGate`) is what
 * excludes a second run; on PostgreSQL the gate spares a second pooled
 * connection and the lock does the rest.
 *
 * "A second request is answered with the run in progress": deciding to start
 * (try the run lock, insert the RUNNING row) and finishing (write the outcome,
 * release the run lock) both happen under a second, short, blocking lock
 * (CLEANUP_LOCK.start). So whoever fails the try-lock is sure to find the
 * holder's RUNNING row committed. A RUNNING row found by a run that got the lock
 * is left over from a process that died mid-run: it is closed as FAILED.
 */
import type { Deps, Viewer } from "../context.ts";
import type { SqlConnection } from "../db/driver.ts";
import { conflict } from "../../shared/errors.ts";
import type { CleanupRun, CleanupTrigger } from "../generated/prisma/client.ts";
import type { CleanupJobContext, JobTally } from "../hardening/cleanup/job.ts";
import { auditActions, recordAudit } from "./audit.ts";
import { allCleanupJobs, cleanupJobs, runningCleanup, type CleanupCounts, type CleanupJobName } from "./cleanup.ts";

/**
 * pg_advisory_lock(int4, int4) keys: 7320 is cleanup's namespace (quota 7301,
 * worker sweep 7310); the two-key form cannot collide with single-bigint keys
 * such as the migration lock 72707369.
 */
export const CLEANUP_LOCK = { namespace: 7320, run: 1, start: 2 } as const;

export type CleanupDeps = Pick<Deps, "config" | "database" | "prisma" | "pubsub" | "log" | "artifacts" | "cleanupGate"> & Partial<Pick<Deps, "metrics">>;

export interface CleanupRequest {
  trigger: CleanupTrigger;
  /** Who asked: the operator's `sub`, or a description of the CLI's caller. */
  triggeredBy?: string | null;
  dryRun?: boolean;
  /** Default: every job. `vega maintenance prune-artifacts` runs ["artifacts"]. */
  jobs?: CleanupJobName[];
  /** Checked under the start lock: the schedule starts a run only if one is still due. */
  isDue?: () => Promise<boolean>;
}

export type CleanupStart =
  | { outcome: "started"; run: CleanupRun; finished: Promise<CleanupRun> }
  /** Another run holds the lock: its row (null only if the holder is not a Vega cleanup); `finished` when it runs in this process. */
  | { outcome: "inProgress"; run: CleanupRun | null; finished?: Promise<CleanupRun> }
  | { outcome: "notDue" };

interface InProcessRun {
  start: Promise<CleanupStart>;
  abort: AbortController;
}

/**
 * The gate of the module comment: the run this process is deciding on or
 * running, if any. One per database session (a member of Deps, built with the
 * database it guards).
 */
export class CleanupGate {
  current: InProcessRun | undefined;
}

const ABANDONED = "abandoned: the process running it stopped before it finished";
const INTERRUPTED = "interrupted: the process running it is stopping";

/**
 * Starts a cleanup run unless one is in progress; answers as soon as the
 * decision is made (with the RUNNING row). The run itself goes on in the
 * background: `finished` settles with its final row.
 */
export async function startCleanup(deps: CleanupDeps, request: CleanupRequest): Promise<CleanupStart> {
  const gate = deps.cleanupGate;
  const current = gate.current;
  if (current) {
    const start = await current.start;
    // That caller's run did not start (not due, or another process runs one): decide afresh.
    if (start.outcome !== "started") return startCleanup(deps, request);
    const run = (await deps.prisma.cleanupRun.findUnique({ where: { id: start.run.id } })) ?? start.run;
    return { outcome: "inProgress", run, finished: start.finished };
  }

  const abort = new AbortController();
  let decide!: (start: CleanupStart) => void;
  let refuse!: (error: unknown) => void;
  const entry: InProcessRun = { abort, start: new Promise((resolve, reject) => ((decide = resolve), (refuse = reject))) };
  gate.current = entry;
  const leave = () => {
    if (gate.current === entry) gate.current = undefined;
  };
  let finish!: (run: CleanupRun) => void;
  let finishFailed!: (error: unknown) => void;
  const finished = new Promise<CleanupRun>((resolve, reject) => ((finish = resolve), (finishFailed = reject)));
  // The caller may never await it (the mutation answers at once); failures are logged below.
  finished.catch(() => {});
  let run: CleanupRun | undefined;

  deps.database.sql
    .withConnection(async (connection) => {
      const claim = await underStartLock(connection, () => claimRun(deps, connection, request));
      if (claim.outcome !== "claimed") {
        leave();
        decide(claim);
        return;
      }
      run = claim.run;
      deps.pubsub.publish("cleanupRunUpdated", { cleanupRunId: run.id });
      deps.log.info({ cleanupRunId: run.id, trigger: run.trigger, dryRun: run.dryRun }, "cleanup started");
      decide({ outcome: "started", run, finished });

      let outcome: JobsOutcome;
      try {
        outcome = await executeJobs(deps, run, request.jobs ?? allCleanupJobs, abort.signal);
      } catch (error) {
        outcome = { counts: {}, bytes: 0, error: error instanceof Error ? error.message : String(error) };
      }
      const final = await underStartLock(connection, async () => {
        try {
          return await deps.prisma.cleanupRun.update({
            where: { id: run!.id },
            data: {
              status: outcome.error ? "FAILED" : "SUCCEEDED",
              finishedAt: new Date(),
              counts: outcome.counts,
              bytesFreed: BigInt(outcome.bytes),
              error: outcome.error,
            },
          });
        } finally {
          await unlockRun(connection);
        }
      });
      leave();
      // A dry run only measures: it frees nothing. (`vega maintenance` runs without a metrics registry.)
      if (!final.dryRun) deps.metrics?.countCleanupBytesFreed(outcome.bytes);
      deps.pubsub.publish("cleanupRunUpdated", { cleanupRunId: final.id });
      const summary = { cleanupRunId: final.id, status: final.status, counts: outcome.counts, bytesFreed: outcome.bytes };
      if (outcome.error) deps.log.error({ ...summary, error: outcome.error }, "cleanup failed");
      else deps.log.info(summary, "cleanup finished");
      finish(final);
    })
    .catch((error: unknown) => {
      leave();
      deps.log.error({ err: error, cleanupRunId: run?.id }, run ? "cleanup could not record its outcome" : "cleanup could not start");
      if (run) finishFailed(error);
      else refuse(error);
    });

  return entry.start;
}

/** Stops this process's run, if any (between two batches), and waits for it to record its outcome. */
export async function stopCleanupInProcess(deps: Pick<CleanupDeps, "cleanupGate">): Promise<void> {
  const current = deps.cleanupGate.current;
  if (!current) return;
  current.abort.abort(new Error(INTERRUPTED));
  const start = await current.start.catch(() => undefined);
  if (start?.outcome === "started") await start.finished.catch(() => undefined);
}

const unlockRun = (connection: SqlConnection) =>
  connection.query(`SELECT pg_advisory_unlock($1::int4, $2::int4)`, [CLEANUP_LOCK.namespace, CLEANUP_LOCK.run]);

async function underStartLock<T>(connection: SqlConnection, work: () => Promise<T>): Promise<T> {
  await connection.query(`SELECT pg_advisory_lock($1::int4, $2::int4)`, [CLEANUP_LOCK.namespace, CLEANUP_LOCK.start]);
  try {
    return await work();
  } finally {
    await connection.query(`SELECT pg_advisory_unlock($1::int4, $2::int4)`, [CLEANUP_LOCK.namespace, CLEANUP_LOCK.start]);
  }
}

type Claim = { outcome: "claimed"; run: CleanupRun } | Exclude<CleanupStart, { outcome: "started" }>;

/** Under the start lock: takes the run lock and records the RUNNING row, or finds the run that holds it. */
async function claimRun(deps: CleanupDeps, connection: SqlConnection, request: CleanupRequest): Promise<Claim> {
  const [{ acquired }] = await connection.query<{ acquired: boolean }>(`SELECT pg_try_advisory_lock($1::int4, $2::int4) AS acquired`, [
    CLEANUP_LOCK.namespace,
    CLEANUP_LOCK.run,
  ]);
  if (!acquired) return { outcome: "inProgress", run: await runningCleanup(deps) };
  try {
    if (request.isDue && !(await request.isDue())) {
      await unlockRun(connection);
      return { outcome: "notDue" };
    }
    const now = new Date();
    const abandoned = await deps.prisma.cleanupRun.updateManyAndReturn({
      where: { status: "RUNNING" },
      data: { status: "FAILED", finishedAt: now, error: ABANDONED },
      select: { id: true },
    });
    for (const { id } of abandoned) deps.pubsub.publish("cleanupRunUpdated", { cleanupRunId: id });
    if (abandoned.length > 0) deps.log.warn({ cleanupRunIds: abandoned.map((run) => run.id) }, "closed cleanup runs left RUNNING by a stopped process");
    const run = await deps.prisma.cleanupRun.create({
      data: { trigger: request.trigger, triggeredBy: request.triggeredBy ?? null, dryRun: request.dryRun ?? false, status: "RUNNING", startedAt: now },
    });
    return { outcome: "claimed", run };
  } catch (error) {
    await unlockRun(connection);
    throw error;
  }
}

interface JobsOutcome {
  counts: CleanupCounts;
  bytes: number;
  error: string | null;
}

/**
 * Runs the jobs in order. A failing job does not stop the others (a file that
 * cannot be deleted is no reason to keep expired sessions); the run fails with
 * every job's error. Counts are written to the row after each job, so a
 * RUNNING run shows its progress.
 */
async function executeJobs(deps: CleanupDeps, run: CleanupRun, jobs: CleanupJobName[], signal: AbortSignal): Promise<JobsOutcome> {
  const context: CleanupJobContext = {
    prisma: deps.prisma,
    artifacts: deps.artifacts,
    config: deps.config,
    log: deps.log,
    dryRun: run.dryRun,
    now: run.startedAt,
    signal,
  };
  const counts: CleanupCounts = {};
  const errors: string[] = [];
  let bytes = 0;
  for (const name of allCleanupJobs.filter((job) => jobs.includes(job))) {
    if (signal.aborted) {
      errors.push(`${name}: ${INTERRUPTED}`);
      continue;
    }
    const tally: JobTally = { count: 0, bytes: 0 };
    try {
      await cleanupJobs[name](context, tally);
    } catch (error) {
      errors.push(`${name}: ${signal.aborted ? INTERRUPTED : error instanceof Error ? error.message : String(error)}`);
      if (!signal.aborted) deps.log.error({ err: error, cleanupRunId: run.id, job: name }, "cleanup job failed");
    }
    counts[name] = tally.count;
    bytes += tally.bytes;
    await deps.prisma.cleanupRun.update({ where: { id: run.id }, data: { counts, bytesFreed: BigInt(bytes) } });
  }
  return { counts, bytes, error: errors.length > 0 ? errors.join("; ") : null };
}

/**
 * The operator's trigger: starts a run (or answers the one in progress) and
 * records the action in the audit log. The run finishes in the background.
 * With `onlyIfIdle` (how `vega maintenance` runs a job through the server), a
 * run in progress is a CONFLICT naming it instead of the answer.
 */
export async function triggerCleanup(
  deps: CleanupDeps,
  viewer: Viewer,
  options: { dryRun: boolean; jobs?: CleanupJobName[]; onlyIfIdle?: boolean },
): Promise<CleanupRun> {
  const actor = viewer.principal.sub;
  const start = await startCleanup(deps, { trigger: "OPERATOR", triggeredBy: actor, dryRun: options.dryRun, jobs: options.jobs });
  const run = start.outcome === "notDue" ? null : start.run;
  await recordAudit(deps.prisma, {
    actor,
    action: auditActions.cleanupTrigger,
    target: run ? `CleanupRun:${run.id}` : null,
    details: { dryRun: options.dryRun, outcome: start.outcome, ...(options.jobs ? { jobs: options.jobs } : {}) },
  });
  if (!run) throw conflict("Another process holds the cleanup lock but has recorded no run; try again shortly");
  if (start.outcome === "inProgress" && options.onlyIfIdle) {
    throw conflict(`Another cleanup is in progress (run ${run.id}); nothing was started`, { cleanupRunId: run.id });
  }
  return run;
}
