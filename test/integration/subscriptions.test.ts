import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { insertScan } from "../support/fixtures.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { connectWs, watchSubscriptions, type WsConnection } from "../support/ws.ts";

const WORKER_EVENTS = `subscription { workerHeartbeats { kind at worker { id name stale } } }`;
const SCAN_CHANGES = `subscription ($id: ID!) { scanStateChanged(scanId: $id) { from to scan { id status } } }`;
const REGISTER = `mutation ($name: String!) { registerWorker(input: { name: $name, host: "h", pid: 1, version: "1", capacity: 1 }) {
  token worker { id } } }`;
const HEARTBEAT = `mutation ($id: ID!) { workerHeartbeat(id: $id, input: { activeScans: 0, draining: false }) { id } }`;

let server: TestServer;
let opsToken: string;
let workerToken: string;
const connections: WsConnection[] = [];

beforeAll(async () => {
  server = await startTestServer();
  opsToken = await server.token("ops-olivia", { groups: ["vega-ops"] });
  workerToken = await server.token("worker-fleet", { scope: "worker" });
});
afterEach(async () => {
  await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
});
afterAll(() => server?.close());

function connect(token?: string) {
  const connection = connectWs(server.wsUrl, token);
  connections.push(connection);
  return connection;
}

/** Subscribes and resolves once the server listens for the topic's events. */
async function listening<T>(connection: WsConnection, topic: "workerEvent" | "scanStateChanged", query: string, variables?: Record<string, unknown>) {
  const watch = watchSubscriptions(server.app.deps.pubsub);
  try {
    const events = connection.subscribe<T>(query, variables);
    await watch.until(topic);
    return events;
  } finally {
    watch.restore();
  }
}

describe("a WebSocket connection needs a valid token", () => {
  it("closes the socket with 4401 when connection_init carries no token", async () => {
    const connection = connect();
    expect((await connection.closed).code).toBe(4401);
  });

  it("closes the socket with 4401 for a token that does not verify", async () => {
    const connection = connect("not.a.token");
    expect(await connection.closed).toMatchObject({ code: 4401, reason: expect.stringMatching(/malformed/) });
  });

  it("closes the socket with 4403 for a runner token", async () => {
    const connection = connect(await server.token("runner", { scope: "runner", scanId: "s" }));
    expect((await connection.closed).code).toBe(4403);
  });
});

describe("workerHeartbeats is for operators", () => {
  it("refuses a user who is not an operator, and a worker token, with FORBIDDEN when subscribing", async () => {
    for (const token of [await server.token("bob", { groups: ["developers"] }), workerToken]) {
      const events = connect(token).subscribe(WORKER_EVENTS);
      await expect(events.next()).rejects.toMatchObject({ codes: ["FORBIDDEN"] });
    }
  });

  it("delivers registry events to an operator", async () => {
    const events = await listening<any>(connect(opsToken), "workerEvent", WORKER_EVENTS);
    const registered = await server.gql(REGISTER, { name: "observed" }, workerToken);
    const { token, worker } = registered.body.data.registerWorker;
    await server.gql(HEARTBEAT, { id: worker.id }, token);
    expect((await events.next()).workerHeartbeats).toMatchObject({ kind: "REGISTERED", worker: { id: worker.id, name: "observed", stale: false } });
    expect((await events.next()).workerHeartbeats).toMatchObject({ kind: "HEARTBEAT", worker: { id: worker.id } });
  });
});

describe("scanStateChanged is for the scan's workspace", () => {
  it("answers NOT_FOUND to a member of another workspace, and opens no stream", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "carol" });
    const watch = watchSubscriptions(server.app.deps.pubsub);
    try {
      const connection = connect(await server.token("dave"));
      const events = connection.subscribe(SCAN_CHANGES, { id: scan.id });
      await expect(events.next()).rejects.toMatchObject({ codes: ["NOT_FOUND"] });
      // The owner's subscription on the same socket does listen: only the stranger's opened nothing.
      const owned = await insertScan(server.app.deps.prisma, { ownerId: "dave" });
      void connection.subscribe(SCAN_CHANGES, { id: owned.id }).next().catch(() => {});
      await watch.until("scanStateChanged");
      expect(watch.started("scanStateChanged")).toBe(1);
    } finally {
      watch.restore();
    }
  });

  it("delivers the cancellation of a scan to its owner", async () => {
    const scan = await insertScan(server.app.deps.prisma, { ownerId: "erin" });
    const erin = await server.token("erin");
    const events = await listening<any>(connect(erin), "scanStateChanged", SCAN_CHANGES, { id: scan.id });
    const cancelled = await server.gql(`mutation ($id: ID!) { cancelScan(id: $id) { status } }`, { id: scan.id }, erin);
    expect(cancelled.body.data.cancelScan.status).toBe("CANCELLED");
    expect((await events.next()).scanStateChanged).toEqual({ from: "QUEUED", to: "CANCELLED", scan: { id: scan.id, status: "CANCELLED" } });
  });
});

describe("GraphQL limits apply over WebSocket", () => {
  it("refuses a subscription document with more aliases than VEGA_GRAPHQL_MAX_ALIASES (31 of 30) before it runs", async () => {
    const watch = watchSubscriptions(server.app.deps.pubsub);
    try {
      // 31 aliases is some 100 tokens, far under the token limit: the alias limit is what refuses it.
      const aliases = Array.from({ length: 31 }, (_, index) => `k${index}: kind`).join(" ");
      const events = connect(opsToken).subscribe(`subscription { workerHeartbeats { ${aliases} } }`);
      const refusal = await events.next().catch((error: unknown) => error);
      expect(refusal).toMatchObject({ codes: ["BAD_USER_INPUT"], message: expect.stringMatching(/Aliases limit of 30 exceeded, found 31/) });
      expect(watch.started("workerEvent")).toBe(0);
    } finally {
      watch.restore();
    }
  });
});

describe("subscriptions over SSE", () => {
  it("streams workerHeartbeats as server-sent events on /graphql (Accept: text/event-stream)", async () => {
    const watch = watchSubscriptions(server.app.deps.pubsub);
    const abort = new AbortController();
    try {
      const responding = fetch(server.graphqlUrl, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream", authorization: `Bearer ${opsToken}` },
        body: JSON.stringify({ query: WORKER_EVENTS }),
        signal: abort.signal,
      });
      await watch.until("workerEvent");
      const response = await responding;
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);

      const registered = await server.gql(REGISTER, { name: "sse-observed" }, workerToken);
      const { token, worker } = registered.body.data.registerWorker;
      await server.gql(HEARTBEAT, { id: worker.id }, token);

      const events = readServerSentEvents(response.body!);
      const first = await events.next();
      const second = await events.next();
      expect(JSON.parse(first.value!.data).data.workerHeartbeats).toMatchObject({ kind: "REGISTERED", worker: { id: worker.id } });
      expect(JSON.parse(second.value!.data).data.workerHeartbeats).toMatchObject({ kind: "HEARTBEAT", worker: { id: worker.id } });
    } finally {
      watch.restore();
      abort.abort();
    }
  });

  it("answers FORBIDDEN over SSE to a user who is not an operator", async () => {
    const response = await fetch(server.graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream", authorization: `Bearer ${await server.token("bob")}` },
      body: JSON.stringify({ query: WORKER_EVENTS }),
    });
    const first = await readServerSentEvents(response.body!).next();
    expect(errorCodes({ status: response.status, headers: response.headers, body: JSON.parse(first.value!.data) })).toEqual(["FORBIDDEN"]);
  });
});

/** The `next` events of an SSE stream (keep-alive comments and `complete` skipped). */
async function* readServerSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const fields = Object.fromEntries(
        block
          .split("\n")
          .filter((line) => line !== "" && !line.startsWith(":"))
          .map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 1).trim()]),
      );
      if (fields.event === "next") yield { event: fields.event, data: fields.data };
    }
  }
}
