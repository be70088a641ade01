import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { recordAudit } from "../../api/services/audit.ts";
import { insertScan } from "../support/fixtures.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";

const AUDIT_LOG = `query ($first: Int, $after: String) { ops { auditLog(first: $first, after: $after) {
  edges { cursor node { id actor action target at details } } pageInfo { hasNextPage endCursor } } } }`;

let server: TestServer;
let operator: string;
beforeAll(async () => {
  server = await startTestServer();
  operator = await server.token("ops-olga", { groups: ["vega-ops"] });
});
afterAll(() => server?.close());
beforeEach(() => server.app.deps.prisma.auditEntry.deleteMany());

const entries = () => server.app.deps.prisma.auditEntry.findMany({ orderBy: { at: "asc" } });

describe("cancelling a scan", () => {
  it("records an operator cancelling another user's scan", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice", status: "RUNNING" });

    const response = await server.gql(`mutation ($id: ID!) { cancelScan(id: $id) { status } }`, { id: scan.id }, operator);

    expect(response.body.data.cancelScan.status).toBe("CANCELLED");
    expect(await entries()).toEqual([
      expect.objectContaining({
        actor: "ops-olga",
        action: "scan.cancel",
        target: `Scan:${scan.id}`,
        details: { ownerId: "alice", workspaceId: scan.workspaceId, from: "RUNNING" },
      }),
    ]);
  });

  it("records nothing when the owner cancels their own scan", async () => {
    const owner = await server.token("bob");
    await server.gql("{ viewer { id } }", {}, owner);
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "bob", status: "QUEUED" });
    const response = await server.gql(`mutation ($id: ID!) { cancelScan(id: $id) { status } }`, { id: scan.id }, owner);
    expect(response.body.data.cancelScan.status).toBe("CANCELLED");
    expect(await entries()).toEqual([]);
  });
});

describe("adding a workspace member", () => {
  it("records who added whom to which workspace", async () => {
    const owner = await server.token("carol");
    const created = await server.gql(`mutation { createWorkspace(name: "security") { id } }`, {}, owner);
    const workspaceId = created.body.data.createWorkspace.id;

    await server.gql(`mutation ($w: ID!) { addWorkspaceMember(workspaceId: $w, userId: "dave") { id } }`, { w: workspaceId }, owner);

    expect(await entries()).toEqual([
      expect.objectContaining({ actor: "carol", action: "workspace.addMember", target: `Workspace:${workspaceId}`, details: { memberId: "dave" } }),
    ]);
  });

  it("records nothing for a refused addition", async () => {
    const owner = await server.token("erin");
    const created = await server.gql(`mutation { createWorkspace(name: "mine") { id } }`, {}, owner);
    const intruder = await server.token("frank");
    const refused = await server.gql(
      `mutation ($w: ID!) { addWorkspaceMember(workspaceId: $w, userId: "frank") { id } }`,
      { w: created.body.data.createWorkspace.id },
      intruder,
    );
    expect(errorCodes(refused)).toEqual(["NOT_FOUND"]);
    expect(await entries()).toEqual([]);
  });
});

describe("triggering a cleanup", () => {
  it("records the trigger and its run", async () => {
    const iterator = server.app.deps.pubsub.subscribe("cleanupRunUpdated")[Symbol.asyncIterator]();
    const started = iterator.next();
    const response = await server.gql(`mutation { triggerCleanup(dryRun: true) { id } }`, {}, operator);
    const id = response.body.data.triggerCleanup.id;
    await started;
    await iterator.next();
    await iterator.return?.();

    expect(await entries()).toEqual([
      expect.objectContaining({ actor: "ops-olga", action: "cleanup.trigger", target: `CleanupRun:${id}`, details: { dryRun: true, outcome: "started" } }),
    ]);
  });
});

describe("Ops.auditLog", () => {
  it("reads entries newest first, page by page, including those other services record", async () => {
    const prisma = server.app.deps.prisma;
    const base = Date.now() - 60_000;
    for (let index = 0; index < 3; index++) {
      const entry = await recordAudit(prisma, { actor: "system:recovery", action: "scan.recover", target: `Scan:s${index}`, details: { index } });
      // Distinct instants, so that the order under test is the order written.
      await prisma.auditEntry.update({ where: { id: entry.id }, data: { at: new Date(base + index * 1000) } });
    }

    const first = await server.gql(AUDIT_LOG, { first: 2 }, operator);
    const page = first.body.data.ops.auditLog;
    expect(page.edges.map((edge: { node: { target: string } }) => edge.node.target)).toEqual(["Scan:s2", "Scan:s1"]);
    expect(page.edges[0].node).toMatchObject({ actor: "system:recovery", action: "scan.recover", details: { index: 2 }, at: new Date(base + 2000).toISOString() });
    expect(page.pageInfo.hasNextPage).toBe(true);

    const second = await server.gql(AUDIT_LOG, { first: 2, after: page.pageInfo.endCursor }, operator);
    expect(second.body.data.ops.auditLog.edges.map((edge: { node: { target: string } }) => edge.node.target)).toEqual(["Scan:s0"]);
    expect(second.body.data.ops.auditLog.pageInfo.hasNextPage).toBe(false);
  });

  it("refuses a cursor it did not issue", async () => {
    const forged = Buffer.from(JSON.stringify(["not a date", "x"])).toString("base64url");
    expect(errorCodes(await server.gql(AUDIT_LOG, { after: forged }, operator))).toEqual(["BAD_USER_INPUT"]);
  });

  it("is for operators only", async () => {
    const user = await server.token("mallory");
    expect(errorCodes(await server.gql(AUDIT_LOG, {}, user))).toEqual(["FORBIDDEN"]);
  });
});
