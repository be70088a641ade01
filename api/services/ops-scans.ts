/**
 * What operators do with scans in bulk: search every scan (Ops.scans), the
 * queue's summary (Ops.summary: counts, oldest queued, throughput per 5 minutes
 * over 24 hours) and bulk cancel (Mutation.cancelScans). Every function here
 * is for operators only; a bulk cancel is audited.
 */
import type { Deps, Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import { badUserInput, forbidden } from "../../shared/errors.ts";
import type { Prisma, ScanStatus } from "../generated/prisma/client.ts";
import { recordAudit } from "./audit.ts";
import { prismaPage, readPage, toConnection, type PageArgs } from "./pagination.ts";
import { newestScansFirst } from "./scans.ts";
import { activeStatuses, finishedStatuses, scanTransitions, transitionScansInBulk } from "./scan-state.ts";

export const scanStatuses = Object.keys(scanTransitions) as ScanStatus[];

/** Operator actions on scans, as written to the audit log. */
export const opsScanAuditActions = {
  cancelBulk: "scan.cancelBulk",
  retry: "scan.retry",
} as const;

export function requireOperator(viewer: Viewer, what: string) {
  if (!viewer.isOperator) throw forbidden(`${what} is for operators (members of a group in VEGA_OPS_GROUPS)`);
}

export interface ScanCounts {
  counts: Map<ScanStatus, number>;
  /** Null when no scan is queued. */
  oldestQueuedAgeSeconds: number | null;
}

/**
 * Scans by status and the oldest queued one, in one query (an aggregate over the
 * status indexes): what /metrics and Ops.summary report, read alike.
 */
export async function readScanCounts(prisma: PrismaClient, now = new Date()): Promise<ScanCounts> {
  const rows = await prisma.$queryRaw<{ status: ScanStatus; count: number; oldestQueuedAt: Date | null }[]>`
    SELECT status::text AS status, count(*)::int AS count,
           min("queuedAt") FILTER (WHERE status = 'QUEUED') AS "oldestQueuedAt"
    FROM "Scan" GROUP BY status`;
  const oldest = rows.find((row) => row.status === "QUEUED")?.oldestQueuedAt ?? null;
  return {
    counts: new Map(rows.map((row) => [row.status, row.count])),
    oldestQueuedAgeSeconds: oldest ? Math.max(0, (now.getTime() - oldest.getTime()) / 1000) : null,
  };
}

export interface OpsScanFilter {
  status?: ScanStatus[] | null;
  userId?: string | null;
  workspaceId?: string | null;
  workerId?: string | null;
  errorCode?: string | null;
  createdAfter?: Date | null;
  createdBefore?: Date | null;
}

function whereOf(filter: OpsScanFilter | null | undefined): Prisma.ScanWhereInput {
  const where: Prisma.ScanWhereInput = {};
  if (!filter) return where;
  if (filter.status?.length) where.status = { in: filter.status };
  if (filter.userId) where.ownerId = filter.userId;
  if (filter.workspaceId) where.workspaceId = filter.workspaceId;
  if (filter.workerId) where.workerId = filter.workerId;
  if (filter.errorCode) where.errorCode = filter.errorCode;
  if (filter.createdAfter || filter.createdBefore) {
    where.createdAt = { ...(filter.createdAfter ? { gte: filter.createdAfter } : {}), ...(filter.createdBefore ? { lt: filter.createdBefore } : {}) };
  }
  return where;
}

/** Ops.scans: every scan matching the filter, newest first, as a connection (the one keyset module). */
export async function searchScans(deps: Pick<Deps, "prisma">, viewer: Viewer, args: PageArgs & { filter?: OpsScanFilter | null }) {
  requireOperator(viewer, "Ops.scans");
  const page = readPage(args, newestScansFirst);
  const query = prismaPage<Prisma.ScanWhereInput, Prisma.ScanOrderByWithRelationInput>(page, newestScansFirst);
  const rows = await deps.prisma.scan.findMany({
    where: { ...whereOf(args.filter), AND: query.where },
    orderBy: query.orderBy,
    take: query.take,
  });
  return toConnection(rows, page, newestScansFirst);
}

/** Throughput buckets of Ops.summary: 5 minutes each, 288 of them (24 hours), the last one holding now. */
export const THROUGHPUT_BUCKET_SECONDS = 300;
export const THROUGHPUT_BUCKETS = 288;

export interface ThroughputBucket {
  bucketStart: Date;
  /** Scans that reached SUCCEEDED, FAILED or CANCELLED in the bucket. */
  finished: number;
  /** Of those, the FAILED ones. */
  failed: number;
}

export interface OpsSummary {
  counts: { status: ScanStatus; count: number }[];
  oldestQueuedAgeSeconds: number | null;
  throughput: ThroughputBucket[];
}

/** Ops.summary: two queries, whatever the number of scans (the second reads the last 24 h through the (status, finishedAt) index). */
export async function summarizeScans(deps: Pick<Deps, "prisma">, viewer: Viewer, args: { now?: Date } = {}): Promise<OpsSummary> {
  requireOperator(viewer, "Ops.summary");
  const now = args.now ?? new Date();
  const { counts, oldestQueuedAgeSeconds } = await readScanCounts(deps.prisma, now);
  const bucketMs = THROUGHPUT_BUCKET_SECONDS * 1000;
  const firstBucket = Math.floor(now.getTime() / bucketMs) - (THROUGHPUT_BUCKETS - 1);
  const since = new Date(firstBucket * bucketMs);
  // Timestamps are stored as UTC wall time (timestamp(3)); extract(epoch) reads them as UTC.
  const rows = await deps.prisma.$queryRaw<{ bucket: bigint | number; finished: number; failed: number }[]>`
    SELECT floor(extract(epoch FROM "finishedAt") / ${THROUGHPUT_BUCKET_SECONDS})::bigint AS bucket,
           count(*)::int AS finished,
           (count(*) FILTER (WHERE status = 'FAILED'))::int AS failed
    FROM "Scan"
    WHERE status::text = ANY(${[...finishedStatuses]}::text[]) AND "finishedAt" >= ${since}
    GROUP BY bucket`;
  const byBucket = new Map(rows.map((row) => [Number(row.bucket), row]));
  const throughput = Array.from({ length: THROUGHPUT_BUCKETS }, (_, index) => {
    const bucket = firstBucket + index;
    const row = byBucket.get(bucket);
    return { bucketStart: new Date(bucket * bucketMs), finished: row?.finished ?? 0, failed: row?.failed ?? 0 };
  });
  return {
    counts: scanStatuses.map((status) => ({ status, count: counts.get(status) ?? 0 })),
    oldestQueuedAgeSeconds,
    throughput,
  };
}

export interface ScanCancelFilter {
  userId?: string | null;
  workspaceId?: string | null;
  status?: ScanStatus[] | null;
  olderThanSeconds?: number | null;
}

/** Scans one cancelScans call cancels at most (oldest first); the answer's count tells whether to call again. */
export const MAX_BULK_CANCEL = 1000;

/** Scan ids kept in the audit entry of a bulk cancel (the count is always there). */
const AUDITED_SCAN_IDS = 100;

/**
 * Mutation.cancelScans: cancels the active scans matching every given
 * criterion (at least one), oldest first, up to MAX_BULK_CANCEL. Each goes
 * through the one door (compare-and-set from the status it was seen in, its
 * CANCELLED event, scanStateChanged); the workers holding starting or running
 * ones stop their tasks as for a single cancel. The quota they held is free
 * when this answers.
 */
export async function cancelScansInBulk(deps: Pick<Deps, "prisma" | "pubsub">, viewer: Viewer, filter: ScanCancelFilter) {
  requireOperator(viewer, "cancelScans");
  const criteria = [filter.userId, filter.workspaceId, filter.status?.length ? filter.status : null, filter.olderThanSeconds].filter(
    (value) => value !== null && value !== undefined && value !== "",
  );
  if (criteria.length === 0) {
    throw badUserInput("cancelScans needs at least one criterion (userId, workspaceId, status, olderThanSeconds): it will not cancel every scan");
  }
  const statuses = filter.status?.length ? filter.status : [...activeStatuses];
  const finished = statuses.filter((status) => !activeStatuses.includes(status));
  if (finished.length > 0) {
    throw badUserInput(`Only active scans can be cancelled (${activeStatuses.join(", ")}), not ${finished.join(", ")}`, { status: finished });
  }
  if (filter.olderThanSeconds != null && (!Number.isInteger(filter.olderThanSeconds) || filter.olderThanSeconds < 0)) {
    throw badUserInput("olderThanSeconds must be a non-negative integer", { field: "olderThanSeconds" });
  }
  const where: Prisma.ScanWhereInput = { status: { in: statuses } };
  if (filter.userId) where.ownerId = filter.userId;
  if (filter.workspaceId) where.workspaceId = filter.workspaceId;
  if (filter.olderThanSeconds != null) where.createdAt = { lt: new Date(Date.now() - filter.olderThanSeconds * 1000) };
  const matching = await deps.prisma.scan.findMany({
    where,
    orderBy: [{ createdAt: "asc" }, { id: "asc" }],
    take: MAX_BULK_CANCEL,
    select: { id: true, status: true },
  });

  const by = viewer.principal.sub;
  const cancelled: string[] = [];
  // One compare-and-set per status the scans were seen in: a scan that moved meanwhile is skipped, not forced.
  for (const from of activeStatuses) {
    const items = matching
      .filter((scan) => scan.status === from)
      .map((scan) => ({
        scanId: scan.id,
        event: { kind: "STATE" as const, code: "CANCELLED", message: `Cancelled by operator ${by} (bulk cancel)`, data: { by, bulk: true } },
      }));
    const moved = await transitionScansInBulk(deps, from, "CANCELLED", items);
    cancelled.push(...moved.map((result) => result.scanId));
  }
  await recordAudit(deps.prisma, {
    actor: by,
    action: opsScanAuditActions.cancelBulk,
    target: null,
    details: {
      filter: { ...filter, status: filter.status ?? null },
      cancelled: cancelled.length,
      scanIds: cancelled.slice(0, AUDITED_SCAN_IDS),
    },
  });
  return { cancelled: cancelled.length, scanIds: cancelled };
}
