import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { insertScan } from "../support/fixtures.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";

let server: TestServer;
let alice: string;
let bob: string;
let operator: string;

beforeAll(async () => {
  server = await startTestServer();
  alice = await server.token("alice");
  bob = await server.token("bob");
  operator = await server.token("olivia", { groups: ["vega-ops"] });
  // First sight creates the users and their personal workspaces.
  for (const token of [alice, bob, operator]) await server.gql("{ viewer { id } }", {}, token);
});
afterAll(() => server?.close());

const SCAN = "query ($id: ID!) { scan(id: $id) { id status owner { id } workspace { id } } }";

describe("a user reads only the scans of their workspaces", () => {
  it("answers another workspace's scan exactly like a missing one", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice" });
    const own = await server.gql(SCAN, { id: scan.id }, alice);
    expect(own.body.data.scan).toMatchObject({ id: scan.id, owner: { id: "alice" } });

    const foreign = await server.gql(SCAN, { id: scan.id }, bob);
    const missing = await server.gql(SCAN, { id: "00000000-0000-4000-8000-000000000000" }, bob);
    expect(foreign.status).toBe(404);
    expect(errorCodes(foreign)).toEqual(["NOT_FOUND"]);
    expect(foreign.status).toBe(missing.status);
    expect(foreign.body.errors?.[0].message.replace(scan.id, "ID")).toBe(
      missing.body.errors?.[0].message.replace("00000000-0000-4000-8000-000000000000", "ID"),
    );
  });

  it("lists only the caller's workspaces' scans", async () => {
    await insertScan(server.app.deps.prisma, { ownerId: "bob" });
    const list = await server.gql("{ scans(first: 100) { edges { node { owner { id } } } } }", {}, bob);
    const owners = new Set(list.body.data.scans.edges.map((edge: any) => edge.node.owner.id));
    expect(owners).toEqual(new Set(["bob"]));
  });

  it("lets operators read any scan", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice" });
    const response = await server.gql(SCAN, { id: scan.id }, operator);
    expect(response.body.data.scan.id).toBe(scan.id);
  });
});

describe("shared workspaces", () => {
  it("shows a workspace's scans to the members its owner adds, and only the owner adds members", async () => {
    const created = await server.gql('mutation { createWorkspace(name: "team") { id personal } }', {}, alice);
    const workspaceId = created.body.data.createWorkspace.id;
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice", workspaceId });
    expect(errorCodes(await server.gql(SCAN, { id: scan.id }, bob))).toEqual(["NOT_FOUND"]);

    const ADD = "mutation ($w: ID!, $u: ID!) { addWorkspaceMember(workspaceId: $w, userId: $u) { id } }";
    const byStranger = await server.gql(ADD, { w: workspaceId, u: "bob" }, bob);
    expect(errorCodes(byStranger)).toEqual(["NOT_FOUND"]);

    expect((await server.gql(ADD, { w: workspaceId, u: "bob" }, alice)).body.data.addWorkspaceMember.id).toBe(workspaceId);
    expect((await server.gql(SCAN, { id: scan.id }, bob)).body.data.scan.id).toBe(scan.id);

    const byMember = await server.gql(ADD, { w: workspaceId, u: "carol" }, bob);
    expect(errorCodes(byMember)).toEqual(["FORBIDDEN"]);
  });

  it("refuses to list the scans of a workspace the caller is not a member of", async () => {
    const created = await server.gql('mutation { createWorkspace(name: "private") { id } }', {}, alice);
    const response = await server.gql(
      "query ($w: ID!) { scans(workspaceId: $w) { edges { node { id } } } }",
      { w: created.body.data.createWorkspace.id },
      bob,
    );
    expect(errorCodes(response)).toEqual(["NOT_FOUND"]);
  });
});

describe("cancelling a scan", () => {
  const CANCEL = "mutation ($id: ID!) { cancelScan(id: $id) { id status finishedAt } }";

  it("cancels the owner's queued scan and records the event", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice" });
    const response = await server.gql(CANCEL, { id: scan.id }, alice);
    expect(response.body.data.cancelScan.status).toBe("CANCELLED");
    const events = await server.app.deps.prisma.scanEvent.findMany({ where: { scanId: scan.id }, orderBy: { seq: "asc" } });
    expect(events.map((event) => [event.seq, event.code])).toEqual([
      [1, "QUEUED"],
      [2, "CANCELLED"],
    ]);
  });

  it("answers CONFLICT for a finished scan", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice", status: "SUCCEEDED" });
    const response = await server.gql(CANCEL, { id: scan.id }, alice);
    expect(response.status).toBe(409);
    expect(errorCodes(response)).toEqual(["CONFLICT"]);
  });

  it("lets an operator cancel anyone's scan, and nobody else", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "alice", status: "RUNNING" });
    expect(errorCodes(await server.gql(CANCEL, { id: scan.id }, bob))).toEqual(["NOT_FOUND"]);
    expect((await server.gql(CANCEL, { id: scan.id }, operator)).body.data.cancelScan.status).toBe("CANCELLED");
  });
});
