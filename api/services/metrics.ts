/**
 * Prometheus metrics (GET /metrics). Two kinds, on purpose:
 *
 * - **State** (`vega_scans`, `vega_oldest_queued_scan_age_seconds`, `vega_workers`,
 *   `vega_worker_capacity`, `vega_worker_active_scans`, `vega_claims_paused`,
 *   `vega_cleanup_last_success_timestamp_seconds`) is read from the database at
 *   scrape time, in three fixed queries whatever the number of scans: every API
 *   replica answers the same values, so a dashboard may scrape any of them.
 * - **Events** (`*_total` counters and the two histograms) are counted by the
 *   process that saw them: the transitions it committed (scan-state.ts observers),
 *   the uploads it read, the refusals it answered, the cleanups it ran. With
 *   several replicas each reports its own; `sum()` in PromQL adds them up, as
 *   Prometheus expects of counters. A restart resets them (`rate()` handles it).
 *
 * Names follow Prometheus' conventions: base units in the name (`_seconds`,
 * `_bytes`), `_total` for counters, `vega_` as the namespace. Label values are
 * bounded sets (statuses, error codes, recovery codes); a launch failure's
 * free-text reason is cut to its first word group so that a platform message
 * cannot grow the series without bound.
 */
import { timingSafeEqual } from "node:crypto";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { bearerToken } from "../auth.ts";
import type { Deps, Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import type { Config } from "../../shared/config.ts";
import { errorCodeOf, forbidden, unauthenticated } from "../../shared/errors.ts";
import type { RecoveryCode } from "../../shared/recovery-rules.ts";
import type { VegaPubSub } from "../pubsub.ts";
import { readScanCounts, scanStatuses } from "./ops-scans.ts";
import { finishedStatuses, observeCommittedTransitions, type CommittedTransition } from "./scan-state.ts";
import { staleWorkerCutoff } from "./worker-staleness.ts";

/** From a second to eight hours: a scan waits seconds in a healthy queue and may run for hours. */
export const SCAN_SECONDS_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14_400, 28_800];

/** The codes stale-scan recovery moves scans with (STALE_SCAN_TASK_ALIVE is a warning, not a transition). */
const recoveryTransitionCodes: readonly RecoveryCode[] = [
  "RUNNER_EXITED",
  "RUNNER_HUNG",
  "SCAN_TIMEOUT",
  "STALE_SCAN",
  "ATTEMPTS_EXHAUSTED",
  "ORPHANED_CLAIM",
];

/** The label value of a finished scan without an error code (Prometheus treats "" as no label). */
const NO_ERROR_CODE = "none";

export type WorkerState = "live" | "stale" | "draining";
const workerStates: readonly WorkerState[] = ["live", "stale", "draining"];

export interface VegaMetrics {
  registry: Registry;
  /** A submission answered with an error before a scan was queued (quota, size, archive rules, authentication). */
  countSubmissionRefusal(error: unknown): void;
  countUploadBytes(bytes: number): void;
  countCleanupBytesFreed(bytes: number): void;
  /** A subscription group executed its selection set for an event (once for all its subscribers). */
  countSubscriptionExecution(): void;
  /** Stops observing transitions (the app closes). */
  close(): void;
  /** State read at scrape time (see scrapeMetrics). */
  state: {
    scans: Gauge<"status">;
    oldestQueuedAge: Gauge;
    workers: Gauge<"state">;
    workerCapacity: Gauge;
    workerActiveScans: Gauge;
    claimsPaused: Gauge;
    cleanupLastSuccess: Gauge;
  };
}

/** One registry per API process (per test server in tests), observing the transitions published through `pubsub`. */
export function createMetrics(pubsub: VegaPubSub): VegaMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const finished = new Counter({
    name: "vega_scans_finished_total",
    help: "Scans that reached SUCCEEDED, FAILED or CANCELLED in this process, by status and error code (none when it has none).",
    labelNames: ["status", "error_code"] as const,
    registers,
  });
  const queueWait = new Histogram({
    name: "vega_scan_queue_wait_seconds",
    help: "Time from queued to claimed by a worker, observed at each claim.",
    buckets: SCAN_SECONDS_BUCKETS,
    registers,
  });
  const duration = new Histogram({
    name: "vega_scan_duration_seconds",
    help: "Time from running to finished, by final status, for scans that started running.",
    labelNames: ["status"] as const,
    buckets: SCAN_SECONDS_BUCKETS,
    registers,
  });
  const launchFailures = new Counter({
    name: "vega_launch_failures_total",
    help: "Runner launches a worker reported failed (LAUNCH_FAILED), by the platform's reason.",
    labelNames: ["reason"] as const,
    registers,
  });
  const recoveries = new Counter({
    name: "vega_recoveries_total",
    help: "Scans stale-scan recovery failed or requeued, by recovery code.",
    labelNames: ["code"] as const,
    registers,
  });
  const refusals = new Counter({
    name: "vega_submissions_refused_total",
    help: "Scan submissions refused before a scan was queued, by error code.",
    labelNames: ["code"] as const,
    registers,
  });
  const uploadBytes = new Counter({ name: "vega_upload_bytes_total", help: "Bytes of source archives received by this process.", registers });
  const cleanupBytes = new Counter({
    name: "vega_cleanup_bytes_freed_total",
    help: "Bytes removed from the artifact store by cleanup runs (not dry runs) of this process.",
    registers,
  });

  const subscriptionExecutions = new Counter({
    name: "vega_subscription_executions_total",
    help: "Executions of a subscription's selection set for an event over WebSocket: one per group of subscribers with the same operation and visibility, not one per subscriber.",
    registers,
  });

  const state = {
    scans: new Gauge({ name: "vega_scans", help: "Scans in the database, by status.", labelNames: ["status"] as const, registers }),
    oldestQueuedAge: new Gauge({
      name: "vega_oldest_queued_scan_age_seconds",
      help: "How long the oldest QUEUED scan has waited (0 when none is queued).",
      registers,
    }),
    workers: new Gauge({
      name: "vega_workers",
      help: "Registered workers by state: live (heartbeat within VEGA_WORKER_HEARTBEAT_TTL_SECONDS), draining (live, taking no new scans), stale.",
      labelNames: ["state"] as const,
      registers,
    }),
    workerCapacity: new Gauge({ name: "vega_worker_capacity", help: "Scans the live workers can run at once (their capacities summed).", registers }),
    workerActiveScans: new Gauge({ name: "vega_worker_active_scans", help: "Scans the live workers report running (their last heartbeats summed).", registers }),
    claimsPaused: new Gauge({ name: "vega_claims_paused", help: "1 while an operator has paused claiming (pauseClaims), else 0.", registers }),
    cleanupLastSuccess: new Gauge({
      name: "vega_cleanup_last_success_timestamp_seconds",
      help: "When the last successful cleanup run (not a dry run) finished, in Unix seconds (0: never).",
      registers,
    }),
  };

  const stopObserving = observeCommittedTransitions(pubsub, (transition) => {
    observeTransition(transition, { finished, queueWait, duration, launchFailures, recoveries });
  });

  return {
    registry,
    state,
    countSubmissionRefusal(error) {
      refusals.inc({ code: errorCodeOf(error) ?? "INTERNAL_SERVER_ERROR" });
    },
    countUploadBytes(bytes) {
      uploadBytes.inc(bytes);
    },
    countCleanupBytesFreed(bytes) {
      cleanupBytes.inc(bytes);
    },
    countSubscriptionExecution() {
      subscriptionExecutions.inc();
    },
    close() {
      stopObserving();
      registry.clear();
    },
  };
}

const secondsBetween = (from: Date, to: Date) => Math.max(0, (to.getTime() - from.getTime()) / 1000);

function observeTransition(
  transition: CommittedTransition,
  metrics: {
    finished: Counter<"status" | "error_code">;
    queueWait: Histogram;
    duration: Histogram<"status">;
    launchFailures: Counter<"reason">;
    recoveries: Counter<"code">;
  },
) {
  if (transition.to === "STARTING" && transition.claimedAt) {
    metrics.queueWait.observe(secondsBetween(transition.queuedAt, transition.claimedAt));
  }
  if (transition.via === "bulk" && recoveryTransitionCodes.includes(transition.eventCode as RecoveryCode)) {
    metrics.recoveries.inc({ code: transition.eventCode! });
  }
  if (!finishedStatuses.includes(transition.to)) return;
  metrics.finished.inc({ status: transition.to, error_code: transition.errorCode ?? NO_ERROR_CODE });
  if (transition.startedAt && transition.finishedAt) {
    metrics.duration.observe({ status: transition.to }, secondsBetween(transition.startedAt, transition.finishedAt));
  }
  if (transition.errorCode === "LAUNCH_FAILED") metrics.launchFailures.inc({ reason: launchFailureReason(transition.eventData) });
}

/**
 * The reason label of a launch failure: ECS reasons look like `RESOURCE:MEMORY` or
 * `AGENT`; anything else a launcher says is cut to a short token of the same shape.
 */
export function launchFailureReason(eventData: unknown): string {
  const reason = eventData && typeof eventData === "object" && "reason" in eventData ? String((eventData as { reason: unknown }).reason) : "";
  const token = /^[A-Za-z0-9_:.-]{1,64}/.exec(reason.trim())?.[0];
  return token ?? "unknown";
}

interface WorkerStateRow {
  state: WorkerState;
  workers: number;
  capacity: number;
  activeScans: number;
}

interface HousekeepingRow {
  paused: boolean | null;
  lastCleanupSuccessAt: Date | null;
}

/**
 * Sets the state gauges from the database, then renders the registry. Three
 * queries whatever the size of the tables: scans by status (with the oldest
 * queued), workers by state, and the pause flag with the last good cleanup.
 */
export async function scrapeMetrics(deps: Pick<Deps, "prisma" | "metrics"> & { config: Pick<Config, "workerHeartbeatTtlSeconds"> }) {
  const now = new Date();
  const { state } = deps.metrics;
  const scans = await readScanCounts(deps.prisma, now);
  for (const status of scanStatuses) state.scans.set({ status }, scans.counts.get(status) ?? 0);
  state.oldestQueuedAge.set(scans.oldestQueuedAgeSeconds ?? 0);

  const workers = await readWorkerStates(deps.prisma, staleWorkerCutoff(deps.config, now));
  for (const workerState of workerStates) state.workers.set({ state: workerState }, workers.find((row) => row.state === workerState)?.workers ?? 0);
  const live = workers.filter((row) => row.state !== "stale");
  state.workerCapacity.set(live.reduce((sum, row) => sum + row.capacity, 0));
  state.workerActiveScans.set(live.reduce((sum, row) => sum + row.activeScans, 0));

  const [housekeeping] = await deps.prisma.$queryRaw<HousekeepingRow[]>`
    SELECT
      (SELECT paused FROM "ClaimsPause" WHERE id = 'claims') AS paused,
      (SELECT max("finishedAt") FROM "CleanupRun" WHERE status = 'SUCCEEDED' AND "dryRun" = false) AS "lastCleanupSuccessAt"`;
  state.claimsPaused.set(housekeeping.paused ? 1 : 0);
  state.cleanupLastSuccess.set(housekeeping.lastCleanupSuccessAt ? housekeeping.lastCleanupSuccessAt.getTime() / 1000 : 0);

  return { contentType: deps.metrics.registry.contentType, body: await deps.metrics.registry.metrics() };
}

/** Registered workers by state; stale as worker-staleness.ts draws it (a heartbeat strictly older than the cut-off). */
async function readWorkerStates(prisma: PrismaClient, cutoff: Date): Promise<WorkerStateRow[]> {
  return prisma.$queryRaw<WorkerStateRow[]>`
    SELECT state, count(*)::int AS workers, coalesce(sum(capacity), 0)::int AS capacity, coalesce(sum("activeScans"), 0)::int AS "activeScans"
    FROM (
      SELECT capacity, "activeScans",
             CASE WHEN "lastHeartbeatAt" < ${cutoff} THEN 'stale' WHEN draining THEN 'draining' ELSE 'live' END AS state
      FROM "Worker" WHERE "deregisteredAt" IS NULL
    ) registered
    GROUP BY state`;
}

/**
 * Who may scrape: a bearer equal to VEGA_METRICS_TOKEN (compared in constant
 * time), or a token of an operator. Throws UNAUTHENTICATED without a token,
 * FORBIDDEN for a valid token without the operator scope.
 */
export async function authorizeMetricsScrape(
  deps: Pick<Deps, "config">,
  authorization: string | undefined,
  authenticate: (authorization: string) => Promise<Viewer | null>,
): Promise<void> {
  const token = bearerToken(authorization);
  if (!token) throw unauthenticated("A bearer token is required: VEGA_METRICS_TOKEN or an operator's token");
  if (deps.config.metricsToken && sameSecret(token, deps.config.metricsToken)) return;
  const viewer = await authenticate(authorization!);
  if (!viewer?.isOperator) throw forbidden("GET /metrics needs VEGA_METRICS_TOKEN or an operator's token");
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
