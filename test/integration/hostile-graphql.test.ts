/**
 * Client mistakes in GraphQL requests answer a 4xx with a code, over HTTP, SSE
 * and WebSocket, and log no error; unexpected errors stay masked and logged.
 * The README's error table lists exactly the codes the server emits: every one
 * of them is provoked here through a real server and its status checked.
 */
import { createLauncher } from "../../worker/launchers/index.ts";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { readFile, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import { clientVisibleErrorCodes } from "../../shared/errors.ts";
import { createApp, type App } from "../../api/server.ts";
import { personalWorkspaceId } from "../../api/services/users.ts";
import { insertScan } from "../support/fixtures.ts";
import { capturingLogger, startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";
import { submitScan, SUBMIT_SCAN } from "../support/uploads.ts";
import { connectWs, SubscriptionError } from "../support/ws.ts";
import { buildNotAZip, buildZip } from "../support/zips.ts";

const { log, lines } = capturingLogger();
let server: TestServer;
let alice: string;
/** A server whose database is gone: every query fails unexpectedly. */
let broken: { app: App; database: Database; url: string; lines: Record<string, any>[] };

beforeAll(async () => {
  // A server whose database goes away once it runs: every query fails unexpectedly.
  const brokenConfig = loadConfig({
    VEGA_JWT_SECRET: TEST_JWT_SECRET,
    VEGA_DATA_DIR: os.tmpdir(),
    VEGA_ARTIFACT_DIR: path.join(os.tmpdir(), `vega-broken-${randomUUID()}`),
    VEGA_CLEANUP_INTERVAL_SECONDS: "0",
  });
  const captured = capturingLogger();
  const database = await openDatabase(brokenConfig, { inMemory: true });
  const app = await createApp(brokenConfig, { database, log: captured.log, openLauncher: (log) => createLauncher(brokenConfig, log) });
  broken = { app, database, url: await app.listen(0, "127.0.0.1"), lines: captured.lines };
  await database.sql.close();

  server = await startTestServer(
    {
      VEGA_LOG_LEVEL: "info",
      VEGA_MAX_SOURCE_BYTES: String(64 * 1024),
      VEGA_MAX_ARCHIVE_ENTRIES: "3",
      VEGA_MAX_ARCHIVE_UNCOMPRESSED_BYTES: String(32 * 1024),
      VEGA_MAX_ACTIVE_SCANS_PER_USER: "1",
      VEGA_MAX_SESSIONS_PER_WORKSPACE: "1",
      VEGA_UPLOAD_IDLE_SECONDS: "1",
    },
    { log },
  );
  alice = await server.token("alice");
});
afterAll(async () => {
  if (server) await expectServerStillUntouched(server);
  await server?.close();
  await broken?.app.close();
  // Its raw connection is closed already (that is what broke it); Prisma's client is what is left.
  await broken?.database.prisma.$disconnect();
  await rm(broken.app.deps.config.artifactStoreDir, { recursive: true, force: true });
});

/** A worker registering on the broken server: its resolver meets the missing database. */
const registerOnBroken = async () => {
  const worker = await server.token("fleet", { scope: "worker" });
  return fetch(`${broken.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${worker}` },
    body: JSON.stringify({ query: `mutation { registerWorker(input: { name: "w", host: "h", pid: 1, version: "1", capacity: 1 }) { worker { id } } }` }),
  });
};

async function post(body: string, headers: Record<string, string> = {}, method = "POST") {
  const response = await fetch(server.graphqlUrl, { method, headers: { "content-type": "application/json", ...headers }, body });
  const text = await response.text();
  const json = text === "" ? {} : JSON.parse(text);
  return { status: response.status, code: json.errors?.[0]?.extensions?.code as string | undefined, body: json, headers: response.headers };
}

const gql = (query: string, variables: Record<string, unknown> = {}, token?: string, headers: Record<string, string> = {}) =>
  post(JSON.stringify({ query, variables }), { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers });

/** The error lines logged while `work` ran. */
async function errorsLoggedDuring(work: () => Promise<unknown>) {
  const from = lines.length;
  await work();
  return lines.slice(from).filter((line) => line.level >= 50);
}

const SUBMIT = `mutation ($input: SubmitScanInput!) { submitScan(input: $input) { scan { id } } }`;

const mistakes: [string, string, Record<string, unknown>][] = [
  ["an object for an ID!", "query ($id: ID!) { scan(id: $id) { id } }", { id: { a: 1 } }],
  ["an unknown enum value", "query ($status: [ScanStatus!]) { scans(status: $status) { edges { node { id } } } }", { status: ["NOPE"] }],
  ["first: 2^40", "query ($first: Int) { scans(first: $first) { edges { node { id } } } }", { first: 2 ** 40 }],
  ["an unknown input field", SUBMIT, { input: { source: "x", bogus: 1 } }],
  ["input.source: null over JSON", SUBMIT, { input: { source: null } }],
  ["a missing required variable", "query ($id: ID!) { scan(id: $id) { id } }", {}],
];

describe("a variable that does not fit its type answers 400 BAD_USER_INPUT, logging no error", () => {
  it.each(mistakes)("for %s, from a user and from an anonymous caller", async (_mistake, query, variables) => {
    for (const token of [alice, undefined]) {
      let response!: Awaited<ReturnType<typeof gql>>;
      const logged = await errorsLoggedDuring(async () => (response = await gql(query, variables, token)));
      expect(response.status).toBe(400);
      expect(response.body.errors.map((error: { extensions: { code: string } }) => error.extensions.code)).toEqual(["BAD_USER_INPUT"]);
      expect(response.body.errors[0].message).toMatch(/^Variable "\$\w+"/);
      expect(JSON.stringify(response.body)).not.toMatch(/originalError|stack|\bat \//);
      expect(logged).toEqual([]);
    }
    await expectServerUntouched(server);
  });

  it("hides the enum suggestion from an anonymous caller and shows it to a user", async () => {
    const query = "query ($status: [ScanStatus!]) { scans(status: $status) { edges { node { id } } } }";
    expect((await gql(query, { status: ["QUEUE"] })).body.errors[0].message).not.toMatch(/Did you mean/);
    expect((await gql(query, { status: ["QUEUE"] }, alice)).body.errors[0].message).toMatch(/Did you mean the enum value "QUEUED"\?/);
  });

  it("over SSE, in the stream", async () => {
    const response = await fetch(server.graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream", authorization: `Bearer ${alice}` },
      body: JSON.stringify({ query: "subscription ($id: ID) { scanStateChanged(scanId: $id) { to } }", variables: { id: { a: 1 } } }),
    });
    const text = await response.text();
    expect(text).toContain('"code":"BAD_USER_INPUT"');
    expect(text).not.toContain("INTERNAL_SERVER_ERROR");
  });

  it("over WebSocket, failing that operation alone", async () => {
    const connection = connectWs(server.wsUrl, alice);
    try {
      const stream = connection.subscribe("subscription ($id: ID) { scanStateChanged(scanId: $id) { to } }", { id: { a: 1 } });
      const failure = await stream.next().catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(SubscriptionError);
      expect((failure as SubscriptionError).codes).toEqual(["BAD_USER_INPUT"]);
    } finally {
      await connection.dispose();
    }
    await expectServerUntouched(server);
  });
});

describe("an unexpected error stays masked and is logged with the request id", () => {
  it("answers 500 INTERNAL_SERVER_ERROR without the cause, and logs the cause under the request id", async () => {
    const response = await registerOnBroken();
    const body = await response.json();
    expect(response.status).toBe(500);
    expect(body.errors).toEqual([expect.objectContaining({ message: "Unexpected error.", extensions: { code: "INTERNAL_SERVER_ERROR" } })]);
    expect(JSON.stringify(body)).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|prisma/i);
    const requestId = response.headers.get("x-request-id");
    expect(broken.lines.find((line) => line.level >= 50 && line.requestId === requestId && line.err)).toBeDefined();
  });
});

/** The README's error table, row by row: code, statuses. */
async function readmeErrorTable() {
  const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("## Error codes"), readme.indexOf("## GraphQL limits"));
  return [...section.matchAll(/^\| `([A-Z_]+)` \| ([\d, ]+) \| (.+) \|$/gm)].map(([, code, statuses, meaning]) => ({
    code,
    statuses: statuses.split(", ").map(Number),
    meaning,
  }));
}

/** A raw request whose body stops arriving: the server cuts it after VEGA_UPLOAD_IDLE_SECONDS. */
async function stalledBody() {
  const { port } = new URL(server.url);
  const socket = net.connect(Number(port), "127.0.0.1");
  await once(socket, "connect");
  let answer = "";
  socket.on("data", (chunk) => (answer += chunk));
  const closed = once(socket, "close");
  socket.write(`POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"query":`);
  await closed;
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1]);
  return { status, code: /"code":"(\w+)"/.exec(answer)?.[1] };
}

describe("the README's error table", () => {
  it("lists exactly the codes of shared/errors.ts and graphql-yoga's, with their statuses and meanings", async () => {
    expect(await readmeErrorTable()).toEqual(clientVisibleErrorCodes().map(({ code, statuses, meaning }) => ({ code, statuses: [...statuses], meaning })));
  });

  it("holds every code the server emits, each with the status the table gives", async () => {
    const user = (name: string) => server.token(`${name}-${randomUUID()}`);
    const { prisma } = server.app.deps;
    const provoked: { code?: string; status: number }[] = [];
    const record = async (outcome: Promise<{ code?: string; status: number }>) => provoked.push(await outcome);

    await record(gql("{ ops { limits { maxSourceBytes } } }"));
    await record(gql("{ ops { limits { maxSourceBytes } } }", {}, alice));
    await record(gql("query ($id: ID!) { scan(id: $id) { id } }", { id: randomUUID() }, alice));
    await record(gql("query ($id: ID!) { scan(id: $id) { id } }", { id: { a: 1 } }, alice));
    await record(gql("{ viewer { id } }", {}, alice, { accept: "text/html" }));
    await record(stalledBody());
    const finished = await insertScan(prisma, { ownerId: "finisher", status: "SUCCEEDED" });
    await record(gql("mutation ($id: ID!) { cancelScan(id: $id) { id } }", { id: finished.id }, await server.token("finisher")));
    await record(post(JSON.stringify({ query: "{ viewer { id } }", variables: { padding: "x".repeat(2 * 1024 * 1024) } })));
    await record(submitScan(server, await user("big"), Buffer.alloc(100 * 1024, 1)));
    const files = (count: number) => Array.from({ length: count }, (_, index) => ({ name: `f${index}.ts`, data: "x" }));
    await record(submitScan(server, await user("many"), await buildZip(files(4))));
    await record(submitScan(server, await user("wide"), await buildZip([{ name: "a.ts", data: "a".repeat(40 * 1024) }])));
    await record(submitScan(server, await user("junk"), buildNotAZip()));
    const busy = `busy-${randomUUID()}`;
    await insertScan(prisma, { ownerId: busy });
    await record(submitScan(server, await server.token(busy), await buildZip(files(1))));
    const talker = `talker-${randomUUID()}`;
    const talkerToken = await server.token(talker);
    const createSession = `mutation ($id: ID!) { createSession(workspaceId: $id) { id } }`;
    await gql(createSession, { id: personalWorkspaceId(talker) }, talkerToken);
    await record(gql(createSession, { id: personalWorkspaceId(talker) }, talkerToken));
    await record(gql("{ scan(", {}, alice));
    await record(gql("{ nope }", {}, alice));
    await record(gql("query A { __typename } query B { __typename }", {}, alice));
    await record(post("{not json", { authorization: `Bearer ${alice}` }));
    await record(post("{}", { authorization: `Bearer ${alice}` }, "PUT"));
    const getMutation = await fetch(`${server.graphqlUrl}?query=${encodeURIComponent(SUBMIT_SCAN)}`, { headers: { authorization: `Bearer ${alice}` } });
    provoked.push({ status: getMutation.status, code: (await getMutation.json()).errors[0].extensions.code });
    const unexpected = await registerOnBroken();
    provoked.push({ status: unexpected.status, code: (await unexpected.json()).errors[0].extensions.code });

    const table = await readmeErrorTable();
    for (const outcome of provoked) {
      const row = table.find((candidate) => candidate.code === outcome.code);
      expect(row, `${outcome.code} ${outcome.status} is not in the README's table`).toBeDefined();
      expect(row!.statuses, outcome.code).toContain(outcome.status);
    }
    expect(new Set(provoked.map(({ code }) => code))).toEqual(new Set(table.map(({ code }) => code)));
    const seen = (code: string) => provoked.filter((outcome) => outcome.code === code).map(({ status }) => status);
    expect(new Set(seen("BAD_REQUEST"))).toEqual(new Set([400, 405]));
    await expectServerUntouched(server);
  }, 120_000);

  it("words graphql-armor's refusals as limits, not syntax errors", async () => {
    const deep = `{ viewer { ${"workspaces { owner { ".repeat(8)}id${" } }".repeat(8)} } }`;
    const aliases = `{ ${Array.from({ length: 40 }, (_, index) => `a${index}: viewer { id }`).join(" ")} }`;
    const costly = "{ scans(first: 100) { edges { node { findings(first: 100) { edges { node { id ruleId path line } } } } } } }";
    const tokens = `{ viewer { ${"id ".repeat(2500)} } }`;
    const directives = `{ viewer { id ${"@skip(if: false) ".repeat(60)} } }`;
    for (const query of [deep, aliases, costly, tokens, directives]) {
      const response = await gql(query, {}, alice);
      expect(response.status, query.slice(0, 40)).toBe(400);
      expect(response.code).toBe("BAD_USER_INPUT");
      expect(response.body.errors[0].message).not.toMatch(/^Syntax Error/);
    }
  });
});
