/**
 * The one door through which a Scan row is written: its creation with its
 * first event, single and bulk status changes, events appended without a
 * change, the runner's progress, the task id and the stale-scan warning.
 * Each status change is a compare-and-set on the current status (so two actors
 * can never both win), appends its event in the same transaction, and is
 * published on scanStateChanged by this module after commit, never by its
 * caller: work that must share a transaction with other rows (the quota lock,
 * a claim, a runner's findings) runs in `writeScans`, which publishes what the
 * transaction changed once it has committed.
 */
import type { PrismaClient } from "../db/client.ts";
import { conflict, notFound } from "../../shared/errors.ts";
import { Prisma, type Scan, type ScanEvent, type ScanStatus } from "../generated/prisma/client.ts";
import type { VegaPubSub } from "../pubsub.ts";
import { canTransition, finishedStatuses, legalSources } from "../../shared/scan-status.ts";

// The state machine and the status lists live on the ground floor (shared/scan-status.ts), so the
// schema, the worker and the runner read the same table; this module applies it.
export { activeStatuses, finishedStatuses, scanTransitions } from "../../shared/scan-status.ts";

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
  const allowedFrom = (request.from ?? legalSources(request.to)).filter((status) => canTransition(status, request.to));
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

function publishTransition(pubsub: VegaPubSub, result: TransitionResult) {
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
  return writeScans(deps, (writes) => writes.transition(request));
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

/** The Scan writes of one transaction, bound to it; status changes are published after it commits. */
export interface ScanWrites {
  /** The transaction, for the rows written with the scan's (findings, the artifact of a submission). */
  tx: Tx;
  /** One compare-and-set transition (transitionInTransaction); undefined when the scan moved on. */
  transition(request: TransitionRequest, now?: Date): Promise<TransitionResult | undefined>;
  /** Creates a QUEUED scan with its first event (seq 1, a STATE event from null to QUEUED). */
  createWithFirstEvent(data: NewScan, eventData?: Record<string, unknown>): Promise<TransitionResult>;
  /** Events that do not change the status, in order (appendScanEvents). */
  appendEvents(scanId: string, events: EventInput[], now?: Date): Promise<ScanEvent[]>;
  /** A runner's progress report: Scan.progress and lastHeartbeatAt (what the scan heartbeat TTL is measured from). */
  recordProgress(scanId: string, progress: Prisma.InputJsonObject, now: Date): Promise<{ workspaceId: string }>;
  /** The launched task's id of a scan already RUNNING (its runner reported first), with a LOG event. */
  recordLateTaskId(scanId: string, taskId: string): Promise<void>;
}

/** `retryOfId`: the scan this one retries (retryScan); its first event names it. */
export type NewScan = Pick<Prisma.ScanUncheckedCreateInput, "workspaceId" | "ownerId" | "label" | "sourceArtifactId" | "retryOfId">;

/**
 * Runs `work` in one transaction with the Scan writes bound to it, and
 * publishes the status changes it made once it has committed (none if it
 * rolled back). `open` is the transaction to run in: a plain one by default,
 * or one that holds a lock first (the submission's quota lock).
 */
export async function writeScans<T>(
  deps: { prisma: PrismaClient; pubsub: VegaPubSub },
  work: (writes: ScanWrites) => Promise<T>,
  open: (body: (tx: Tx) => Promise<T>) => Promise<T> = (body) => deps.prisma.$transaction(body),
): Promise<T> {
  let changed: TransitionResult[] = [];
  const result = await open((tx) => {
    // A body run again (a retried transaction) publishes only what its last run changed.
    changed = [];
    return work(scanWrites(tx, changed));
  });
  for (const transition of changed) publishTransition(deps.pubsub, transition);
  return result;
}

function scanWrites(tx: Tx, changed: TransitionResult[]): ScanWrites {
  return {
    tx,
    async transition(request, now) {
      const result = await transitionInTransaction(tx, request, now);
      if (result) changed.push(result);
      return result;
    },
    async createWithFirstEvent(data, eventData = {}) {
      const scan = await tx.scan.create({ data: { ...data, status: "QUEUED", lastEventSeq: 1 } });
      const event = await tx.scanEvent.create({
        data: {
          scanId: scan.id,
          seq: 1,
          kind: "STATE",
          code: "QUEUED",
          message: data.retryOfId ? `Scan is queued (a retry of ${data.retryOfId})` : "Scan is queued",
          data: { from: null, to: "QUEUED", ...(data.retryOfId ? { retryOf: data.retryOfId } : {}), ...eventData } as Prisma.InputJsonObject,
          createdAt: scan.createdAt,
        },
      });
      const created = { scan, from: null, event };
      changed.push(created);
      return created;
    },
    appendEvents: (scanId, events, now) => appendScanEvents(tx, scanId, events, now),
    recordProgress: (scanId, progress, now) =>
      tx.scan.update({ where: { id: scanId }, data: { lastHeartbeatAt: now, progress }, select: { workspaceId: true } }),
    async recordLateTaskId(scanId, taskId) {
      await tx.scan.update({ where: { id: scanId }, data: { taskId } });
      await appendScanEvents(tx, scanId, [
        { kind: "LOG", code: "TASK_STARTED", message: `Runner task ${taskId} started (its runner reported first)`, data: { taskId } },
      ]);
    },
  };
}

export interface ScanWarning {
  scanId: string;
  code: string;
  message: string;
  data?: Prisma.InputJsonValue;
}

/**
 * One WARNING event per RUNNING scan that has had none (a long-running scan
 * whose task lives): staleWarnedAt is the compare-and-set, so concurrent
 * recoverers write one warning. The status does not change: nothing is
 * published. Answers the ids of the scans warned now.
 */
export async function recordScanWarnings(deps: { prisma: PrismaClient }, warnings: ScanWarning[], now = new Date()): Promise<string[]> {
  if (warnings.length === 0) return [];
  const byId = new Map(warnings.map((warning) => [warning.scanId, warning]));
  return deps.prisma.$transaction(async (tx) => {
    // Locked in id order first, as transitionScansInBulk does, so that concurrent recoverers cannot deadlock.
    const locked = await tx.$queryRaw<{ id: string }[]>`
      SELECT id FROM "Scan" WHERE id = ANY(${[...byId.keys()]}::text[]) AND status = 'RUNNING' AND "staleWarnedAt" IS NULL
      ORDER BY id FOR UPDATE`;
    if (locked.length === 0) return [];
    const marked = await tx.$queryRaw<{ id: string; lastEventSeq: number }[]>`
      UPDATE "Scan" SET "staleWarnedAt" = ${now}, "lastEventSeq" = "lastEventSeq" + 1, "updatedAt" = ${now}
      WHERE id = ANY(${locked.map((row) => row.id)}::text[]) AND status = 'RUNNING' AND "staleWarnedAt" IS NULL
      RETURNING id, "lastEventSeq"`;
    if (marked.length === 0) return [];
    await tx.scanEvent.createMany({
      data: marked.map((row) => {
        const warning = byId.get(row.id)!;
        return { scanId: row.id, seq: row.lastEventSeq, kind: "WARNING", code: warning.code, message: warning.message, data: warning.data ?? Prisma.JsonNull, createdAt: now };
      }),
    });
    return marked.map((row) => row.id);
  });
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
  if (!canTransition(from, to)) throw new Error(`${from} → ${to} is not a scan transition`);
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
