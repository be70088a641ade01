import { createLauncher } from "../../worker/launchers/index.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase } from "../../api/db/client.ts";
import { createApp } from "../../api/server.ts";
import { insertScan } from "../support/fixtures.ts";
import { errorCodes, startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";

let server: TestServer;
let token: string;
beforeAll(async () => {
  server = await startTestServer();
  token = await server.token("alice", { groups: ["vega-ops"] });
});
afterAll(() => server?.close());

const post = (body: string, headers: Record<string, string> = {}) =>
  fetch(server.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...headers },
    body,
  });

describe("GraphQL operation limits refuse abusive queries with 400 before execution", () => {
  /** A valid query `pairs` × (sessions → workspace) deep: Workspace.sessions and Session.workspace make a cycle. */
  const nested = (pairs: number) => `{ viewer { workspaces { ${"sessions { workspace { ".repeat(pairs)}id${" } }".repeat(pairs)} } } }`;

  it("refuses a query nested 20 levels deep (a valid one, refused by the depth limit)", async () => {
    // Within the limit (VEGA_GRAPHQL_MAX_DEPTH 12) the same shape runs: the query itself is fine.
    const within = await server.gql(nested(4), {}, token);
    expect(within.status).toBe(200);
    expect(within.body.errors).toBeUndefined();
    const response = await server.gql(nested(9), {}, token);
    expect(response.status).toBe(400);
    expect(errorCodes(response)).toEqual(["BAD_USER_INPUT"]);
    expect(response.body.errors?.[0].message).toMatch(/depth limit of 12 exceeded, found 2\d/);
    expect(response.body.data).toBeUndefined();
  });

  it("refuses more aliases than VEGA_GRAPHQL_MAX_ALIASES (31 of 30), far under the token limit", async () => {
    const aliased = (count: number) => `{ ${Array.from({ length: count }, (_, index) => `a${index}: viewer { id }`).join(" ")} }`;
    const within = await server.gql(aliased(30), {}, token);
    expect(within.status).toBe(200);
    expect(within.body.errors).toBeUndefined();
    const response = await server.gql(aliased(31), {}, token);
    expect(response.status).toBe(400);
    expect(errorCodes(response)).toContain("BAD_USER_INPUT");
    expect(response.body.errors?.[0].message).toMatch(/Aliases limit of 30 exceeded, found 31/);
    expect(response.body.data).toBeUndefined();
  });

  it("refuses a query deeper than VEGA_GRAPHQL_MAX_DEPTH with a message naming the limit", async () => {
    const shallow = await startTestServer({ VEGA_GRAPHQL_MAX_DEPTH: "3" });
    try {
      const response = await shallow.gql(
        "{ scans { edges { node { workspace { owner { id } } } } } }",
        {},
        await shallow.token("alice"),
      );
      expect(response.status).toBe(400);
      expect(response.body.errors?.[0].message).toMatch(/depth/i);
    } finally {
      await shallow.close();
    }
  });
});

describe("request bodies", () => {
  it("refuses a JSON body over 1 MiB with 413", async () => {
    const padding = "x".repeat(1024 * 1024 + 10);
    const response = await post(JSON.stringify({ query: "{ viewer { id } }", variables: { padding } }));
    expect(response.status).toBe(413);
    expect((await response.json()).errors[0].extensions.code).toBe("PAYLOAD_TOO_LARGE");
  });

  it("refuses a form post (a cross-site request a browser would send without preflight)", async () => {
    const form = "query=%7B%20viewer%20%7B%20id%20%7D%20%7D";
    const response = await fetch(server.graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Bearer ${token}` },
      body: form,
    });
    expect(response.status).toBe(400);
    const body = await response.json();
    expect(body.errors[0].extensions.code).toBe("BAD_USER_INPUT");
    expect(body.data).toBeUndefined();
    // The same operation as JSON runs: the form encoding is what is refused.
    const json = await post(JSON.stringify({ query: "{ viewer { id } }" }));
    expect(json.status).toBe(200);
  });

  it("echoes the caller's request id, or issues one", async () => {
    const echoed = await post(JSON.stringify({ query: "{ viewer { id } }" }), { "x-request-id": "trace-123" });
    expect(echoed.headers.get("x-request-id")).toBe("trace-123");
    const issued = await post(JSON.stringify({ query: "{ viewer { id } }" }));
    expect(issued.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("refuses `first` over 100 or below 0 rather than cutting the page silently", async () => {
    // More rows than the cap, so that a cut page would show: 100 come back, and the rest on the next page.
    const prisma = server.app.deps.prisma;
    const { sourceArtifactId, workspaceId } = await insertScan(prisma, { ownerId: "alice", status: "SUCCEEDED", events: 0 });
    await prisma.scan.createMany({
      data: Array.from({ length: 100 }, () => ({ ownerId: "alice", workspaceId, sourceArtifactId, status: "SUCCEEDED" as const, finishedAt: new Date() })),
    });
    const page = await server.gql("{ scans(first: 100) { edges { node { id } } pageInfo { hasNextPage } } }", {}, token);
    expect(page.body.data.scans.edges).toHaveLength(100);
    expect(page.body.data.scans.pageInfo.hasNextPage).toBe(true);
    for (const first of [101, 1000, -1]) {
      const response = await server.gql("query ($first: Int) { scans(first: $first) { edges { node { id } } } }", { first }, token);
      expect(response.status).toBe(400);
      expect(errorCodes(response)).toEqual(["BAD_USER_INPUT"]);
      expect(response.body.errors?.[0].message).toMatch(/first/);
      expect(response.body.data ?? null).toBeNull();
    }
  });
});

describe("health probes", () => {
  it("answers /healthz and /readyz with 200 while the database is reachable", async () => {
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready", database: { status: "ok" } });
  });

  it("answers /readyz with 503 when the database is unreachable, while /healthz stays 200", async () => {
    const config = loadConfig({ VEGA_JWT_SECRET: TEST_JWT_SECRET, VEGA_DATA_DIR: server.dataDir, VEGA_LOG_LEVEL: "silent", VEGA_CLEANUP_INTERVAL_SECONDS: "0" });
    const database = await openDatabase(config, { inMemory: true });
    const app = await createApp(config, { database, openLauncher: (log) => createLauncher(config, log) });
    try {
      const url = await app.listen(0, "127.0.0.1");
      // The database goes away under a running server.
      await database.sql.close();
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: "unavailable", database: { status: "unreachable" } });
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
    } finally {
      await app.close();
      await database.prisma.$disconnect();
    }
  });
});
