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
import type { PrismaClient } from "../db/client.ts";
import { badUserInput } from "../errors.ts";
import type { AuditEntry, Prisma } from "../generated/prisma/client.ts";
import { decodeCursor, pageSize, toConnection, type Connection } from "./pagination.ts";

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

/** The log, newest first, as a Relay connection (keyset on `at`, then `id`). */
export async function listAuditEntries(
  prisma: PrismaClient,
  args: { first?: number | null; after?: string | null },
): Promise<Connection<AuditEntry>> {
  const size = pageSize(args.first);
  const after = decodeCursor(args.after, ["string", "string"]);
  const where: Prisma.AuditEntryWhereInput = {};
  if (after) {
    const at = new Date(after[0]);
    if (Number.isNaN(at.getTime())) throw badUserInput("`after` is not a cursor this API issued");
    where.OR = [{ at: { lt: at } }, { at, id: { lt: String(after[1]) } }];
  }
  const rows = await prisma.auditEntry.findMany({ where, orderBy: [{ at: "desc" }, { id: "desc" }], take: size + 1 });
  return toConnection(rows, size, (entry) => [entry.at.toISOString(), entry.id], Boolean(after));
}
