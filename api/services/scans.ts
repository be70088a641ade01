/**
 * Reading and cancelling scans, with the visibility rule: a user sees the scans
 * of the workspaces they belong to; operators see every scan. A scan the viewer
 * may not see answers exactly like a missing one, so ids cannot be probed.
 *
 * Reads go through the request's loaders (batched, cached per request), passed
 * as the last argument; the reads that need nothing else take them where other
 * services take their deps.
 */
import { filter as filterEvents, pipe } from "graphql-yoga";
import type { Deps, Viewer } from "../context.ts";
import type { ScanProgressPayload, ScanStateChangePayload } from "../pubsub.ts";
import { conflict, forbidden, notFound } from "../../shared/errors.ts";
import type { Prisma, Scan, ScanStatus, Severity } from "../generated/prisma/client.ts";
import { auditActions, recordAudit } from "./audit.ts";
import { eventsInOrder, findingsBySeverity, type Loaders } from "./loaders.ts";
import { prismaPage, readPage, toConnection, type Keyset, type PageArgs } from "./pagination.ts";
import { vegaVersion } from "../../shared/version.ts";
import { buildSarif, type SarifExecution } from "./sarif.ts";
import { activeStatuses } from "../../shared/scan-status.ts";
import { transitionScan } from "./scan-state.ts";
import { resolveMemberWorkspace } from "./users.ts";
import { maySee } from "./visibility.ts";

type ScanDeps = Pick<Deps, "prisma" | "pubsub">;

/** The visibility rule (visibility.ts) for a scan: a runner sees its own scan, whatever the state of its claim. */
function canSee(loaders: Loaders, viewer: Viewer | null, scan: Scan): Promise<boolean> {
  return maySee(
    viewer,
    { workspaceId: scan.workspaceId, ofRunnerScan: (scanId) => scanId === scan.id },
    async (userId, workspaceId) => (await loaders.memberWorkspaceIds.load(userId)).has(workspaceId),
  );
}

export async function getVisibleScan(loaders: Loaders, viewer: Viewer | null, scanId: string): Promise<Scan> {
  const scan = await loaders.scan.load(scanId);
  if (!scan || !(await canSee(loaders, viewer, scan))) throw notFound("Scan", scanId);
  return scan;
}

export interface ScanListArgs extends PageArgs {
  status?: ScanStatus[] | null;
  workspaceId?: string | null;
}

/** Newest first: the order of every list of scans (Query.scans, Ops.scans). */
export const newestScansFirst: Keyset<Scan> = {
  fields: ["createdAt", "id"],
  parts: ["date", "string"],
  order: "desc",
  keyOf: (scan) => [scan.createdAt, scan.id],
};

/** The viewer's scans, newest first: one workspace's if named, else every workspace they belong to. */
export async function listScans(deps: Pick<Deps, "prisma">, viewer: Viewer, args: ScanListArgs, loaders: Loaders) {
  const page = readPage(args, newestScansFirst);
  const where: Prisma.ScanWhereInput = {};
  if (args.workspaceId) {
    if (!viewer.isOperator) await resolveMemberWorkspace(deps, viewer, args.workspaceId);
    where.workspaceId = args.workspaceId;
  } else if (!viewer.isOperator) {
    where.workspaceId = { in: [...(await loaders.memberWorkspaceIds.load(viewer.user!.id))] };
  }
  if (args.status?.length) where.status = { in: args.status };
  const query = prismaPage<Prisma.ScanWhereInput, Prisma.ScanOrderByWithRelationInput>(page, newestScansFirst);
  const rows = await deps.prisma.scan.findMany({ where: { ...where, AND: query.where }, orderBy: query.orderBy, take: query.take });
  for (const row of rows) loaders.scan.prime(row.id, row);
  return toConnection(rows, page, newestScansFirst);
}

/** A page of a scan's events, in the order they happened (loaded for every scan of a page at once). */
export async function listScanEvents(loaders: Loaders, { scanId, ...args }: PageArgs & { scanId: string }) {
  const page = readPage(args, eventsInOrder);
  return toConnection(await loaders.events.load({ scanId, page }), page, eventsInOrder);
}

/** A page of a scan's findings, most severe first, optionally of some severities or one rule. */
export async function listScanFindings(
  loaders: Loaders,
  { scanId, ...args }: PageArgs & { scanId: string; severity?: Severity[] | null; ruleId?: string | null },
) {
  const page = readPage(args, findingsBySeverity);
  const rows = await loaders.findings.load({
    scanId,
    page,
    severities: args.severity ?? undefined,
    ruleId: args.ruleId ?? undefined,
  });
  return toConnection(rows, page, findingsBySeverity);
}

/**
 * Cancels a scan: its owner or an operator may. A queued scan is cancelled at
 * once; a starting or running one too, and the worker that holds it stops its
 * task when it sees the cancellation (the runner's later reports are refused).
 */
export async function cancelScan(deps: ScanDeps, viewer: Viewer, scanId: string, loaders: Loaders) {
  const scan = await getVisibleScan(loaders, viewer, scanId);
  const isOwner = viewer.user?.id === scan.ownerId;
  if (!isOwner && !viewer.isOperator) throw forbidden("only the scan's owner or an operator can cancel it");
  if (!activeStatuses.includes(scan.status)) {
    throw conflict(`Scan ${scanId} already finished (${scan.status}); there is nothing to cancel`, { status: scan.status });
  }
  const { scan: cancelled, from } = await transitionScan(deps, {
    scanId,
    to: "CANCELLED",
    from: activeStatuses,
    event: {
      kind: "STATE",
      code: "CANCELLED",
      message: isOwner ? "Cancelled by its owner" : `Cancelled by operator ${viewer.principal.sub}`,
      data: { by: viewer.principal.sub },
    },
  });
  if (!isOwner) {
    await recordAudit(deps.prisma, {
      actor: viewer.principal.sub,
      action: auditActions.scanCancel,
      target: `Scan:${scanId}`,
      details: { ownerId: scan.ownerId, workspaceId: scan.workspaceId, from },
    });
  }
  return cancelled;
}

/**
 * Opens a scanStateChanged stream after checking, once, that the caller may see
 * what they asked for: a scan or workspace they are not a member of answers
 * NOT_FOUND and no stream opens.
 */
export async function subscribeToScanStateChanges(
  deps: ScanDeps,
  viewer: Viewer,
  filter: { scanId?: string; workspaceId?: string },
  loaders: Loaders,
): Promise<AsyncIterable<ScanStateChangePayload>> {
  let visibleWorkspaces: Set<string> | undefined;
  if (filter.scanId) await getVisibleScan(loaders, viewer, filter.scanId);
  if (filter.workspaceId && !viewer.isOperator) await resolveMemberWorkspace(deps, viewer, filter.workspaceId);
  if (!filter.scanId && !filter.workspaceId && !viewer.isOperator) {
    visibleWorkspaces = await loaders.memberWorkspaceIds.load(viewer.user!.id);
  }
  return pipe(
    deps.pubsub.subscribe("scanStateChanged"),
    filterEvents(
      (change: ScanStateChangePayload) =>
        (!filter.scanId || change.scanId === filter.scanId) &&
        (!filter.workspaceId || change.workspaceId === filter.workspaceId) &&
        (!visibleWorkspaces || visibleWorkspaces.has(change.workspaceId)),
    ),
  );
}

/**
 * Every change into QUEUED, for workers (Subscription.scanQueued): the event
 * carries the scan's id, which is all a worker needs to poll at once, so no
 * database read per event or subscriber.
 */
export function subscribeToQueuedScans(deps: Pick<Deps, "pubsub">): AsyncIterable<ScanStateChangePayload> {
  return pipe(
    deps.pubsub.subscribe("scanStateChanged"),
    filterEvents((change: ScanStateChangePayload) => change.to === "QUEUED"),
  );
}

/** A scan as it is now, for a subscription's event: a subscription's loaders live as long as it does. */
export function currentVisibleScan(loaders: Loaders, viewer: Viewer | null, scanId: string): Promise<Scan> {
  loaders.scan.clear(scanId);
  return getVisibleScan(loaders, viewer, scanId);
}

/** Opens a scanProgress stream of one scan, after checking once that the caller may see it (NOT_FOUND otherwise). */
export async function subscribeToScanProgress(
  deps: Pick<Deps, "pubsub">,
  viewer: Viewer,
  scanId: string,
  loaders: Loaders,
): Promise<AsyncIterable<ScanProgressPayload>> {
  await getVisibleScan(loaders, viewer, scanId);
  return pipe(
    deps.pubsub.subscribe("scanProgress"),
    filterEvents((report: ScanProgressPayload) => report.scanId === scanId),
  );
}

export async function resolveScanStateChange(deps: Pick<Deps, "prisma">, change: ScanStateChangePayload, loaders: Loaders) {
  // Each delivery reads the scan as it is now: a subscriber sees current fields, not a stale copy.
  loaders.scan.clear(change.scanId);
  const [scan, event] = await Promise.all([
    loaders.scan.load(change.scanId),
    change.eventId ? deps.prisma.scanEvent.findUnique({ where: { id: change.eventId } }) : null,
  ]);
  if (!scan) throw notFound("Scan", change.scanId);
  return { scan, from: change.from, to: change.to, at: change.at, event };
}

/** GitHub code scanning takes at most 25,000 results per run; a scan with more is cut there. */
export const SARIF_MAX_RESULTS = 25_000;

/**
 * A scan's findings as a SARIF 2.1.0 log, for GitHub code scanning and other
 * SARIF consumers. Only a scan that ran to its end has one: code scanning
 * closes every alert a new upload does not repeat, so an empty report of a
 * queued, running or cancelled scan would close them all. A failed scan's
 * report holds what was found before it failed and says it failed.
 */
export async function exportSarif(deps: Pick<Deps, "prisma">, viewer: Viewer, scanId: string, loaders: Loaders) {
  const scan = await getVisibleScan(loaders, viewer, scanId);
  if (scan.status !== "SUCCEEDED" && scan.status !== "FAILED") {
    throw conflict(`Scan ${scanId} is ${scan.status}: its SARIF report exists once the scan has succeeded (or failed)`, {
      status: scan.status,
    });
  }
  const findings = await deps.prisma.finding.findMany({
    where: { scanId: scan.id },
    orderBy: [{ severity: "asc" }, { path: "asc" }, { line: "asc" }, { id: "asc" }],
    take: SARIF_MAX_RESULTS,
  });
  const execution: SarifExecution =
    scan.status === "SUCCEEDED"
      ? { successful: true }
      : { successful: false, errorCode: scan.errorCode ?? "FAILED", errorMessage: scan.errorMessage ?? "The scan failed" };
  return buildSarif({ scanId: scan.id, findings, toolVersion: vegaVersion, execution });
}
