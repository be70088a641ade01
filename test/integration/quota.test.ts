import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { buildZip } from "../support/zips.ts";

let server: TestServer;
let archive: Buffer;

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "4", VEGA_MAX_SESSIONS_PER_WORKSPACE: "4" });
  archive = await buildZip([{ name: "src/app.ts", data: "console.log('hi');\n" }]);
});
afterAll(() => server?.close());

describe("the active-scan quota", () => {
  it("creates exactly 4 scans out of 100 concurrent submissions with limit 4", async () => {
    const token = await server.token("racer");
    await server.gql("{ viewer { id } }", {}, token);
    const responses = await Promise.all(Array.from({ length: 100 }, () => submitScan(server, token, archive)));
    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(4);
    expect(statuses.filter((status) => status === 429)).toHaveLength(96);
    expect(responses.find((response) => response.status === 429)?.code).toBe("QUOTA_EXCEEDED");
    expect(await server.app.deps.prisma.scan.count({ where: { ownerId: "racer" } })).toBe(4);
    expect(await server.app.deps.prisma.artifact.count({ where: { ownerId: "racer" } })).toBe(4);
  });

  it("says the limit and the current count, and frees a place when a scan is cancelled", async () => {
    const token = await server.token("dora");
    for (let index = 0; index < 4; index++) expect((await submitScan(server, token, archive)).status).toBe(200);
    const refused = await submitScan(server, token, archive);
    expect(refused.status).toBe(429);
    expect(refused.body.errors[0].message).toMatch(/4 scans queued, starting or running, limit 4/);
    expect(refused.body.errors[0].extensions).toMatchObject({ limit: 4, active: 4 });

    const quota = await server.gql("{ viewer { quota { maxActiveScans activeScans remaining } } }", {}, token);
    expect(quota.body.data.viewer.quota).toEqual({ maxActiveScans: 4, activeScans: 4, remaining: 0 });

    const operator = await server.token("olivia", { groups: ["vega-ops"] });
    const ops = await server.gql(
      'query { ops { userQuota(userId: "dora") { limit active activeScans { id status queuedAt } } } }',
      {},
      operator,
    );
    const userQuota = ops.body.data.ops.userQuota;
    expect(userQuota).toMatchObject({ limit: 4, active: 4 });
    expect(userQuota.activeScans).toHaveLength(4);

    await server.gql("mutation ($id: ID!) { cancelScan(id: $id) { id } }", { id: userQuota.activeScans[0].id }, operator);
    expect((await submitScan(server, token, archive)).status).toBe(200);
  });
});

describe("the open-session limit", () => {
  const CREATE = "mutation ($w: ID!) { createSession(workspaceId: $w) { id expiresAt closedAt } }";

  it("opens exactly 4 sessions out of 100 concurrent requests with limit 4", async () => {
    const token = await server.token("sam");
    const viewer = await server.gql("{ viewer { workspaces { id } } }", {}, token);
    const workspaceId = viewer.body.data.viewer.workspaces[0].id;
    const responses = await Promise.all(Array.from({ length: 100 }, () => server.gql(CREATE, { w: workspaceId }, token)));
    expect(responses.filter((response) => response.status === 200)).toHaveLength(4);
    const refused = responses.filter((response) => response.status === 429);
    expect(refused).toHaveLength(96);
    expect(refused[0].body.errors?.[0].extensions?.code).toBe("SESSION_LIMIT_EXCEEDED");
    expect(await server.app.deps.prisma.session.count({ where: { workspaceId } })).toBe(4);
  });

  it("does not count closed or expired sessions", async () => {
    const token = await server.token("tess");
    const viewer = await server.gql("{ viewer { workspaces { id } } }", {}, token);
    const workspaceId = viewer.body.data.viewer.workspaces[0].id;
    const ids: string[] = [];
    for (let index = 0; index < 4; index++) ids.push((await server.gql(CREATE, { w: workspaceId }, token)).body.data.createSession.id);
    expect((await server.gql(CREATE, { w: workspaceId }, token)).status).toBe(429);

    const closed = await server.gql("mutation ($id: ID!) { closeSession(id: $id) { closedAt } }", { id: ids[0] }, token);
    expect(closed.body.data.closeSession.closedAt).not.toBeNull();
    await server.app.deps.prisma.session.update({ where: { id: ids[1] }, data: { expiresAt: new Date(Date.now() - 1000) } });
    expect((await server.gql(CREATE, { w: workspaceId }, token)).status).toBe(200);
    expect((await server.gql(CREATE, { w: workspaceId }, token)).status).toBe(200);
    expect((await server.gql(CREATE, { w: workspaceId }, token)).status).toBe(429);

    const listed = await server.gql(
      "query { viewer { workspaces { sessions { id } all: sessions(includeClosed: true) { id } } } }",
      {},
      token,
    );
    expect(listed.body.data.viewer.workspaces[0].sessions).toHaveLength(4);
    expect(listed.body.data.viewer.workspaces[0].all).toHaveLength(6);
  });

  it("lets only the session's user close it", async () => {
    const owner = await server.token("uma");
    const viewer = await server.gql("{ viewer { workspaces { id } } }", {}, owner);
    const session = await server.gql(CREATE, { w: viewer.body.data.viewer.workspaces[0].id }, owner);
    const id = session.body.data.createSession.id;
    const CLOSE = "mutation ($id: ID!) { closeSession(id: $id) { id closedAt } }";
    const openSessions = async () =>
      (await server.gql("{ viewer { workspaces { sessions { id } } } }", {}, owner)).body.data.viewer.workspaces[0].sessions.map((open: { id: string }) => open.id);
    const other = await server.gql(CLOSE, { id }, await server.token("vic"));
    expect(other.body.errors?.[0].extensions?.code).toBe("NOT_FOUND");
    // The stranger's attempt left it open; its own user closes it.
    expect(await openSessions()).toContain(id);
    const closed = await server.gql(CLOSE, { id }, owner);
    expect(closed.body.errors).toBeUndefined();
    expect(closed.body.data.closeSession).toMatchObject({ id, closedAt: expect.any(String) });
    expect(await openSessions()).not.toContain(id);
  });
});
