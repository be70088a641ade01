/**
 * Per-request DataLoaders, so that a page of scans with its nested lists costs a
 * fixed number of queries whatever its size. Nested pages (events, findings)
 * are loaded for all scans of a page in one query with a window function that
 * keeps the first N rows of each scan.
 */
import DataLoader from "dataloader";
import type { PrismaClient } from "../db/client.ts";
import type { Finding, ScanEvent, Severity } from "../generated/prisma/client.ts";
import { Prisma } from "../generated/prisma/client.ts";
import { SEVERITIES } from "../../shared/severity.ts";
import { sqlPage, type Keyset, type Page } from "./pagination.ts";

export interface ChildPageKey {
  scanId: string;
  page: Page;
  severities?: Severity[];
  ruleId?: string;
}

/** A scan's events in the order they happened. */
export const eventsInOrder: Keyset<ScanEvent> = { fields: ["seq"], parts: ["number"], order: "asc", keyOf: (event) => [event.seq] };

/** A scan's findings, most severe first (the enum's order is SEVERITIES'), then by place in the source. */
export const findingsBySeverity: Keyset<Finding> = {
  fields: ["severity", "path", "line", "id"],
  parts: ["string", "string", "number", "string"],
  order: "asc",
  keyOf: (finding) => [finding.severity, finding.path, finding.line, finding.id],
};

/** A scan's findings by severity (shared/severity.ts), keyed by the severity in lower case. */
export type FindingCounts = Record<Lowercase<Severity>, number>;

const emptyCounts = (): FindingCounts => Object.fromEntries(SEVERITIES.map((severity) => [severity.toLowerCase(), 0])) as FindingCounts;

/** Groups keys that share page arguments, so each distinct page shape is one query. */
function groupByShape(keys: readonly ChildPageKey[]) {
  const groups = new Map<string, { shape: ChildPageKey; scanIds: string[] }>();
  for (const key of keys) {
    const shapeId = JSON.stringify([key.page, key.severities ?? null, key.ruleId ?? null]);
    const group = groups.get(shapeId) ?? { shape: key, scanIds: [] };
    group.scanIds.push(key.scanId);
    groups.set(shapeId, group);
  }
  return [...groups.values()];
}

const childKeyId = (key: ChildPageKey) => JSON.stringify([key.scanId, key.page, key.severities ?? null, key.ruleId ?? null]);

export function createLoaders(prisma: PrismaClient) {
  const byId = <Row extends { id: string }>(load: (ids: string[]) => Promise<Row[]>) =>
    new DataLoader<string, Row | null>(async (ids) => {
      const rows = new Map((await load([...ids])).map((row) => [row.id, row]));
      return ids.map((id) => rows.get(id) ?? null);
    });

  return {
    scan: byId((ids) => prisma.scan.findMany({ where: { id: { in: ids } } })),
    user: byId((ids) => prisma.user.findMany({ where: { id: { in: ids } } })),
    workspace: byId((ids) => prisma.workspace.findMany({ where: { id: { in: ids } } })),
    artifact: byId((ids) => prisma.artifact.findMany({ where: { id: { in: ids } } })),
    worker: byId((ids) => prisma.worker.findMany({ where: { id: { in: ids } } })),

    /** The ids of the workspaces a user is a member of. */
    memberWorkspaceIds: new DataLoader<string, Set<string>>(async (userIds) => {
      const rows = await prisma.membership.findMany({ where: { userId: { in: [...userIds] } } });
      return userIds.map((userId) => new Set(rows.filter((row) => row.userId === userId).map((row) => row.workspaceId)));
    }),

    events: new DataLoader<ChildPageKey, ScanEvent[], string>(
      async (keys) => {
        const pages = new Map<string, ScanEvent[]>();
        for (const { shape, scanIds } of groupByShape(keys)) {
          const page = sqlPage(shape.page, eventsInOrder, "e", ([seq]) => [Prisma.sql`${Number(seq)}::int`]);
          const conditions = [Prisma.sql`e."scanId" = ANY(${scanIds}::text[])`, ...page.conditions];
          const rows = await prisma.$queryRaw<ScanEvent[]>`
            SELECT id, "scanId", seq, kind, code, message, data, "createdAt" FROM (
              SELECT e.*, row_number() OVER (PARTITION BY e."scanId" ORDER BY ${page.orderBy}) AS position
              FROM "ScanEvent" e
              WHERE ${Prisma.join(conditions, " AND ")}
            ) ranked
            WHERE position <= ${page.take}
            ORDER BY "scanId", position`;
          for (const scanId of scanIds) pages.set(childKeyId({ ...shape, scanId }), rows.filter((row) => row.scanId === scanId));
        }
        return keys.map((key) => pages.get(childKeyId(key)) ?? []);
      },
      { cacheKeyFn: childKeyId },
    ),

    findings: new DataLoader<ChildPageKey, Finding[], string>(
      async (keys) => {
        const pages = new Map<string, Finding[]>();
        for (const { shape, scanIds } of groupByShape(keys)) {
          const page = sqlPage(shape.page, findingsBySeverity, "f", ([severity, path, line, id]) => [
            Prisma.sql`${String(severity)}::"Severity"`,
            Prisma.sql`${String(path)}`,
            Prisma.sql`${Number(line)}::int`,
            Prisma.sql`${String(id)}`,
          ]);
          const conditions = [Prisma.sql`f."scanId" = ANY(${scanIds}::text[])`, ...page.conditions];
          if (shape.severities?.length) conditions.push(Prisma.sql`f.severity::text = ANY(${shape.severities}::text[])`);
          if (shape.ruleId) conditions.push(Prisma.sql`f."ruleId" = ${shape.ruleId}`);
          const rows = await prisma.$queryRaw<Finding[]>`
            SELECT id, "scanId", "ruleId", severity, path, line, "column", "endLine", "endColumn", message, snippet, fingerprint, "createdAt" FROM (
              SELECT f.*, row_number() OVER (PARTITION BY f."scanId" ORDER BY ${page.orderBy}) AS position
              FROM "Finding" f
              WHERE ${Prisma.join(conditions, " AND ")}
            ) ranked
            WHERE position <= ${page.take}
            ORDER BY "scanId", position`;
          for (const scanId of scanIds) pages.set(childKeyId({ ...shape, scanId }), rows.filter((row) => row.scanId === scanId));
        }
        return keys.map((key) => pages.get(childKeyId(key)) ?? []);
      },
      { cacheKeyFn: childKeyId },
    ),

    findingCounts: new DataLoader<string, FindingCounts>(async (scanIds) => {
      const rows = await prisma.finding.groupBy({
        by: ["scanId", "severity"],
        where: { scanId: { in: [...scanIds] } },
        _count: { _all: true },
      });
      const counts = new Map(scanIds.map((scanId) => [scanId, emptyCounts()]));
      for (const row of rows) {
        counts.get(row.scanId)![row.severity.toLowerCase() as keyof FindingCounts] = row._count._all;
      }
      return scanIds.map((scanId) => counts.get(scanId)!);
    }),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;
