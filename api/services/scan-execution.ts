/**
 * Running scans: workers claim queued scans and report their launch; runners
 * report progress (their heartbeat), events and findings for their one scan and
 * complete it, each with a token bound to one claim of it (one runner per
 * attempt). Every status change goes through scan-state.ts (compare-and-set,
 * event, publication).
 */
import { signToken, type Principal } from "../auth.ts";
import type { Deps, Viewer } from "../context.ts";
import { badUserInput, conflict, forbidden, notFound } from "../../shared/errors.ts";
import type { Prisma, Scan, ScanStatus, Severity } from "../generated/prisma/client.ts";
import type { ScanPhase, ScanProgressSnapshot } from "../pubsub.ts";
import { tryTransitionScan, writeScans, type EventInput, type ScanWrites, type TransitionResult } from "./scan-state.ts";
import { claimsArePaused } from "./claims.ts";
import { authorizeWorkerAccess } from "./workers.ts";
import { isClaimed } from "../../shared/scan-status.ts";

type ExecutionDeps = Pick<Deps, "prisma" | "pubsub" | "config" | "signingKey">;

/** Most scans one claim may take: a worker's capacity is small; this bounds a buggy or hostile one. */
export const MAX_CLAIM_BATCH = 50;
export const MAX_EVENTS_PER_BATCH = 500;
export const MAX_FINDINGS_PER_BATCH = 1000;

export interface ClaimedScan {
  scan: Scan;
  attempt: number;
  runnerToken: string;
}

/**
 * Moves up to `max` QUEUED scans, oldest first, to STARTING for this worker.
 * `FOR UPDATE SKIP LOCKED`: concurrent claims by any number of workers each
 * take different rows and never wait on each other. Each claim counts an
 * attempt and comes with a runner token bound to that one scan.
 */
export async function claimScans(deps: ExecutionDeps, viewer: Viewer, { workerId, max }: { workerId: string; max: number }): Promise<ClaimedScan[]> {
  const { principal } = viewer;
  authorizeWorkerAccess(principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  if (!Number.isInteger(max) || max < 0) throw badUserInput("max must be a non-negative integer");
  if (!deps.signingKey) throw conflict("Runner tokens need VEGA_JWT_SECRET: this API cannot mint them");
  const take = Math.min(max, MAX_CLAIM_BATCH);
  if (take === 0) return [];
  const results = await writeScans(deps, async ({ tx, transition }) => {
    const [worker] = await tx.$queryRaw<{ draining: boolean; deregisteredAt: Date | null }[]>`
      SELECT draining, "deregisteredAt" FROM "Worker" WHERE id = ${workerId}`;
    if (!worker) throw notFound("Worker", workerId);
    if (worker.deregisteredAt) throw conflict(`Worker ${workerId} is deregistered; register again`);
    if (worker.draining) return [];
    // Paused by an operator (pauseClaims): the worker keeps polling and gets nothing until resumeClaims.
    if (await claimsArePaused(tx)) return [];
    const rows = await tx.$queryRaw<{ id: string }[]>`
      SELECT id FROM "Scan" WHERE status = 'QUEUED'
      ORDER BY "queuedAt", id
      LIMIT ${take}
      FOR UPDATE SKIP LOCKED`;
    const claimed: TransitionResult[] = [];
    for (const { id } of rows) {
      const result = await transition({
        scanId: id,
        to: "STARTING",
        from: ["QUEUED"],
        set: { workerId, attempts: { increment: 1 } },
        event: { kind: "STATE", code: "STARTING", message: `Claimed by worker ${workerId}`, data: { workerId } },
      });
      if (result) claimed.push(result);
    }
    return claimed;
  });
  const claimedScans: ClaimedScan[] = [];
  for (const result of results) {
    claimedScans.push({
      scan: result.scan,
      attempt: result.scan.attempts,
      runnerToken: await signToken(deps.signingKey, {
        sub: `runner:${result.scan.id}`,
        scope: "runner",
        scanId: result.scan.id,
        attempt: result.scan.attempts,
        ttlSeconds: deps.config.runnerTokenTtlSeconds,
      }),
    });
  }
  return claimedScans;
}

/** The claiming worker's scan, or FORBIDDEN: one worker cannot report on another's claims. */
async function claimedBy(deps: ExecutionDeps, principal: Principal, scanId: string): Promise<Scan> {
  const scan = await deps.prisma.scan.findUnique({ where: { id: scanId } });
  if (!scan) throw notFound("Scan", scanId);
  if (!scan.workerId) throw conflict(`Scan ${scanId} is not claimed by a worker`, { status: scan.status });
  authorizeWorkerAccess(principal, scan.workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  return scan;
}

/**
 * STARTING → RUNNING with the launched task's id. When the runner's first report
 * came first (the scan already RUNNING under this claim), the task id is recorded
 * and the call succeeds. A scan cancelled, requeued or claimed again meanwhile
 * (`attempt` is not its claim any more) answers CONFLICT: stop the task.
 */
export async function reportScanStarted(
  deps: ExecutionDeps,
  viewer: Viewer,
  { scanId, taskId, attempt }: { scanId: string; taskId: string; attempt?: number | null },
) {
  const claimed = await claimedBy(deps, viewer.principal, scanId);
  if (taskId.trim() === "" || taskId.length > 512) throw badUserInput("taskId must be 1 to 512 characters");
  return writeScans(deps, async ({ tx, transition, recordLateTaskId }) => {
    const [row] = await tx.$queryRaw<{ status: ScanStatus; attempts: number; workerId: string | null; taskId: string | null }[]>`
      SELECT status, attempts, "workerId", "taskId" FROM "Scan" WHERE id = ${scanId} FOR UPDATE`;
    const claimHeld = row.workerId === claimed.workerId && (attempt == null || attempt === row.attempts);
    if (claimHeld && row.status === "STARTING") {
      const result = await transition({
        scanId,
        to: "RUNNING",
        from: ["STARTING"],
        set: { taskId },
        event: { kind: "STATE", code: "RUNNING", message: `Runner task ${taskId} started`, data: { taskId } },
      });
      return result!.scan;
    }
    if (claimHeld && row.status === "RUNNING" && (row.taskId === null || row.taskId === taskId)) {
      if (row.taskId === null) await recordLateTaskId(scanId, taskId);
      return tx.scan.findUniqueOrThrow({ where: { id: scanId } });
    }
    const reclaimed = attempt != null && attempt !== row.attempts ? ` and was claimed again (attempt ${row.attempts}, this launch is ${attempt})` : "";
    throw conflict(`Scan ${scanId} is ${row.status}${reclaimed}; it cannot become RUNNING with task ${taskId}`, {
      status: row.status,
      attempt: row.attempts,
    });
  });
}

/** STARTING → FAILED with LAUNCH_FAILED and the platform's reason (ECS `failures` after retries). */
export async function reportLaunchFailed(
  deps: ExecutionDeps,
  viewer: Viewer,
  { scanId, reason, detail }: { scanId: string; reason: string; detail?: string | null },
) {
  await claimedBy(deps, viewer.principal, scanId);
  const message = `Launch failed: ${reason}${detail ? ` (${detail})` : ""}`.slice(0, 2000);
  return transitionOrConflict(deps, {
    scanId,
    to: "FAILED",
    from: ["STARTING"],
    set: { errorCode: "LAUNCH_FAILED", errorMessage: message },
    event: { kind: "ERROR", code: "LAUNCH_FAILED", message, data: { reason, detail: detail ?? null } },
  });
}

async function transitionOrConflict(deps: ExecutionDeps, request: Parameters<typeof tryTransitionScan>[1]) {
  const result = await tryTransitionScan(deps, request);
  if (result) return result.scan;
  const current = await deps.prisma.scan.findUniqueOrThrow({ where: { id: request.scanId }, select: { status: true } });
  throw conflict(`Scan ${request.scanId} is ${current.status}; it cannot become ${request.to}`, { status: current.status });
}

function requireRunnerOf(principal: Principal, scanId: string) {
  if (principal.scope !== "runner" || principal.scanId !== scanId) {
    throw forbidden(`this runner token is bound to scan ${principal.scanId ?? "none"}, not ${scanId}`);
  }
  // Tokens minted before runner tokens carried their claim cannot tell one attempt from the next.
  if (principal.attempt === undefined) throw forbidden("this runner token names no claim attempt; it cannot report on a scan");
}

/**
 * One runner per attempt: a runner token acts on its own scan only, while the
 * scan is starting or running under the claim the token was minted for. Once
 * the scan has ended, gone back to the queue or been claimed again, CONFLICT.
 */
function refuseSupersededRunner(principal: Principal, scanId: string, scan: { status: ScanStatus; attempts: number }) {
  if (!isClaimed(scan.status)) {
    throw conflict(`Scan ${scanId} is ${scan.status}; reports for it are refused`, { status: scan.status });
  }
  if (scan.attempts !== principal.attempt) {
    throw conflict(
      `Scan ${scanId} was claimed again (attempt ${scan.attempts}); this runner's token is for attempt ${principal.attempt} and is refused`,
      { status: scan.status, attempt: scan.attempts },
    );
  }
}

/** The runner's scan, if its token's claim is still the scan's (artifact download). */
export async function currentRunnerScan(deps: Pick<Deps, "prisma">, viewer: Viewer, scanId: string): Promise<Scan> {
  const { principal } = viewer;
  requireRunnerOf(principal, scanId);
  const scan = await deps.prisma.scan.findUnique({ where: { id: scanId } });
  if (!scan) throw notFound("Scan", scanId);
  refuseSupersededRunner(principal, scanId, scan);
  return scan;
}

/**
 * Runs `work` under the scan's row lock, with the runner's claim checked there
 * (a report racing a cancellation or a re-claim loses). A STARTING scan becomes
 * RUNNING first: a report proves the runner runs, and it may come before its
 * worker's reportScanStarted.
 */
async function asCurrentRunner<T>(
  deps: ExecutionDeps,
  principal: Principal,
  scanId: string,
  work: (writes: ScanWrites) => Promise<T>,
): Promise<T> {
  requireRunnerOf(principal, scanId);
  return writeScans(deps, async (writes) => {
    const [row] = await writes.tx.$queryRaw<{ status: ScanStatus; attempts: number }[]>`
      SELECT status, attempts FROM "Scan" WHERE id = ${scanId} FOR UPDATE`;
    if (!row) throw notFound("Scan", scanId);
    refuseSupersededRunner(principal, scanId, row);
    if (row.status === "STARTING") {
      await writes.transition({
        scanId,
        to: "RUNNING",
        from: ["STARTING"],
        event: { kind: "STATE", code: "RUNNING", message: "The runner reported before its worker's launch report", data: { by: "runner" } },
      });
    }
    return work(writes);
  });
}

export interface ReportedEvent {
  kind: "PROGRESS" | "LOG" | "WARNING" | "ERROR";
  code?: string | null;
  message: string;
  data?: unknown;
}

export async function appendRunnerEvents(deps: ExecutionDeps, viewer: Viewer, { scanId, events }: { scanId: string; events: ReportedEvent[] }) {
  if (events.length > MAX_EVENTS_PER_BATCH) throw badUserInput(`At most ${MAX_EVENTS_PER_BATCH} events per batch`);
  const inputs: EventInput[] = events.map((event) => ({
    kind: event.kind,
    code: event.code?.slice(0, 100) ?? null,
    message: event.message.slice(0, 4000),
    data: (event.data ?? undefined) as Prisma.InputJsonValue | undefined,
  }));
  return asCurrentRunner(deps, viewer.principal, scanId, (writes) => writes.appendEvents(scanId, inputs));
}

export interface ReportedFinding {
  ruleId: string;
  severity: Severity;
  path: string;
  line: number;
  column?: number | null;
  endLine?: number | null;
  endColumn?: number | null;
  message: string;
  snippet?: string | null;
  fingerprint: string;
}

/**
 * A finding's end as stored: kept only when it is a position at or after its
 * start (an older runner sends none; a wrong one would make SARIF viewers
 * highlight nonsense, so it is dropped rather than refused).
 */
function endOf(finding: ReportedFinding): { endLine: number | null; endColumn: number | null } {
  const { line, endLine, endColumn } = finding;
  const column = finding.column ?? 1;
  if (endLine == null || endColumn == null || !Number.isInteger(endLine) || !Number.isInteger(endColumn) || endColumn < 1) return { endLine: null, endColumn: null };
  if (endLine < line || (endLine === line && endColumn <= column)) return { endLine: null, endColumn: null };
  return { endLine, endColumn };
}

/** Stores findings, skipping fingerprints the scan already has: a batch sent twice adds nothing. */
export async function addRunnerFindings(deps: ExecutionDeps, viewer: Viewer, { scanId, findings }: { scanId: string; findings: ReportedFinding[] }) {
  if (findings.length > MAX_FINDINGS_PER_BATCH) throw badUserInput(`At most ${MAX_FINDINGS_PER_BATCH} findings per batch`);
  for (const finding of findings) {
    if (!Number.isInteger(finding.line) || finding.line < 1) throw badUserInput(`Finding line must be a positive integer (${finding.path})`);
    if (finding.fingerprint.length === 0 || finding.fingerprint.length > 200) throw badUserInput("Finding fingerprint must be 1 to 200 characters");
  }
  const unique = [...new Map(findings.map((finding) => [finding.fingerprint, finding])).values()];
  return asCurrentRunner(deps, viewer.principal, scanId, async ({ tx }) => {
    const { count } = await tx.finding.createMany({
      data: unique.map((finding) => ({
        scanId,
        ruleId: finding.ruleId.slice(0, 200),
        severity: finding.severity,
        path: finding.path.slice(0, 4096),
        line: finding.line,
        column: finding.column ?? 1,
        ...endOf(finding),
        message: finding.message.slice(0, 2000),
        snippet: finding.snippet?.slice(0, 1000) ?? null,
        fingerprint: finding.fingerprint,
      })),
      skipDuplicates: true,
    });
    return { added: count, duplicates: findings.length - count };
  });
}

export interface ProgressReport {
  phase: ScanPhase;
  filesDone?: number | null;
  filesTotal?: number | null;
  bytesDone?: bigint | number | null;
  bytesTotal?: bigint | number | null;
  findings: number;
}

/** A count the report may leave out (null), else a non-negative safe integer. */
function countOf(name: string, value: bigint | number | null | undefined): number | null {
  if (value === null || value === undefined) return null;
  const count = Number(value);
  if (!Number.isSafeInteger(count) || count < 0) throw badUserInput(`${name} must be a non-negative integer below 2^53`, { field: name });
  return count;
}

function progressSnapshot(report: ProgressReport, now: Date): ScanProgressSnapshot {
  const snapshot: ScanProgressSnapshot = {
    phase: report.phase,
    filesDone: countOf("filesDone", report.filesDone),
    filesTotal: countOf("filesTotal", report.filesTotal),
    bytesDone: countOf("bytesDone", report.bytesDone),
    bytesTotal: countOf("bytesTotal", report.bytesTotal),
    findings: countOf("findings", report.findings) ?? 0,
    updatedAt: now.toISOString(),
  };
  for (const unit of ["files", "bytes"] as const) {
    const done = snapshot[`${unit}Done`];
    const total = snapshot[`${unit}Total`];
    if (done !== null && total !== null && done > total) throw badUserInput(`${unit}Done (${done}) exceeds ${unit}Total (${total})`);
  }
  return snapshot;
}

/**
 * The runner's heartbeat: its progress, kept as Scan.progress with
 * lastHeartbeatAt (which recovery measures the heartbeat TTL from), and
 * published on scanProgress.
 */
export async function reportScanProgress(deps: ExecutionDeps, viewer: Viewer, { scanId, report }: { scanId: string; report: ProgressReport }) {
  const now = new Date();
  const progress = progressSnapshot(report, now);
  const scan = await asCurrentRunner(deps, viewer.principal, scanId, (writes) => writes.recordProgress(scanId, { ...progress }, now));
  deps.pubsub.publish("scanProgress", { scanId, workspaceId: scan.workspaceId, progress });
  return progress;
}

export interface Completion {
  status: "SUCCEEDED" | "FAILED";
  errorCode?: string | null;
  errorMessage?: string | null;
}

/** The runner's last word: RUNNING (or STARTING, if it beat the worker's report: through RUNNING) → SUCCEEDED or FAILED. */
export async function completeScan(deps: ExecutionDeps, viewer: Viewer, { scanId, completion }: { scanId: string; completion: Completion }) {
  const failed = completion.status === "FAILED";
  const errorCode = failed ? (completion.errorCode?.slice(0, 100) ?? "SCAN_FAILED") : null;
  const errorMessage = failed ? (completion.errorMessage?.slice(0, 4000) ?? "The scan failed") : null;
  // asCurrentRunner holds the row lock and saw the scan RUNNING (or moved it there): the transition applies.
  const result = await asCurrentRunner(deps, viewer.principal, scanId, (writes) =>
    writes.transition({
      scanId,
      to: completion.status,
      from: ["RUNNING"],
      set: { errorCode, errorMessage },
      event: failed
        ? { kind: "ERROR", code: errorCode, message: errorMessage!, data: {} }
        : { kind: "STATE", code: "SUCCEEDED", message: "Scan finished" },
    }),
  );
  return result!.scan;
}

/** Of the given scans, those this worker holds (claimed by it), as they are now: the worker stops tasks of cancelled ones. */
export async function assignedScans(deps: ExecutionDeps, viewer: Viewer, { workerId, scanIds }: { workerId: string; scanIds: string[] }) {
  authorizeWorkerAccess(viewer.principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  if (scanIds.length > MAX_CLAIM_BATCH * 4) throw badUserInput(`At most ${MAX_CLAIM_BATCH * 4} scan ids`);
  return deps.prisma.scan.findMany({ where: { id: { in: scanIds }, workerId } });
}
