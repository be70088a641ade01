/**
 * The worker registry: registration, heartbeats, deregistration and the
 * operator's list. Every change publishes a `workerEvent` whose payload is a
 * JSON-safe snapshot of the row, so subscribers are served without reading the
 * database again (and the payload crosses Redis unchanged).
 *
 * Who may act on a worker row (`authorizeWorkerAccess`):
 * - `registerWorker` answers a worker-session token (vega_scope=worker,
 *   vega_worker_id=<the new id>) minted with this API's HS256 key. Heartbeats
 *   and deregistration need a token bound to that very id; a token bound to
 *   another id, or the deployment's unbound worker token, is FORBIDDEN.
 * - When this API cannot mint tokens (VEGA_JWT_JWKS_URL: tokens come from the
 *   issuer), registration answers no token, and an unbound worker token may act
 *   on any worker: the issuer's worker scope is then the trust boundary (a
 *   holder of it may register workers anyway). A bound token stays bound.
 */
import type { Principal } from "../auth.ts";
import { signToken } from "../auth.ts";
import type { Config } from "../../shared/config.ts";
import type { Deps, Viewer } from "../context.ts";
import { badUserInput, conflict, forbidden, notFound } from "../../shared/errors.ts";
import type { Worker } from "../generated/prisma/client.ts";
import type { VegaPubSub, WorkerEventKind, WorkerSnapshot } from "../pubsub.ts";
import { freshWorkerWhere, staleWorkerCutoff } from "./worker-staleness.ts";

/**
 * Lifetime of the worker-session token registerWorker answers. A worker runs
 * for days; when the session expires its heartbeat answers UNAUTHENTICATED and
 * the worker registers again with its deployment token.
 */
export const WORKER_SESSION_TTL_SECONDS = 30 * 24 * 3600;

export interface WorkerRegistration {
  name: string;
  host: string;
  pid: number;
  version: string;
  capacity: number;
}

export interface HeartbeatReport {
  activeScans: number;
  draining: boolean;
}

type RegistryDeps = Pick<Deps, "prisma" | "pubsub" | "signingKey">;

export function workerSnapshot(worker: Worker): WorkerSnapshot {
  return {
    id: worker.id,
    name: worker.name,
    host: worker.host,
    pid: worker.pid,
    version: worker.version,
    capacity: worker.capacity,
    activeScans: worker.activeScans,
    draining: worker.draining,
    startedAt: worker.startedAt.toISOString(),
    lastHeartbeatAt: worker.lastHeartbeatAt.toISOString(),
    deregisteredAt: worker.deregisteredAt?.toISOString() ?? null,
  };
}

/** Publishes a registry event and answers the snapshot it carried. */
export function publishWorkerEvent(pubsub: VegaPubSub, kind: WorkerEventKind, worker: Worker, at: Date): WorkerSnapshot {
  const snapshot = workerSnapshot(worker);
  pubsub.publish("workerEvent", { kind, at: at.toISOString(), worker: snapshot });
  return snapshot;
}

// The staleness rule lives in worker-staleness.ts; the registry's readers keep importing it from here.
export { workerLiveness } from "./worker-staleness.ts";

const MAX_TEXT = 200;

function validateRegistration(input: WorkerRegistration): WorkerRegistration {
  const text = (field: keyof WorkerRegistration, value: string) => {
    const trimmed = value.trim();
    if (trimmed === "" || trimmed.length > MAX_TEXT) throw badUserInput(`${field} must be 1 to ${MAX_TEXT} characters`, { field });
    return trimmed;
  };
  if (!Number.isInteger(input.pid) || input.pid < 0) throw badUserInput("pid must be a non-negative integer", { field: "pid" });
  if (!Number.isInteger(input.capacity) || input.capacity < 1) throw badUserInput("capacity must be at least 1", { field: "capacity" });
  return {
    name: text("name", input.name),
    host: text("host", input.host),
    pid: input.pid,
    version: text("version", input.version),
    capacity: input.capacity,
  };
}

/** Adds a worker to the registry and mints the session token it uses from then on (none in JWKS mode). */
export async function registerWorker(
  deps: RegistryDeps,
  viewer: Viewer,
  input: WorkerRegistration,
): Promise<{ worker: WorkerSnapshot; token: string | null }> {
  const registration = validateRegistration(input);
  const now = new Date();
  const worker = await deps.prisma.worker.create({ data: { ...registration, startedAt: now, lastHeartbeatAt: now } });
  const token = deps.signingKey
    ? await signToken(deps.signingKey, {
        sub: viewer.principal.sub,
        scope: "worker",
        workerId: worker.id,
        ttlSeconds: WORKER_SESSION_TTL_SECONDS,
      })
    : null;
  return { worker: publishWorkerEvent(deps.pubsub, "REGISTERED", worker, now), token };
}

/** The ownership rule of the module comment; throws FORBIDDEN. */
export function authorizeWorkerAccess(principal: Principal, workerId: string, options: { mintsSessionTokens: boolean }) {
  if (principal.workerId !== undefined) {
    if (principal.workerId !== workerId) throw forbidden(`this token is bound to worker ${principal.workerId}, not ${workerId}`);
    return;
  }
  if (options.mintsSessionTokens) {
    throw forbidden(`worker ${workerId} needs the token registerWorker returned for it`);
  }
}

/**
 * Records a heartbeat: last-seen time, the worker's load and whether it drains.
 * Clears a stale report (the worker is alive again). Publishes DRAINING on the
 * first heartbeat that says so, HEARTBEAT otherwise.
 */
export async function recordHeartbeat(
  deps: RegistryDeps,
  viewer: Viewer,
  { workerId, report }: { workerId: string; report: HeartbeatReport },
): Promise<WorkerSnapshot> {
  authorizeWorkerAccess(viewer.principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  if (!Number.isInteger(report.activeScans) || report.activeScans < 0) {
    throw badUserInput("activeScans must be a non-negative integer", { field: "activeScans" });
  }
  const now = new Date();
  const { worker, wasDraining } = await deps.prisma.$transaction(async (tx) => {
    // The row lock orders concurrent heartbeats of one worker, so DRAINING is published once.
    const [current] = await tx.$queryRaw<{ draining: boolean; deregisteredAt: Date | null }[]>`
      SELECT draining, "deregisteredAt" FROM "Worker" WHERE id = ${workerId} FOR UPDATE`;
    if (!current) throw notFound("Worker", workerId);
    if (current.deregisteredAt) throw deregistered(workerId, current.deregisteredAt);
    const updated = await tx.worker.update({
      where: { id: workerId },
      data: { lastHeartbeatAt: now, activeScans: report.activeScans, draining: report.draining, staleReportedAt: null },
    });
    return { worker: updated, wasDraining: current.draining };
  });
  return publishWorkerEvent(deps.pubsub, report.draining && !wasDraining ? "DRAINING" : "HEARTBEAT", worker, now);
}

/** Takes a worker out of the registry (it stops, or drained). A second call answers CONFLICT. */
export async function deregisterWorker(deps: RegistryDeps, viewer: Viewer, workerId: string): Promise<WorkerSnapshot> {
  authorizeWorkerAccess(viewer.principal, workerId, { mintsSessionTokens: Boolean(deps.signingKey) });
  const now = new Date();
  const { count } = await deps.prisma.worker.updateMany({
    where: { id: workerId, deregisteredAt: null },
    data: { deregisteredAt: now },
  });
  const worker = await deps.prisma.worker.findUnique({ where: { id: workerId } });
  if (!worker) throw notFound("Worker", workerId);
  if (count === 0) throw deregistered(workerId, worker.deregisteredAt!);
  return publishWorkerEvent(deps.pubsub, "DEREGISTERED", worker, now);
}

const deregistered = (workerId: string, at: Date) =>
  conflict(`Worker ${workerId} was deregistered at ${at.toISOString()}; register again`, {
    deregisteredAt: at.toISOString(),
  });

/** The registry as operators see it: live workers (not deregistered), by name; stale ones unless told otherwise. */
export async function listWorkers(
  deps: Pick<Deps, "prisma"> & { config: Pick<Config, "workerHeartbeatTtlSeconds"> },
  options: { includeStale: boolean },
): Promise<WorkerSnapshot[]> {
  const cutoff = staleWorkerCutoff(deps.config, new Date());
  const rows = await deps.prisma.worker.findMany({
    where: { deregisteredAt: null, ...(options.includeStale ? {} : freshWorkerWhere(cutoff)) },
    orderBy: [{ name: "asc" }, { startedAt: "asc" }, { id: "asc" }],
  });
  return rows.map(workerSnapshot);
}
