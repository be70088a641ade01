/**
 * Who may see a workspace's objects (a scan, a stored artifact), in one rule:
 * - an operator sees everything;
 * - a runner token sees only what belongs to its own scan (which objects those
 *   are, and whether its claim must still be current, the object's reader says);
 * - a person sees the objects of the workspaces they are a member of;
 * - a worker token, or no token, sees nothing this way.
 * Callers answer an object the viewer may not see exactly like a missing one
 * (NOT_FOUND), so ids cannot be probed.
 */
import type { Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";

/** An object as the rule sees it: its workspace, and whether it belongs to a given runner's scan. */
export interface VisibleObject {
  workspaceId: string;
  ofRunnerScan(scanId: string): boolean | Promise<boolean>;
}

/** Whether a user is a member of a workspace (a request's loader, or one query). */
export type MembershipCheck = (userId: string, workspaceId: string) => Promise<boolean>;

export async function maySee(viewer: Viewer | null, object: VisibleObject, isMember: MembershipCheck): Promise<boolean> {
  if (!viewer) return false;
  if (viewer.isOperator) return true;
  if (viewer.principal.scope === "runner") return viewer.principal.scanId !== undefined && (await object.ofRunnerScan(viewer.principal.scanId));
  if (!viewer.user) return false;
  return isMember(viewer.user.id, object.workspaceId);
}

/** The membership check for a caller without a request's loaders (the artifact download). */
export function membershipIn(prisma: PrismaClient): MembershipCheck {
  return async (userId, workspaceId) =>
    (await prisma.membership.findUnique({ where: { workspaceId_userId: { workspaceId, userId } } })) !== null;
}

/**
 * What decides, under the rule above, what a viewer sees, as a string: two
 * viewers with the same key see the same objects. The grouped subscription
 * fan-out (http/subscription-groups.ts) shares one execution per event between
 * subscribers of the same operation only when their keys are equal, so the key
 * holds everything `maySee` and the scope checks read: the scope, operator or
 * not, the runner's scan and claim, the worker, the person and the workspaces
 * they are a member of now (read once, when they subscribe; a subscription
 * keeps the visibility it started with, as the per-subscriber filters do).
 */
export async function visibilityKey(viewer: Viewer | null, memberWorkspaceIds: (userId: string) => Promise<Set<string>>): Promise<string> {
  if (!viewer) return "anonymous";
  if (viewer.isOperator) return "operator";
  const { principal } = viewer;
  if (principal.scope === "runner") return JSON.stringify(["runner", principal.sub, principal.scanId ?? null, principal.attempt ?? null]);
  if (principal.scope === "worker" || !viewer.user) return JSON.stringify(["worker", principal.sub, principal.workerId ?? null]);
  const workspaces = [...(await memberWorkspaceIds(viewer.user.id))].sort();
  return JSON.stringify(["user", viewer.user.id, workspaces]);
}
