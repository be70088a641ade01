/**
 * Operator diagnostics: the runbook's checks ("scans stuck in queued", "scans
 * stuck in running", "quota errors hitting users", a cleanup that stopped
 * working) answered in one call. Each finding is a Diagnostic: a code, a
 * severity, a one-line summary, the action the runbook prescribes, and the
 * objects concerned as `<Type>:<id>` strings (Scan, Worker, User, Task,
 * CleanupRun) with the specifics in `details`. A healthy system answers [].
 *
 * Every check is a fixed number of indexed queries whatever the number of
 * findings, and lists at most MAX_FINDINGS objects per check (oldest first).
 */
import type { Config } from "../../shared/config.ts";
import type { PrismaClient } from "../db/client.ts";
import type { CleanupRun } from "../generated/prisma/client.ts";
import { activeStatuses, claimedStatuses } from "../../shared/scan-status.ts";
import { freshWorkerWhere, staleWorkerCutoff, staleWorkerWhere, workerLiveness } from "./worker-staleness.ts";
import { readClaimsPause } from "./claims.ts";

export type DiagnosticCode =
  | "NO_LIVE_WORKER"
  | "STALE_WORKER"
  | "SCAN_RUNNING_PAST_THRESHOLD"
  | "USER_AT_QUOTA"
  | "CLEANUP_FAILING"
  | "CLAIMS_PAUSED";
export type DiagnosticSeverity = "CRITICAL" | "WARNING" | "INFO";

export interface Diagnostic {
  code: DiagnosticCode;
  severity: DiagnosticSeverity;
  summary: string;
  action: string;
  /** The objects concerned, as `<Type>:<id>`, the main one first. */
  subjects: string[];
  details: Record<string, unknown>;
}

export type DiagnosticsSettings = Pick<
  Config,
  | "diagnosticsQueuedSeconds"
  | "workerHeartbeatTtlSeconds"
  | "scanRunningStaleSeconds"
  | "maxActiveScansPerUser"
  | "cleanupIntervalSeconds"
  | "workerPruneSeconds"
>;

export interface DiagnosticsOptions {
  now?: Date;
  /** Since when this process has been scheduling cleanups: a fresh process gets two intervals before CLEANUP_FAILING. */
  cleanupScheduledSince?: Date;
}

/** Objects listed per check; the summary gives the full count. */
export const MAX_FINDINGS = 50;
/** A user's oldest active scans shown with USER_AT_QUOTA. */
const OLDEST_SCANS_SHOWN = 5;
/** The event stale-scan recovery writes when a long-running scan's task was found alive. */
export const TASK_ALIVE_EVENT_CODE = "STALE_SCAN_TASK_ALIVE";

const severityOrder: Record<DiagnosticSeverity, number> = { CRITICAL: 0, WARNING: 1, INFO: 2 };

export async function diagnose(
  deps: { prisma: PrismaClient; config: DiagnosticsSettings },
  options: DiagnosticsOptions = {},
): Promise<Diagnostic[]> {
  const now = options.now ?? new Date();
  const checks = [claimsPaused, noLiveWorker, staleWorkers, scansRunningPastThreshold, usersAtQuota, cleanupFailing];
  const found: Diagnostic[] = [];
  // One after the other: on PGlite queries serialize anyway, and on PostgreSQL this keeps one request to one connection.
  for (const check of checks) found.push(...(await check(deps, now, options)));
  return found.sort((a, b) => severityOrder[a.severity] - severityOrder[b.severity]);
}

type Check = (
  deps: { prisma: PrismaClient; config: DiagnosticsSettings },
  now: Date,
  options: DiagnosticsOptions,
) => Promise<Diagnostic[]>;

const secondsBefore = (now: Date, seconds: number) => new Date(now.getTime() - seconds * 1000);

/** "3h 12m", "45s": how long, for a summary. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const parts: [number, string][] = [
    [Math.floor(s / 86_400), "d"],
    [Math.floor((s % 86_400) / 3600), "h"],
    [Math.floor((s % 3600) / 60), "m"],
    [s % 60, "s"],
  ];
  // The largest unit and the one below it, when not zero: "3h 12m", "3h", "45s".
  const first = parts.findIndex(([value]) => value > 0);
  if (first < 0) return "0s";
  const shown = parts.slice(first, first + 2).filter(([value]) => value > 0);
  return shown.map(([value, unit]) => `${value}${unit}`).join(" ");
}

const ago = (now: Date, then: Date) => formatDuration((now.getTime() - then.getTime()) / 1000);
const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`;

/** An operator paused claiming (pauseClaims): the queue does not move, whatever the workers do. */
const claimsPaused: Check = async ({ prisma }, now) => {
  const pause = await readClaimsPause(prisma);
  if (!pause.paused) return [];
  const queuedScans = await prisma.scan.count({ where: { status: "QUEUED" } });
  const since = pause.since ?? now;
  return [
    {
      code: "CLAIMS_PAUSED",
      severity: "WARNING",
      summary:
        `Claiming is paused by ${pause.by ?? "an operator"} since ${ago(now, since)} ago ("${pause.reason ?? ""}"): ` +
        `${plural(queuedScans, "scan")} queued, and workers claim none until claims are resumed`,
      action:
        "When the maintenance or the incident is over, resume claiming (resumeClaims, or POST /v1/ops/claims/resume); " +
        "submissions are still accepted meanwhile, and scans already running go on.",
      subjects: [],
      details: { reason: pause.reason, by: pause.by, since: since.toISOString(), queuedScans },
    },
  ];
};

/** Queued scans waiting longer than VEGA_DIAGNOSTICS_QUEUED_SECONDS while no worker is live (registered, not stale). */
const noLiveWorker: Check = async ({ prisma, config }, now) => {
  const liveWorkers = await prisma.worker.count({ where: { deregisteredAt: null, ...freshWorkerWhere(staleWorkerCutoff(config, now)) } });
  if (liveWorkers > 0) return [];
  const waiting = { status: "QUEUED" as const, queuedAt: { lt: secondsBefore(now, config.diagnosticsQueuedSeconds) } };
  const queuedScans = await prisma.scan.count({ where: waiting });
  if (queuedScans === 0) return [];
  const oldest = await prisma.scan.findMany({
    where: waiting,
    orderBy: [{ queuedAt: "asc" }, { id: "asc" }],
    take: MAX_FINDINGS,
    select: { id: true, queuedAt: true },
  });
  const registeredWorkers = await prisma.worker.count({ where: { deregisteredAt: null } });
  return [
    {
      code: "NO_LIVE_WORKER",
      severity: "CRITICAL",
      summary:
        `${plural(queuedScans, "scan")} queued for more than ${formatDuration(config.diagnosticsQueuedSeconds)} ` +
        `(oldest ${ago(now, oldest[0].queuedAt)}) and no live worker: start or restart the worker service`,
      action:
        "Start or restart the worker service, then check GET /v1/ops/workers (Ops.workers) lists a worker whose " +
        "heartbeat is fresh (stale: false); the queued scans are claimed at its next poll.",
      subjects: oldest.map((scan) => `Scan:${scan.id}`),
      details: {
        queuedScans,
        oldestQueuedAt: oldest[0].queuedAt.toISOString(),
        queuedThresholdSeconds: config.diagnosticsQueuedSeconds,
        registeredStaleWorkers: registeredWorkers,
      },
    },
  ];
};

/** Registered workers whose heartbeat is older than the TTL, with the scans they still hold. */
const staleWorkers: Check = async ({ prisma, config }, now) => {
  const workers = await prisma.worker.findMany({
    where: { deregisteredAt: null, ...staleWorkerWhere(staleWorkerCutoff(config, now)) },
    orderBy: [{ lastHeartbeatAt: "asc" }, { id: "asc" }],
    take: MAX_FINDINGS,
    include: {
      scans: {
        where: { status: { in: [...claimedStatuses] } },
        orderBy: [{ queuedAt: "asc" }, { id: "asc" }],
        select: { id: true, status: true, taskId: true },
      },
    },
  });
  return workers.map((worker) => ({
    code: "STALE_WORKER",
    severity: "WARNING",
    summary:
      `Worker ${worker.name} (${worker.host}, pid ${worker.pid}) last sent a heartbeat ${ago(now, worker.lastHeartbeatAt)} ago ` +
      `(TTL ${formatDuration(config.workerHeartbeatTtlSeconds)}) and still holds ${plural(worker.scans.length, "scan")}`,
    action:
      "The worker process has likely crashed: restart the worker service. Its STARTING scans go back to the queue and " +
      "its RUNNING scans are checked by stale-scan recovery; the registry drops it after VEGA_WORKER_PRUNE_SECONDS " +
      `(${formatDuration(config.workerPruneSeconds)}).`,
    subjects: [`Worker:${worker.id}`, ...worker.scans.map((scan) => `Scan:${scan.id}`)],
    details: {
      workerId: worker.id,
      name: worker.name,
      host: worker.host,
      pid: worker.pid,
      lastHeartbeatAt: worker.lastHeartbeatAt.toISOString(),
      secondsSinceHeartbeat: workerLiveness(worker.lastHeartbeatAt, config.workerHeartbeatTtlSeconds, now).secondsSinceHeartbeat,
      scans: worker.scans,
    },
  }));
};

interface TaskAliveEvent {
  scanId: string;
  message: string;
  data: unknown;
  createdAt: Date;
}

/**
 * Scans RUNNING longer than VEGA_SCAN_RUNNING_STALE_SECONDS, with their task and
 * whether it was alive as last seen: there is no column for that, so the latest
 * STALE_SCAN_TASK_ALIVE warning event (written by stale-scan recovery) stands for it.
 */
const scansRunningPastThreshold: Check = async ({ prisma, config }, now) => {
  const scans = await prisma.scan.findMany({
    where: { status: "RUNNING", startedAt: { lt: secondsBefore(now, config.scanRunningStaleSeconds) } },
    orderBy: [{ startedAt: "asc" }, { id: "asc" }],
    take: MAX_FINDINGS,
    select: { id: true, ownerId: true, workerId: true, taskId: true, startedAt: true },
  });
  if (scans.length === 0) return [];
  const ids = scans.map((scan) => scan.id);
  const events = await prisma.$queryRaw<TaskAliveEvent[]>`
    SELECT DISTINCT ON ("scanId") "scanId", message, data, "createdAt"
    FROM "ScanEvent"
    WHERE "scanId" = ANY(${ids}::text[]) AND kind = 'WARNING' AND code = ${TASK_ALIVE_EVENT_CODE}
    ORDER BY "scanId", seq DESC`;
  const aliveByScan = new Map(events.map((event) => [event.scanId, event]));
  return scans.map((scan) => {
    const alive = aliveByScan.get(scan.id);
    const task = scan.taskId ? `task ${scan.taskId}` : "no task recorded";
    const liveness = alive
      ? `${task} was alive when last checked ${ago(now, new Date(alive.createdAt))} ago`
      : `${scan.taskId ? `${task} has not been reported alive` : task}`;
    return {
      code: "SCAN_RUNNING_PAST_THRESHOLD",
      severity: "WARNING",
      summary:
        `Scan ${scan.id} has been running for ${ago(now, scan.startedAt!)}, past VEGA_SCAN_RUNNING_STALE_SECONDS ` +
        `(${formatDuration(config.scanRunningStaleSeconds)}); ${liveness}`,
      action:
        "Check whether the runner task is still alive (ECS console or DescribeTasks for the task ARN) and read its " +
        "CloudWatch logs for a crash. A task that is gone is failed by stale-scan recovery; a task alive but stuck is " +
        "stopped by cancelling the scan (cancelScan).",
      subjects: [`Scan:${scan.id}`, ...(scan.taskId ? [`Task:${scan.taskId}`] : [])],
      details: {
        scanId: scan.id,
        ownerId: scan.ownerId,
        workerId: scan.workerId,
        taskId: scan.taskId,
        startedAt: scan.startedAt!.toISOString(),
        runningSeconds: Math.floor((now.getTime() - scan.startedAt!.getTime()) / 1000),
        taskAliveAsLastSeen: alive
          ? { at: new Date(alive.createdAt).toISOString(), message: alive.message, data: alive.data }
          : null,
      },
    };
  });
};

interface RankedScan {
  id: string;
  ownerId: string;
  status: string;
  queuedAt: Date;
}

/** Users at their active-scan quota, with their oldest active scans (the ones to cancel if stuck). */
const usersAtQuota: Check = async ({ prisma, config }) => {
  const limit = config.maxActiveScansPerUser;
  const users = await prisma.scan.groupBy({
    by: ["ownerId"],
    where: { status: { in: [...activeStatuses] } },
    having: { ownerId: { _count: { gte: limit } } },
    _count: { _all: true },
    orderBy: { ownerId: "asc" },
    take: MAX_FINDINGS,
  });
  if (users.length === 0) return [];
  const ownerIds = users.map((user) => user.ownerId);
  const oldest = await prisma.$queryRaw<RankedScan[]>`
    SELECT id, "ownerId", status::text AS status, "queuedAt"
    FROM (
      SELECT id, "ownerId", status, "queuedAt",
             row_number() OVER (PARTITION BY "ownerId" ORDER BY "queuedAt", id) AS rank
      FROM "Scan"
      WHERE "ownerId" = ANY(${ownerIds}::text[]) AND status::text = ANY(${[...activeStatuses]}::text[])
    ) ranked
    WHERE rank <= ${OLDEST_SCANS_SHOWN}
    ORDER BY "ownerId", rank`;
  return users.map((user) => {
    const scans = oldest.filter((scan) => scan.ownerId === user.ownerId);
    const active = user._count._all;
    return {
      code: "USER_AT_QUOTA",
      severity: "INFO",
      summary:
        `User ${user.ownerId} has ${plural(active, "active scan")} (queued, starting or running), at the limit of ${limit} ` +
        "(VEGA_MAX_ACTIVE_SCANS_PER_USER): new submissions are refused with QUOTA_EXCEEDED",
      action:
        "If their oldest scans are stuck, cancel them (cancelScan; Ops.userQuota lists them all) to free the quota; " +
        "if the load is legitimate, raise VEGA_MAX_ACTIVE_SCANS_PER_USER.",
      subjects: [`User:${user.ownerId}`, ...scans.map((scan) => `Scan:${scan.id}`)],
      details: {
        userId: user.ownerId,
        active,
        limit,
        oldestActiveScans: scans.map((scan) => ({ id: scan.id, status: scan.status, queuedAt: new Date(scan.queuedAt).toISOString() })),
      },
    };
  });
};

/**
 * The newest finished cleanup run failed; or, when the API schedules cleanups,
 * none succeeded or is running within two intervals.
 */
const cleanupFailing: Check = async ({ prisma, config }, now, options) => {
  const last = await prisma.cleanupRun.findFirst({
    where: { status: { not: "RUNNING" } },
    orderBy: [{ startedAt: "desc" }, { id: "desc" }],
  });
  if (last?.status === "FAILED") return [failedRun(last)];
  const intervalSeconds = config.cleanupIntervalSeconds;
  if (intervalSeconds === 0) return [];
  const windowStart = secondsBefore(now, 2 * intervalSeconds);
  // A process scheduling for less than two intervals has not had its chance yet.
  if (options.cleanupScheduledSince && options.cleanupScheduledSince > windowStart) return [];
  const recent = await prisma.cleanupRun.findFirst({
    where: { dryRun: false, status: { in: ["SUCCEEDED", "RUNNING"] }, startedAt: { gte: windowStart } },
    select: { id: true },
  });
  if (recent) return [];
  const lastGood = await prisma.cleanupRun.findFirst({
    where: { dryRun: false, status: "SUCCEEDED" },
    orderBy: [{ startedAt: "desc" }, { id: "desc" }],
    select: { id: true, startedAt: true },
  });
  return [
    {
      code: "CLEANUP_FAILING",
      severity: "WARNING",
      summary:
        `No cleanup has run in the last ${formatDuration(2 * intervalSeconds)} (two intervals of VEGA_CLEANUP_INTERVAL_SECONDS); ` +
        (lastGood ? `the last successful run started ${ago(now, lastGood.startedAt)} ago` : "none has ever succeeded"),
      action:
        "Check the API logs for \"scheduled cleanup failed\" and that the API runs with VEGA_CLEANUP_INTERVAL_SECONDS > 0; " +
        "run one by hand (triggerCleanup, POST /v1/ops/cleanup, or `vega maintenance cleanup`).",
      subjects: lastGood ? [`CleanupRun:${lastGood.id}`] : [],
      details: {
        intervalSeconds,
        lastSucceededRunId: lastGood?.id ?? null,
        lastSucceededAt: lastGood?.startedAt.toISOString() ?? null,
      },
    },
  ];
};

function failedRun(run: CleanupRun): Diagnostic {
  return {
    code: "CLEANUP_FAILING",
    severity: "WARNING",
    summary: `The last cleanup run (${run.trigger.toLowerCase()}${run.dryRun ? ", dry run" : ""}) failed: ${run.error ?? "no reason recorded"}`,
    action:
      "Read the run's error (Ops.cleanup.lastRun, GET /v1/ops/cleanup) and the API logs (\"cleanup job failed\"); fix the " +
      "cause (permissions on VEGA_ARTIFACT_DIR, the database) and run it again (triggerCleanup or POST /v1/ops/cleanup).",
    subjects: [`CleanupRun:${run.id}`],
    details: {
      cleanupRunId: run.id,
      trigger: run.trigger,
      dryRun: run.dryRun,
      startedAt: run.startedAt.toISOString(),
      finishedAt: run.finishedAt?.toISOString() ?? null,
      error: run.error,
      counts: run.counts,
    },
  };
}
