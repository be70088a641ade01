/**
 * The audit log: who did what to which object, and when. Operator actions are
 * recorded here (cleanup triggers, recoveries, cancelling another user's scan)
 * together with workspace membership changes; `Ops.auditLog` reads it newest
 * first.
 *
 * Conventions, so that entries written by different services read alike:
 * - `actor`: the token's `sub` (a person), or `system:<what>` for the process itself;
 * - `action`: `<domain>.<verb>` in the domain's words (`cleanup.trigger`,
 *   `scan.cancel`, `workspace.addMember`, `scan.recover`);
 * - `target`: `<Type>:<id>` of the object acted on (`Scan:…`, `Workspace:…`,
 *   `CleanupRun:…`), or null when the action has no single object;
 * - `details`: a small JSON object with what else an auditor needs (never secrets).
 */
import type { Deps } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import type { AuditEntry, Prisma } from "../generated/prisma/client.ts";
import { prismaPage, readPage, toConnection, type Connection, type Keyset, type PageArgs } from "./pagination.ts";

export interface AuditRecord {
  actor: string;
  action: string;
  target?: string | null;
  details?: Record<string, unknown>;
}

/** The actions Vega itself records (others, such as recoveries, pass their own). */
export const auditActions = {
  cleanupTrigger: "cleanup.trigger",
  scanCancel: "scan.cancel",
  workspaceAddMember: "workspace.addMember",
} as const;

/**
 * Appends one entry. Takes a transaction client too, so that a caller can record
 * the action in the transaction that performs it (both or neither).
 */
export function recordAudit(prisma: PrismaClient | Prisma.TransactionClient, record: AuditRecord): Promise<AuditEntry> {
  return prisma.auditEntry.create({
    data: {
      actor: record.actor,
      action: record.action,
      target: record.target ?? null,
      details: (record.details ?? {}) as Prisma.InputJsonObject,
    },
  });
}

const newestEntriesFirst: Keyset<AuditEntry> = {
  fields: ["at", "id"],
  parts: ["date", "string"],
  order: "desc",
  keyOf: (entry) => [entry.at, entry.id],
};

/** The log, newest first, as a Relay connection. */
export async function listAuditEntries({ prisma }: Pick<Deps, "prisma">, args: PageArgs): Promise<Connection<AuditEntry>> {
  const page = readPage(args, newestEntriesFirst);
  const query = prismaPage<Prisma.AuditEntryWhereInput, Prisma.AuditEntryOrderByWithRelationInput>(page, newestEntriesFirst);
  const rows = await prisma.auditEntry.findMany({ where: { AND: query.where }, orderBy: query.orderBy, take: query.take });
  return toConnection(rows, page, newestEntriesFirst);
}
