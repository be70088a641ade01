/**
 * Cleanup's jobs and its record: which jobs a run executes, and the queries
 * over CleanupRun rows (the run in progress, the last one, one by id, every run
 * as a page). Starting, finishing, locking and stopping runs is cleanup-runs.ts.
 */
import type { Deps } from "../context.ts";
import { notFound } from "../../shared/errors.ts";
import type { CleanupRun, Prisma } from "../generated/prisma/client.ts";
import { pruneFinishedScanArtifacts } from "../hardening/cleanup/artifacts.ts";
import { pruneEndedSessions } from "../hardening/cleanup/sessions.ts";
import { removeAbandonedUploads, removeOrphanFiles } from "../hardening/cleanup/store-files.ts";
import { pruneGoneWorkers } from "../hardening/cleanup/workers.ts";
import { prismaPage, readPage, toConnection, type Connection, type Keyset, type PageArgs } from "./pagination.ts";

/** The jobs, in the order a run executes them (artifacts first: the orphan walk then finds their files gone). */
export const cleanupJobs = {
  artifacts: pruneFinishedScanArtifacts,
  orphanFiles: removeOrphanFiles,
  uploadTemps: removeAbandonedUploads,
  sessions: pruneEndedSessions,
  workers: pruneGoneWorkers,
} as const;

export type CleanupJobName = keyof typeof cleanupJobs;
export const allCleanupJobs = Object.keys(cleanupJobs) as CleanupJobName[];

/** A job's name as a GraphQL enum value: orphanFiles → ORPHAN_FILES. */
export const cleanupJobEnumValue = (job: CleanupJobName) => job.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase();

/** CleanupRun.counts: one entry per job the run executed (or was executing). */
export type CleanupCounts = Partial<Record<CleanupJobName, number>>;

/** A run's counts, in the order the jobs run (the database's JSON keeps its own order). */
export function countsOfRun(run: Pick<CleanupRun, "counts">): CleanupCounts {
  const counts = run.counts;
  if (counts === null || typeof counts !== "object" || Array.isArray(counts)) return {};
  return Object.fromEntries(allCleanupJobs.flatMap((job) => (typeof counts[job] === "number" ? [[job, counts[job]]] : [])));
}

type QueryDeps = Pick<Deps, "prisma">;

/** The run in progress, if any. */
export function runningCleanup(deps: QueryDeps): Promise<CleanupRun | null> {
  return deps.prisma.cleanupRun.findFirst({ where: { status: "RUNNING" }, orderBy: [{ startedAt: "desc" }, { id: "desc" }] });
}

/** The newest run that finished (succeeded or failed). */
export function lastFinishedCleanup(deps: QueryDeps): Promise<CleanupRun | null> {
  return deps.prisma.cleanupRun.findFirst({ where: { status: { not: "RUNNING" } }, orderBy: [{ startedAt: "desc" }, { id: "desc" }] });
}

/** One run by id (null if there is none). */
export function findCleanupRun(deps: QueryDeps, id: string): Promise<CleanupRun | null> {
  return deps.prisma.cleanupRun.findUnique({ where: { id } });
}

/** One run by id, for a cleanupRunUpdated event: NOT_FOUND if it is gone. */
export async function getCleanupRun(deps: QueryDeps, id: string): Promise<CleanupRun> {
  const run = await findCleanupRun(deps, id);
  if (!run) throw notFound("CleanupRun", id);
  return run;
}

const newestRunsFirst: Keyset<CleanupRun> = {
  fields: ["startedAt", "id"],
  parts: ["date", "string"],
  order: "desc",
  keyOf: (run) => [run.startedAt, run.id],
};

/** Every run, newest first, as a Relay connection. */
export async function listCleanupRuns(deps: QueryDeps, args: PageArgs): Promise<Connection<CleanupRun>> {
  const page = readPage(args, newestRunsFirst);
  const query = prismaPage<Prisma.CleanupRunWhereInput, Prisma.CleanupRunOrderByWithRelationInput>(page, newestRunsFirst);
  const rows = await deps.prisma.cleanupRun.findMany({ where: { AND: query.where }, orderBy: query.orderBy, take: query.take });
  return toConnection(rows, page, newestRunsFirst);
}
