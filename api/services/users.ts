/**
 * Users and workspaces. Identity comes from the bearer token; the User row and
 * the user's personal workspace are created on first sight.
 */
import { createHash } from "node:crypto";
import type { Principal } from "../auth.ts";
import type { Deps, Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import { badUserInput, forbidden, notFound } from "../../shared/errors.ts";
import { auditActions, recordAudit } from "./audit.ts";

export interface KnownUser {
  id: string;
  personalWorkspaceId: string;
}

/**
 * The personal workspace's id is derived from the user's id, so that two first
 * requests racing each other upsert the same row instead of creating two.
 */
export function personalWorkspaceId(userId: string): string {
  const hex = createHash("sha256").update(`vega:personal-workspace:${userId}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

/** Remembers recently seen users so that each request does not upsert them again. */
export class SeenUsers {
  private readonly seen = new Map<string, { groupsKey: string; until: number }>();
  constructor(private readonly ttlMs = 60_000) {}

  isFresh(principal: Principal, now = Date.now()): boolean {
    const entry = this.seen.get(principal.sub);
    return entry !== undefined && entry.until > now && entry.groupsKey === principal.groups.join(",");
  }

  private readonly pending = new Map<string, Promise<void>>();

  inFlight(userId: string): Promise<void> | undefined {
    return this.pending.get(userId);
  }

  track(userId: string, upsert: Promise<void>) {
    this.pending.set(userId, upsert);
    const forget = () => this.pending.delete(userId);
    upsert.then(forget, forget);
  }

  remember(principal: Principal, now = Date.now()) {
    if (this.seen.size > 10_000) this.seen.clear();
    this.seen.set(principal.sub, { groupsKey: principal.groups.join(","), until: now + this.ttlMs });
  }
}

export async function ensureUser(prisma: PrismaClient, principal: Principal, seen?: SeenUsers): Promise<KnownUser> {
  const known = { id: principal.sub, personalWorkspaceId: personalWorkspaceId(principal.sub) };
  if (seen?.isFresh(principal)) return known;
  // A thousand dashboards reconnecting with one token make one upsert, not a thousand.
  const pending = seen?.inFlight(principal.sub);
  if (pending) {
    await pending;
    return known;
  }
  const upsert = upsertUser(prisma, principal, known);
  seen?.track(principal.sub, upsert);
  await upsert;
  seen?.remember(principal);
  return known;
}

async function upsertUser(prisma: PrismaClient, principal: Principal, known: KnownUser) {
  await prisma.$transaction([
    prisma.user.upsert({
      where: { id: principal.sub },
      create: { id: principal.sub, groups: principal.groups },
      update: { groups: principal.groups, lastSeenAt: new Date() },
    }),
    prisma.workspace.upsert({
      where: { id: known.personalWorkspaceId },
      create: { id: known.personalWorkspaceId, name: `${principal.sub} (personal)`, personal: true, ownerId: principal.sub },
      update: {},
    }),
    prisma.membership.upsert({
      where: { workspaceId_userId: { workspaceId: known.personalWorkspaceId, userId: principal.sub } },
      create: { workspaceId: known.personalWorkspaceId, userId: principal.sub, role: "OWNER" },
      update: {},
    }),
  ]);
}

export async function createWorkspace({ prisma }: Pick<Deps, "prisma">, viewer: Viewer, name: string) {
  const user = viewer.user!;
  const trimmed = name.trim();
  if (trimmed === "" || trimmed.length > 200) throw badUserInput("Workspace name must be 1 to 200 characters");
  return prisma.workspace.create({
    data: { name: trimmed, ownerId: user.id, memberships: { create: { userId: user.id, role: "OWNER" } } },
  });
}

/** Only the workspace's owner adds members; a non-member learns nothing about the workspace. */
export async function addWorkspaceMember(
  { prisma }: Pick<Deps, "prisma">,
  viewer: Viewer,
  { workspaceId, userId: memberId }: { workspaceId: string; userId: string },
) {
  const user = viewer.user!;
  const membership = await prisma.membership.findUnique({ where: { workspaceId_userId: { workspaceId, userId: user.id } } });
  if (!membership) throw notFound("Workspace", workspaceId);
  if (membership.role !== "OWNER") throw forbidden("only the workspace's owner can add members");
  const workspace = await prisma.workspace.findUniqueOrThrow({ where: { id: workspaceId } });
  if (workspace.personal) throw badUserInput("A personal workspace cannot be shared; create a workspace first");
  const trimmed = memberId.trim();
  if (trimmed === "") throw badUserInput("userId must not be empty");
  // The member may not have signed in yet: their User row is created now and completed on first sight.
  await prisma.user.upsert({ where: { id: trimmed }, create: { id: trimmed, groups: [] }, update: {} });
  await prisma.membership.upsert({
    where: { workspaceId_userId: { workspaceId, userId: trimmed } },
    create: { workspaceId, userId: trimmed, role: "MEMBER" },
    update: {},
  });
  await recordAudit(prisma, {
    actor: user.id,
    action: auditActions.workspaceAddMember,
    target: `Workspace:${workspaceId}`,
    details: { memberId: trimmed },
  });
  return workspace;
}

/** Resolves the workspace a user acts in: the one named (if a member) or the personal one. */
export async function resolveMemberWorkspace(
  { prisma }: Pick<Deps, "prisma">,
  viewer: Viewer,
  workspaceId: string | null | undefined,
): Promise<string> {
  const user = viewer.user!;
  if (!workspaceId) return user.personalWorkspaceId;
  const membership = await prisma.membership.findUnique({ where: { workspaceId_userId: { workspaceId, userId: user.id } } });
  if (!membership) throw notFound("Workspace", workspaceId);
  return workspaceId;
}
