/** Rows built straight in the database, for tests of reading paths that do not need an upload. */
import { randomUUID } from "node:crypto";
import type { PrismaClient } from "../../api/db/client.ts";
import type { ScanStatus, Severity } from "../../api/generated/prisma/client.ts";
import { personalWorkspaceId } from "../../api/services/users.ts";

export async function ensureUserRow(prisma: PrismaClient, userId: string) {
  const workspaceId = personalWorkspaceId(userId);
  await prisma.user.upsert({ where: { id: userId }, create: { id: userId, groups: [] }, update: {} });
  await prisma.workspace.upsert({
    where: { id: workspaceId },
    create: { id: workspaceId, name: `${userId} (personal)`, personal: true, ownerId: userId },
    update: {},
  });
  await prisma.membership.upsert({
    where: { workspaceId_userId: { workspaceId, userId } },
    create: { workspaceId, userId, role: "OWNER" },
    update: {},
  });
  return workspaceId;
}

export interface ScanRowOptions {
  ownerId: string;
  workspaceId?: string;
  status?: ScanStatus;
  createdAt?: Date;
  events?: number;
  findings?: { severity: Severity; ruleId?: string }[];
}

export async function insertScan(prisma: PrismaClient, options: ScanRowOptions) {
  const workspaceId = options.workspaceId ?? (await ensureUserRow(prisma, options.ownerId));
  const artifact = await prisma.artifact.create({
    data: {
      kind: "SOURCE",
      workspaceId,
      ownerId: options.ownerId,
      storageKey: `sources/test/${randomUUID()}`,
      sizeBytes: 100n,
      sha256: "0".repeat(64),
    },
  });
  const eventCount = options.events ?? 1;
  const scan = await prisma.scan.create({
    data: {
      ownerId: options.ownerId,
      workspaceId,
      status: options.status ?? "QUEUED",
      sourceArtifactId: artifact.id,
      createdAt: options.createdAt,
      lastEventSeq: eventCount,
      ...(options.status && ["SUCCEEDED", "FAILED", "CANCELLED"].includes(options.status) ? { finishedAt: new Date() } : {}),
    },
  });
  if (eventCount > 0) {
    await prisma.scanEvent.createMany({
      data: Array.from({ length: eventCount }, (_, index) => ({
        scanId: scan.id,
        seq: index + 1,
        kind: index === 0 ? "STATE" : "PROGRESS",
        code: index === 0 ? "QUEUED" : null,
        message: index === 0 ? "Scan is queued" : `step ${index}`,
      })),
    });
  }
  if (options.findings?.length) {
    await prisma.finding.createMany({
      data: options.findings.map((finding, index) => ({
        scanId: scan.id,
        ruleId: finding.ruleId ?? "generic-secret",
        severity: finding.severity,
        path: `src/file-${index}.ts`,
        line: index + 1,
        message: "a secret",
        fingerprint: `fp-${scan.id}-${index}`,
      })),
    });
  }
  return scan;
}
