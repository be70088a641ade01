/**
 * The active-scan quota: a user's QUEUED + STARTING + RUNNING scans against
 * VEGA_MAX_ACTIVE_SCANS_PER_USER. `checkActiveScanQuota` is the early check (the
 * upload path runs it before reading the body); `withActiveScanQuota` is the
 * binding one: the count and the insert happen in one transaction under a
 * per-user advisory lock, so concurrent submissions cannot both pass.
 */
import type { Config } from "../../shared/config.ts";
import type { Deps, Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import { quotaExceeded } from "../../shared/errors.ts";
import type { Prisma } from "../generated/prisma/client.ts";
import { activeStatuses } from "../../shared/scan-status.ts";

/** First key of the two-key advisory locks Vega takes per user (quota) — listed in docs/decisions.md. */
export const QUOTA_LOCK_NAMESPACE = 7_301;

export function countActiveScans(prisma: PrismaClient | Prisma.TransactionClient, userId: string) {
  return prisma.scan.count({ where: { ownerId: userId, status: { in: [...activeStatuses] } } });
}

export interface QuotaStatus {
  limit: number;
  active: number;
  remaining: number;
}

type QuotaDeps = Pick<Deps, "prisma"> & { config: Pick<Config, "maxActiveScansPerUser"> };

export async function activeScanQuota({ prisma, config }: QuotaDeps, userId: string): Promise<QuotaStatus> {
  const active = await countActiveScans(prisma, userId);
  const limit = config.maxActiveScansPerUser;
  return { limit, active, remaining: Math.max(0, limit - active) };
}

/** Refuses (QUOTA_EXCEEDED) when the user is at or over the limit. Not binding by itself: see withActiveScanQuota. */
export async function checkActiveScanQuota(deps: QuotaDeps, viewer: Viewer) {
  const quota = await activeScanQuota(deps, viewer.user!.id);
  if (quota.active >= quota.limit) throw quotaExceeded({ limit: quota.limit, active: quota.active });
}

/**
 * Runs `create` in a transaction that holds the user's quota lock, after
 * checking the count; the lock is released at commit, when the new scan counts.
 */
export async function withActiveScanQuota<T>(
  prisma: PrismaClient,
  config: Pick<Config, "maxActiveScansPerUser">,
  userId: string,
  create: (tx: Prisma.TransactionClient) => Promise<T>,
): Promise<T> {
  return prisma.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${QUOTA_LOCK_NAMESPACE}::int, hashtext(${userId}))`;
      const active = await countActiveScans(tx, userId);
      if (active >= config.maxActiveScansPerUser) throw quotaExceeded({ limit: config.maxActiveScansPerUser, active });
      return create(tx);
    },
    { timeout: 30_000, maxWait: 30_000 },
  );
}

/** A user's active scans, oldest first: the ones an operator looks at to free a stuck quota. */
export function listActiveScans({ prisma }: Pick<Deps, "prisma">, userId: string) {
  return prisma.scan.findMany({
    where: { ownerId: userId, status: { in: [...activeStatuses] } },
    orderBy: [{ queuedAt: "asc" }, { id: "asc" }],
    take: 100,
  });
}
