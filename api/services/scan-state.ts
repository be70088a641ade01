/**
 * The one door through which a scan's status changes. Each change is a
 * compare-and-set on the current status (so two actors can never both win),
 * appends its event in the same transaction, and publishes scanStateChanged
 * after commit.
 */
import type { PrismaClient } from "../db/client.ts";
import { conflict, notFound } from "../../shared/errors.ts";
import { Prisma, type Scan, type ScanEvent, type ScanStatus } from "../generated/prisma/client.ts";
import type { VegaPubSub } from "../pubsub.ts";

/** The state machine, read in one glance: from each status, where a scan may go. */
export const scanTransitions: Record<ScanStatus, readonly ScanStatus[]> = {
  QUEUED: ["STARTING", "CANCELLED", "FAILED"],
  // STARTING → QUEUED: an orphaned claim (its worker died) goes back to the queue.
  STARTING: ["RUNNING", "QUEUED", "FAILED", "CANCELLED"],
  RUNNING: ["SUCCEEDED", "FAILED", "CANCELLED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
};

export const activeStatuses: readonly ScanStatus[] = ["QUEUED", "STARTING", "RUNNING"];
export const finishedStatuses: readonly ScanStatus[] = ["SUCCEEDED", "FAILED", "CANCELLED"];

export interface EventInput {
  kind: "STATE" | "PROGRESS" | "LOG" | "WARNING" | "ERROR";
  code?: string | null;
  message: string;
  data?: Prisma.InputJsonValue;
}

export interface TransitionRequest {
  scanId: string;
  to: ScanStatus;
  /** The statuses the caller expects the scan to be in; default: every status that may move to `to`. */
  from?: readonly ScanStatus[];
  /** The event recorded with the change (a STATE event named after `to` when omitted). */
  event?: EventInput;
  /** Columns set together with the status (taskId, workerId, errorCode...). */
  set?: Prisma.ScanUpdateManyMutationInput & { workerId?: string | null };
}

export interface TransitionResult {
  scan: Scan;
  /** Null for a scan's creation (QUEUED). */
  from: ScanStatus | null;
  event: ScanEvent;
}

type Tx = Prisma.TransactionClient;

const timestampsFor = (to: ScanStatus, now: Date): Prisma.ScanUpdateManyMutationInput => {
  switch (to) {
    case "QUEUED":
      return { queuedAt: now };
    case "STARTING":
      return { claimedAt: now };
    case "RUNNING":
      return { startedAt: now };
    default:
      return finishedStatuses.includes(to) ? { finishedAt: now } : {};
  }
};

/**
 * Applies one transition inside `tx`. Returns undefined when the scan is not in
 * an expected status (someone else moved it first): the caller decides whether
 * that is a conflict or nothing to do.
 */
export async function transitionInTransaction(tx: Tx, request: TransitionRequest, now = new Date()): Promise<TransitionResult | undefined> {
  const allowedFrom = (request.from ?? legalSources(request.to)).filter((status) => scanTransitions[status].includes(request.to));
  const { workerId, ...columns } = request.set ?? {};
  // Read the status we move from under the row lock that the update takes.
  const before = await tx.$queryRaw<{ status: ScanStatus }[]>`
    SELECT status FROM "Scan" WHERE id = ${request.scanId} AND status::text = ANY(${allowedFrom}::text[]) FOR UPDATE`;
  if (before.length === 0) return undefined;
  const scan = await tx.scan.update({
    where: { id: request.scanId },
    data: {
      ...columns,
      ...(workerId === undefined ? {} : { worker: workerId === null ? { disconnect: true } : { connect: { id: workerId } } }),
      ...timestampsFor(request.to, now),
      status: request.to,
      lastEventSeq: { increment: 1 },
    },
  });
  const event = await tx.scanEvent.create({
    data: {
      scanId: scan.id,
      seq: scan.lastEventSeq,
      kind: request.event?.kind ?? "STATE",
      code: request.event?.code ?? request.to,
      message: request.event?.message ?? `Scan is ${request.to.toLowerCase()}`,
      data: { from: before[0].status, to: request.to, ...(asObject(request.event?.data) ?? {}) },
      createdAt: now,
    },
  });
  return { scan, from: before[0].status, event };
}

function asObject(value: Prisma.InputJsonValue | undefined): Record<string, unknown> | undefined {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function legalSources(to: ScanStatus): ScanStatus[] {
  return (Object.keys(scanTransitions) as ScanStatus[]).filter((status) => scanTransitions[status].includes(to));
}

/**
 * A transition this process committed, as those who count them see it (metrics).
 * Delivered after commit, once per transition, only in the process that made it.
 */
export interface CommittedTransition {
  scanId: string;
  from: ScanStatus | null;
  to: ScanStatus;
  errorCode: string | null;
  queuedAt: Date;
  claimedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  eventCode: string | null;
  eventData: unknown;
  /** "bulk" for transitionScansInBulk (stale-scan recovery, bulk cancel). */
  via: "one" | "bulk";
}

export type TransitionObserver = (transition: CommittedTransition) => void;

// Keyed by the process's pubsub, which every transition already receives: each API
// process (and each test server in one test process) observes its own transitions only.
const observersByPubSub = new WeakMap<VegaPubSub, Set<TransitionObserver>>();

/** Calls `observer` after every transition published through `pubsub`; answers the function that stops it. */
export function observeCommittedTransitions(pubsub: VegaPubSub, observer: TransitionObserver): () => void {
  let observers = observersByPubSub.get(pubsub);
  if (!observers) observersByPubSub.set(pubsub, (observers = new Set()));
  observers.add(observer);
  return () => observers.delete(observer);
}

function notifyObservers(pubsub: VegaPubSub, transition: CommittedTransition) {
  for (const observer of observersByPubSub.get(pubsub) ?? []) observer(transition);
}

export function publishTransition(pubsub: VegaPubSub, result: TransitionResult) {
  notifyObservers(pubsub, {
    scanId: result.scan.id,
    from: result.from,
    to: result.scan.status,
    errorCode: result.scan.errorCode,
    queuedAt: result.scan.queuedAt,
    claimedAt: result.scan.claimedAt,
    startedAt: result.scan.startedAt,
    finishedAt: result.scan.finishedAt,
    eventCode: result.event.code,
    eventData: result.event.data,
    via: "one",
  });
  pubsub.publish("scanStateChanged", {
    scanId: result.scan.id,
    workspaceId: result.scan.workspaceId,
    from: result.from,
    to: result.scan.status,
    at: result.event.createdAt.toISOString(),
    eventId: result.event.id,
  });
}

/**
 * Moves a scan to `to` if it is in one of the expected statuses; throws CONFLICT
 * (naming the current status) otherwise, NOT_FOUND if there is no such scan.
 */
export async function transitionScan(
  deps: { prisma: PrismaClient; pubsub: VegaPubSub },
  request: TransitionRequest,
): Promise<TransitionResult> {
  const result = await tryTransitionScan(deps, request);
  if (result) return result;
  const current = await deps.prisma.scan.findUnique({ where: { id: request.scanId }, select: { status: true } });
  if (!current) throw notFound("Scan", request.scanId);
  throw conflict(`Scan ${request.scanId} is ${current.status}; it cannot become ${request.to}`, {
    status: current.status,
    requested: request.to,
  });
}

/** Like transitionScan, but answers undefined instead of throwing when the scan moved on. */
export async function tryTransitionScan(
  deps: { prisma: PrismaClient; pubsub: VegaPubSub },
  request: TransitionRequest,
): Promise<TransitionResult | undefined> {
  const result = await deps.prisma.$transaction((tx) => transitionInTransaction(tx, request));
  if (result) publishTransition(deps.pubsub, result);
  return result;
}

/** Appends events that do not change the status (progress, logs, warnings), in order. */
export async function appendScanEvents(tx: Tx, scanId: string, events: EventInput[], now = new Date()): Promise<ScanEvent[]> {
  if (events.length === 0) return [];
  const scan = await tx.scan.update({
    where: { id: scanId },
    data: { lastEventSeq: { increment: events.length } },
    select: { lastEventSeq: true },
  });
  const firstSeq = scan.lastEventSeq - events.length + 1;
  const rows = events.map((event, index) => ({
    scanId,
    seq: firstSeq + index,
    kind: event.kind,
    code: event.code ?? null,
    message: event.message,
    data: event.data ?? Prisma.JsonNull,
    createdAt: now,
  }));
  return tx.scanEvent.createManyAndReturn({ data: rows });
}

export interface BulkTransitionItem {
  scanId: string;
  errorCode?: string | null;
  errorMessage?: string | null;
  event: EventInput;
}

/**
 * The same compare-and-set for many scans at once (recovery of thousands of
 * stale scans): one UPDATE ... WHERE status = from over all of them, then
 * their events. A scan another actor moved first is skipped, so concurrent
 * recoverers still produce one transition and one event per scan.
 */
export async function transitionScansInBulk(
  deps: { prisma: PrismaClient; pubsub: VegaPubSub },
  from: ScanStatus,
  to: ScanStatus,
  items: BulkTransitionItem[],
  now = new Date(),
): Promise<{ scanId: string; event: ScanEvent }[]> {
  if (items.length === 0) return [];
  if (!scanTransitions[from].includes(to)) throw new Error(`${from} → ${to} is not a scan transition`);
  const byId = new Map(items.map((item) => [item.scanId, item]));
  const finished = finishedStatuses.includes(to);
  const requeued = to === "QUEUED";
  const results = await deps.prisma.$transaction(async (tx) => {
    // Row locks taken in id order before the UPDATE: an UPDATE locks rows in whatever order its plan
    // visits them, so two recoverers with the same scans in another order (or planned otherwise)
    // would deadlock (PostgreSQL 40P01). Rows another actor moved first are not locked, not updated.
    const locked = await tx.$queryRaw<{ id: string }[]>`
      SELECT id FROM "Scan" WHERE id = ANY(${[...byId.keys()]}::text[]) AND status = ${from}::"ScanStatus" ORDER BY id FOR UPDATE`;
    if (locked.length === 0) return [];
    const ids = locked.map((row) => row.id);
    const codes = ids.map((id) => byId.get(id)!.errorCode ?? null);
    const messages = ids.map((id) => byId.get(id)!.errorMessage ?? null);
    const moved = await tx.$queryRaw<MovedRow[]>`
      UPDATE "Scan" AS s SET
        status = ${to}::"ScanStatus",
        "lastEventSeq" = s."lastEventSeq" + 1,
        "updatedAt" = ${now},
        "finishedAt" = CASE WHEN ${finished} THEN ${now}::timestamp ELSE s."finishedAt" END,
        "queuedAt" = CASE WHEN ${requeued} THEN ${now}::timestamp ELSE s."queuedAt" END,
        "workerId" = CASE WHEN ${requeued} THEN NULL ELSE s."workerId" END,
        "taskId" = CASE WHEN ${requeued} THEN NULL ELSE s."taskId" END,
        "errorCode" = COALESCE(d.code, s."errorCode"),
        "errorMessage" = COALESCE(d.message, s."errorMessage")
      FROM unnest(${ids}::text[], ${codes}::text[], ${messages}::text[]) AS d(id, code, message)
      WHERE s.id = d.id AND s.status = ${from}::"ScanStatus"
      RETURNING s.id, s."workspaceId", s."lastEventSeq", s."errorCode", s."queuedAt", s."claimedAt", s."startedAt", s."finishedAt"`;
    if (moved.length === 0) return [];
    const events = await tx.scanEvent.createManyAndReturn({
      data: moved.map((row) => {
        const event = byId.get(row.id)!.event;
        return {
          scanId: row.id,
          seq: row.lastEventSeq,
          kind: event.kind,
          code: event.code ?? to,
          message: event.message,
          data: { from, to, ...(asObject(event.data) ?? {}) },
          createdAt: now,
        };
      }),
    });
    const rows = new Map(moved.map((row) => [row.id, row]));
    return events.map((event) => ({ scanId: event.scanId, workspaceId: rows.get(event.scanId)!.workspaceId, row: rows.get(event.scanId)!, event }));
  });
  for (const result of results) {
    notifyObservers(deps.pubsub, {
      scanId: result.scanId,
      from,
      to,
      errorCode: result.row.errorCode,
      queuedAt: result.row.queuedAt,
      claimedAt: result.row.claimedAt,
      startedAt: result.row.startedAt,
      finishedAt: result.row.finishedAt,
      eventCode: result.event.code,
      eventData: result.event.data,
      via: "bulk",
    });
    deps.pubsub.publish("scanStateChanged", {
      scanId: result.scanId,
      workspaceId: result.workspaceId,
      from,
      to,
      at: result.event.createdAt.toISOString(),
      eventId: result.event.id,
    });
  }
  return results.map(({ scanId, event }) => ({ scanId, event }));
}

interface MovedRow {
  id: string;
  workspaceId: string;
  lastEventSeq: number;
  errorCode: string | null;
  queuedAt: Date;
  claimedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
}
