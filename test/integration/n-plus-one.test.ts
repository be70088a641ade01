import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureUserRow, insertScan } from "../support/fixtures.ts";
import { startTestServer, type TestServer } from "../support/server.ts";

let server: TestServer;
let statements: string[] = [];

beforeAll(async () => {
  // No worker sweep during the count: its statements, on a slow machine, landed inside a request's window.
  server = await startTestServer({ VEGA_WORKER_SWEEP_INTERVAL_SECONDS: "3600" }, { onQuery: (sql) => statements.push(sql) });
});
afterAll(() => server?.close());

const PAGE = `query ($w: ID!) {
  scans(first: 50, workspaceId: $w) {
    edges { node {
      id status owner { id } workspace { id name }
      events(first: 5) { edges { node { seq code } } pageInfo { hasNextPage } }
      findings(first: 5) { edges { node { ruleId severity path line } } }
      findingCounts { critical high medium low info }
    } }
  }
}`;

async function statementsForPageOf(scanCount: number, owner: string) {
  const prisma = server.app.deps.prisma;
  const workspaceId = await ensureUserRow(prisma, owner);
  for (let index = 0; index < scanCount; index++) {
    await insertScan(prisma, {
      ownerId: owner,
      workspaceId,
      events: 8,
      findings: [{ severity: "HIGH" }, { severity: "LOW" }, { severity: "CRITICAL" }],
    });
  }
  const token = await server.token(owner);
  await server.gql("{ viewer { id } }", {}, token); // first sight, outside the count
  statements = [];
  const response = await server.gql(PAGE, { w: workspaceId }, token);
  expect(response.body.errors).toBeUndefined();
  expect(response.body.data.scans.edges).toHaveLength(scanCount);
  const first = response.body.data.scans.edges[0].node;
  expect(first.events.edges).toHaveLength(5);
  expect(first.events.pageInfo.hasNextPage).toBe(true);
  expect(first.findingCounts).toEqual({ critical: 1, high: 1, medium: 0, low: 1, info: 0 });
  return statements.filter((sql) => !/^(BEGIN|COMMIT|--)/i.test(sql.trim()));
}

describe("a page of scans with nested lists costs a fixed number of statements", () => {
  it("issues as many SQL statements for 50 scans as for 5", async () => {
    const forFive = await statementsForPageOf(5, "five");
    const forFifty = await statementsForPageOf(50, "fifty");
    expect(forFifty.length).toBe(forFive.length);
    expect(forFive.length).toBeLessThanOrEqual(10);
  });
});
