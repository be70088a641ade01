/**
 * Legacy per-workspace sessions. Open sessions (not closed, not expired) per
 * workspace are capped by VEGA_MAX_SESSIONS_PER_WORKSPACE; the count and the
 * insert happen under a per-workspace advisory lock, like the scan quota.
 */
import type { Deps, Viewer } from "../context.ts";
import { conflict, notFound, sessionLimitExceeded } from "../../shared/errors.ts";
import type { Prisma } from "../generated/prisma/client.ts";
import { resolveMemberWorkspace } from "./users.ts";

/** First key of the per-workspace session lock (docs/decisions.md). */
export const SESSION_LOCK_NAMESPACE = 7_302;

export const openSessionsWhere = (workspaceId: string, now = new Date()): Prisma.SessionWhereInput => ({
  workspaceId,
  closedAt: null,
  expiresAt: { gt: now },
});

type SessionDeps = Pick<Deps, "prisma" | "config">;

export async function createSession({ prisma, config }: SessionDeps, viewer: Viewer, workspaceId: string) {
  const user = viewer.user!;
  await resolveMemberWorkspace({ prisma }, viewer, workspaceId);
  return prisma.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${SESSION_LOCK_NAMESPACE}::int, hashtext(${workspaceId}))`;
      const now = new Date();
      const open = await tx.session.count({ where: openSessionsWhere(workspaceId, now) });
      if (open >= config.maxSessionsPerWorkspace) throw sessionLimitExceeded({ limit: config.maxSessionsPerWorkspace, open });
      return tx.session.create({
        data: { workspaceId, userId: user.id, expiresAt: new Date(now.getTime() + config.sessionTtlSeconds * 1000) },
      });
    },
    { timeout: 30_000, maxWait: 30_000 },
  );
}

/** Closes the caller's own session; closing it twice answers CONFLICT. */
export async function closeSession({ prisma }: Pick<Deps, "prisma">, viewer: Viewer, sessionId: string) {
  const user = viewer.user!;
  const session = await prisma.session.findUnique({ where: { id: sessionId } });
  if (!session || session.userId !== user.id) throw notFound("Session", sessionId);
  const closed = await prisma.session.updateMany({ where: { id: sessionId, closedAt: null }, data: { closedAt: new Date() } });
  if (closed.count === 0) throw conflict(`Session ${sessionId} is already closed`);
  return prisma.session.findUniqueOrThrow({ where: { id: sessionId } });
}

export async function listWorkspaceSessions(
  { prisma }: Pick<Deps, "prisma">,
  { workspaceId, includeClosed }: { workspaceId: string; includeClosed: boolean },
) {
  return prisma.session.findMany({
    where: includeClosed ? { workspaceId } : openSessionsWhere(workspaceId),
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take: 500,
  });
}
