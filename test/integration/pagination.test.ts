/**
 * Every connection pages both ways (Relay's first/after and last/before, and
 * a range between two cursors), and refuses a page over 100 rows instead of
 * cutting it silently. Through a real server.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { insertScan } from "../support/fixtures.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";

let server: TestServer;
let owner: string;
let operator: string;
let scanId: string;

const PAGE_ARGS = "$first: Int, $after: String, $last: Int, $before: String";
const PAGE = "first: $first, after: $after, last: $last, before: $before";
const PAGE_FIELDS = "edges { cursor node { key: id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor }";

interface PageArgs {
  first?: number;
  after?: string;
  last?: number;
  before?: string;
}

interface ConnectionUnderTest {
  name: string;
  /** The connection's page for these arguments, as the server answers it. */
  read(args: PageArgs): ReturnType<TestServer["gql"]>;
  /** Where the connection is in the response's data. */
  pick(data: any): { edges: { cursor: string; node: { key: string | number } }[]; pageInfo: Record<string, any> };
}

const connections: ConnectionUnderTest[] = [
  {
    name: "scans",
    read: (args) => server.gql(`query (${PAGE_ARGS}) { scans(${PAGE}) { ${PAGE_FIELDS} } }`, { ...args }, owner),
    pick: (data) => data.scans,
  },
  {
    name: "Scan.events",
    read: (args) =>
      server.gql(
        `query ($id: ID!, ${PAGE_ARGS}) { scan(id: $id) { events(${PAGE}) { ${PAGE_FIELDS.replace("key: id", "key: seq")} } } }`,
        { id: scanId, ...args },
        owner,
      ),
    pick: (data) => data.scan.events,
  },
  {
    name: "Scan.findings",
    read: (args) => server.gql(`query ($id: ID!, ${PAGE_ARGS}) { scan(id: $id) { findings(${PAGE}) { ${PAGE_FIELDS} } } }`, { id: scanId, ...args }, owner),
    pick: (data) => data.scan.findings,
  },
  {
    name: "Ops.auditLog",
    read: (args) => server.gql(`query (${PAGE_ARGS}) { ops { auditLog(${PAGE}) { ${PAGE_FIELDS} } } }`, { ...args }, operator),
    pick: (data) => data.ops.auditLog,
  },
  {
    name: "CleanupStatus.runs",
    read: (args) => server.gql(`query (${PAGE_ARGS}) { ops { cleanup { runs(${PAGE}) { ${PAGE_FIELDS} } } } }`, { ...args }, operator),
    pick: (data) => data.ops.cleanup.runs,
  },
];

async function page(connection: ConnectionUnderTest, args: PageArgs) {
  const response = await connection.read(args);
  expect(response.body.errors, JSON.stringify(response.body.errors)).toBeUndefined();
  const { edges, pageInfo } = connection.pick(response.body.data);
  return { keys: edges.map((edge) => edge.node.key), cursors: edges.map((edge) => edge.cursor), pageInfo };
}

beforeAll(async () => {
  server = await startTestServer();
  owner = await server.token("pager");
  operator = await server.token("ops", { groups: ["vega-ops"] });
  const { prisma } = server.app.deps;
  const base = Date.parse("2026-01-01T00:00:00Z");
  // Seven of each, two of them sharing their sort time, so that the id breaks the tie both ways.
  const times = [0, 1, 2, 3, 3, 4, 5].map((minutes) => new Date(base + minutes * 60_000));
  for (const createdAt of times) {
    const scan = await insertScan(prisma, {
      ownerId: "pager",
      createdAt,
      events: 7,
      findings: ["CRITICAL", "HIGH", "HIGH", "MEDIUM", "LOW", "LOW", "INFO"].map((severity) => ({ severity: severity as "HIGH" })),
    });
    scanId = scan.id;
  }
  for (const at of times) await prisma.auditEntry.create({ data: { actor: "ops", action: "cleanup.trigger", at } });
  for (const startedAt of times) {
    await prisma.cleanupRun.create({ data: { trigger: "OPERATOR", status: "SUCCEEDED", startedAt, finishedAt: startedAt } });
  }
});
afterAll(async () => {
  if (server) await expectServerStillUntouched(server);
  await server?.close();
});

describe.each(connections)("$name pages both ways", (connection) => {
  it("walks the same rows backwards with last/before as forwards with first/after", async () => {
    const everything = (await page(connection, { first: 100 })).keys;
    expect(everything).toHaveLength(7);

    const forwards: (string | number)[] = [];
    let after: string | undefined;
    for (;;) {
      const { keys, pageInfo } = await page(connection, { first: 3, after });
      forwards.push(...keys);
      expect(pageInfo.hasPreviousPage).toBe(after !== undefined);
      if (!pageInfo.hasNextPage) break;
      after = pageInfo.endCursor;
    }
    expect(forwards).toEqual(everything);

    const backwards: (string | number)[] = [];
    let before: string | undefined;
    for (;;) {
      const { keys, pageInfo } = await page(connection, { last: 3, before });
      backwards.unshift(...keys);
      expect(pageInfo.hasNextPage).toBe(before !== undefined);
      if (!pageInfo.hasPreviousPage) break;
      before = pageInfo.startCursor;
    }
    expect(backwards).toEqual(everything);
  });

  it("answers the rows between two cursors, from either end", async () => {
    const { keys, cursors } = await page(connection, { first: 7 });
    const range = { after: cursors[1], before: cursors[5] };
    expect((await page(connection, range)).keys).toEqual(keys.slice(2, 5));
    expect((await page(connection, { ...range, first: 2 })).keys).toEqual(keys.slice(2, 4));
    expect((await page(connection, { ...range, last: 2 })).keys).toEqual(keys.slice(3, 5));
    expect((await page(connection, { before: cursors[3], last: 1 })).keys).toEqual([keys[2]]);
  });

  it("refuses first or last over 100, both at once, and a cursor it did not issue, with 400 BAD_USER_INPUT", async () => {
    for (const args of [{ first: 101 }, { last: 101 }, { last: -1 }, { first: 1, last: 1 }, { before: "bm90LWEtY3Vyc29y" }]) {
      const response = await connection.read(args);
      expect(response.status, JSON.stringify(args)).toBe(400);
      expect(errorCodes(response), JSON.stringify(args)).toEqual(["BAD_USER_INPUT"]);
    }
    await expectServerUntouched(server);
  });
});

describe("the issue's example", () => {
  it("events(before: <seq 4>, last: 1) answers seq 3", async () => {
    const events = connections.find((connection) => connection.name === "Scan.events")!;
    const { cursors } = await page(events, { first: 7 });
    expect((await page(events, { before: cursors[3], last: 1 })).keys).toEqual([3]);
  });

  it("nested pages read from the end for every scan of a page at once", async () => {
    const response = await server.gql("{ scans(first: 3) { edges { node { events(last: 2) { edges { node { seq } } } } } } }", {}, owner);
    expect(response.body.errors).toBeUndefined();
    for (const edge of response.body.data.scans.edges) {
      expect(edge.node.events.edges.map((event: { node: { seq: number } }) => event.node.seq)).toEqual([6, 7]);
    }
  });
});
