/**
 * Who may see a workspace's objects (api/services/visibility.ts), the rule
 * behind both Query.scan (services/scans.ts) and GET /v1/artifacts/:id
 * (http/artifacts.ts): operators everything, a runner its own scan's objects,
 * members their workspaces' objects, anyone else nothing.
 */
import { describe, expect, it } from "vitest";
import type { Viewer } from "../../api/context.ts";
import type { Principal } from "../../api/auth.ts";
import { maySee, type MembershipCheck, type VisibleObject } from "../../api/services/visibility.ts";

const members: Record<string, string[]> = { "ws-team": ["owner", "member"], "ws-other": ["stranger"] };
const isMember: MembershipCheck = async (userId, workspaceId) => (members[workspaceId] ?? []).includes(userId);

const person = (id: string, isOperator = false): Viewer => ({
  principal: { sub: id, groups: isOperator ? ["operators"] : [], scope: "user" },
  isOperator,
  user: { id, personalWorkspaceId: `ws-${id}` },
});
const runner = (scanId: string): Viewer => ({ principal: { sub: `runner:${scanId}`, groups: [], scope: "runner", scanId, attempt: 1 }, isOperator: false, user: null });
const worker: Viewer = { principal: { sub: "worker", groups: [], scope: "worker" } as Principal, isOperator: false, user: null };

/** An object of scan-1 in ws-team. */
const scanObject: VisibleObject = { workspaceId: "ws-team", ofRunnerScan: (scanId) => scanId === "scan-1" };

describe("who may see a workspace's object", () => {
  it("lets the scan's owner and another member of its workspace see it", async () => {
    expect(await maySee(person("owner"), scanObject, isMember)).toBe(true);
    expect(await maySee(person("member"), scanObject, isMember)).toBe(true);
  });

  it("hides it from a user of another workspace", async () => {
    expect(await maySee(person("stranger"), scanObject, isMember)).toBe(false);
  });

  it("shows it to an operator who is no member", async () => {
    expect(await maySee(person("ops", true), scanObject, isMember)).toBe(true);
  });

  it("shows a runner its own scan's object only, whatever its workspaces", async () => {
    expect(await maySee(runner("scan-1"), scanObject, isMember)).toBe(true);
    expect(await maySee(runner("scan-2"), scanObject, isMember)).toBe(false);
  });

  it("asks the object whether it belongs to the runner's scan, and waits for the answer (an artifact's current claim)", async () => {
    const artifact: VisibleObject = { workspaceId: "ws-team", ofRunnerScan: async (scanId) => scanId === "scan-1" };
    expect(await maySee(runner("scan-1"), artifact, isMember)).toBe(true);
    expect(await maySee(runner("scan-2"), artifact, isMember)).toBe(false);
  });

  it("hides it from a worker token and from an anonymous caller", async () => {
    expect(await maySee(worker, scanObject, isMember)).toBe(false);
    expect(await maySee(null, scanObject, isMember)).toBe(false);
  });
});
