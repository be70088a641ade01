import { createLauncher } from "../worker/launchers/index.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../shared/config.ts";
import { openDatabase } from "../api/db/client.ts";
import { createApp } from "../api/server.ts";
import { errorCodes, startTestServer, TEST_JWT_SECRET, type TestServer } from "./support/server.ts";

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
  it("refuses a query nested 20 levels deep", async () => {
    let selection = "id";
    for (let level = 0; level < 20; level++) selection = `viewer { workspaces { owner { ${selection} } } }`.replace("viewer { workspaces { owner", "workspaces { owner");
    const query = `{ viewer { ${selection} } }`;
    const response = await server.gql(query, {}, token);
    expect(response.status).toBe(400);
    expect(response.body.data).toBeUndefined();
  });

  it("refuses 1,000 aliases", async () => {
    const query = `{ ${Array.from({ length: 1000 }, (_, index) => `a${index}: viewer { id }`).join(" ")} }`;
    const response = await server.gql(query, {}, token);
    expect(response.status).toBe(400);
    expect(errorCodes(response)).toContain("BAD_USER_INPUT");
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
    const response = await fetch(server.graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "query=%7B%20viewer%20%7B%20id%20%7D%20%7D",
    });
    expect(response.status).toBe(400);
  });

  it("echoes the caller's request id, or issues one", async () => {
    const echoed = await post(JSON.stringify({ query: "{ viewer { id } }" }), { "x-request-id": "trace-123" });
    expect(echoed.headers.get("x-request-id")).toBe("trace-123");
    const issued = await post(JSON.stringify({ query: "{ viewer { id } }" }));
    expect(issued.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("refuses `first` over 100 or below 0 rather than cutting the page silently", async () => {
    for (const first of [101, 1000, -1]) {
      const response = await server.gql("query ($first: Int) { scans(first: $first) { edges { node { id } } } }", { first }, token);
      expect(response.status).toBe(400);
      expect(errorCodes(response)).toEqual(["BAD_USER_INPUT"]);
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
