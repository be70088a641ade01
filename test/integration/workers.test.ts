import type { ChildProcess } from "node:child_process";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { reportStaleWorkers } from "../../api/services/worker-sweeper.ts";
import { errorCodeOf } from "../../shared/errors.ts";
import { authorizeWorkerAccess, registerWorker, workerLiveness } from "../../api/services/workers.ts";
import { nextHeartbeatDelayMs, retryDelayMs } from "../../worker/heartbeat.ts";
import { runVega, startVega, stopProcess } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { errorCodes, startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { connectWs, watchSubscriptions, type EventStream, type WsConnection } from "../support/ws.ts";

/** Starting a `vega` process (tsx, PGlite) takes seconds, and many more on a loaded machine. */
const PROCESS_START_MS = 120_000;
const PROCESS_TEST_MS = 200_000;

const TIMING = {
  VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
  VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "3",
  VEGA_WORKER_SWEEP_INTERVAL_SECONDS: "1",
};

const WORKER_EVENTS = `subscription { workerHeartbeats { kind at worker { id name stale draining activeScans capacity lastHeartbeatAt } } }`;
const WORKERS = `query ($includeStale: Boolean) { ops { workers(includeStale: $includeStale) {
  id name host pid version capacity activeScans draining startedAt lastHeartbeatAt secondsSinceHeartbeat stale } } }`;
const REGISTER = `mutation ($input: RegisterWorkerInput!) { registerWorker(input: $input) { token worker { id name stale } } }`;
const HEARTBEAT = `mutation ($id: ID!, $draining: Boolean!) { workerHeartbeat(id: $id, input: { activeScans: 1, draining: $draining }) { id draining activeScans } }`;
const DEREGISTER = `mutation ($id: ID!) { deregisterWorker(id: $id) { id deregisteredAt } }`;

interface WorkerEvent {
  workerHeartbeats: { kind: string; at: string; worker: { id: string; name: string; stale: boolean; draining: boolean } };
}

let server: TestServer;
let opsToken: string;
let deploymentToken: string;
const children: ChildProcess[] = [];
const connections: WsConnection[] = [];

beforeAll(async () => {
  server = await startTestServer(TIMING);
  opsToken = await server.token("ops-alice", { groups: ["vega-ops"] });
  deploymentToken = await server.token("worker-fleet", { scope: "worker" });
});
afterEach(async () => {
  await Promise.all(children.splice(0).map((child) => stopProcess(child, "SIGKILL")));
  await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
});
afterAll(() => server?.close());

async function startWorker(name: string, env: Record<string, string> = {}) {
  const started = await startVega(
    ["worker"],
    { ...TIMING, VEGA_API_URL: server.graphqlUrl, VEGA_WORKER_TOKEN: deploymentToken, VEGA_WORKER_NAME: name, ...env },
    /"msg":"worker registered"/,
    { timeoutMs: PROCESS_START_MS },
  );
  children.push(started.child);
  const workerId = /"workerId":"([^"]+)","name":"[^"]*"[^\n]*"msg":"worker registered"/.exec(started.output())![1];
  return { ...started, workerId };
}

/** An operator's workerHeartbeats subscription, listening once this resolves. */
async function watchWorkerEvents(): Promise<EventStream<WorkerEvent>> {
  const watch = watchSubscriptions(server.app.deps.pubsub);
  try {
    const connection = connectWs(server.wsUrl, opsToken);
    connections.push(connection);
    const events = connection.subscribe<WorkerEvent>(WORKER_EVENTS);
    await watch.until("workerEvent");
    return events;
  } finally {
    watch.restore();
  }
}

const eventOf = (workerId: string, kind: string) => (event: WorkerEvent) =>
  event.workerHeartbeats.worker.id === workerId && event.workerHeartbeats.kind === kind;

async function registryRows(includeStale = true) {
  const response = await server.gql(WORKERS, { includeStale }, opsToken);
  expect(response.body.errors).toBeUndefined();
  return response.body.data.ops.workers as { id: string; name: string; stale: boolean; secondsSinceHeartbeat: number }[];
}

async function register(name: string, token = deploymentToken) {
  return server.gql(REGISTER, { input: { name, host: "test-host", pid: 4242, version: "0.1.0", capacity: 2 } }, token);
}

describe("a running worker process is in the registry with a fresh heartbeat", () => {
  it("registers under its name, beats on the interval, and shows in ops.workers", async () => {
    const events = await watchWorkerEvents();
    const { workerId } = await startWorker("listed-worker", { VEGA_WORKER_CAPACITY: "3" });
    await events.nextMatching(eventOf(workerId, "HEARTBEAT"));
    const row = (await registryRows()).find((worker) => worker.id === workerId);
    expect(row).toMatchObject({ name: "listed-worker", capacity: 3, activeScans: 0, draining: false, stale: false, version: "0.1.0" });
  }, PROCESS_TEST_MS);
});

describe("a worker that stops heartbeating is reported stale", () => {
  it("shows stale: true and publishes one STALE event after a SIGKILL", async () => {
    const events = await watchWorkerEvents();
    const { child, workerId } = await startWorker("killed-worker");
    await events.nextMatching(eventOf(workerId, "HEARTBEAT"));
    await stopProcess(child, "SIGKILL");

    const stale = await events.nextMatching(eventOf(workerId, "STALE"));
    expect(stale.workerHeartbeats.worker.stale).toBe(true);
    const row = (await registryRows()).find((worker) => worker.id === workerId);
    expect(row).toMatchObject({ stale: true });
    expect(row!.secondsSinceHeartbeat).toBeGreaterThanOrEqual(3);
    expect((await registryRows(false)).map((worker) => worker.id)).not.toContain(workerId);
    // The mark is set: no later sweep, on this replica or another, reports it again.
    expect(await reportStaleWorkers(server.app.deps)).toEqual([]);
  }, PROCESS_TEST_MS);
});

describe("a stopped worker drains and deregisters", () => {
  it("publishes DRAINING then DEREGISTERED on SIGTERM, exits 0 and leaves the registry", async () => {
    const events = await watchWorkerEvents();
    const { child, workerId } = await startWorker("terminated-worker");
    await events.nextMatching(eventOf(workerId, "HEARTBEAT"));

    expect(await stopProcess(child, "SIGTERM")).toBe(0);
    const draining = await events.nextMatching((event) => event.workerHeartbeats.worker.id === workerId && event.workerHeartbeats.kind !== "HEARTBEAT");
    expect(draining.workerHeartbeats).toMatchObject({ kind: "DRAINING", worker: { draining: true } });
    await events.nextMatching(eventOf(workerId, "DEREGISTERED"));
    expect((await registryRows()).map((worker) => worker.id)).not.toContain(workerId);
  }, PROCESS_TEST_MS);

  it("stops cleanly (exit 0) when signalled before the API ever answered", async () => {
    const started = await startVega(
      ["worker"],
      { ...TIMING, VEGA_API_URL: "http://127.0.0.1:9/graphql", VEGA_WORKER_TOKEN: deploymentToken, VEGA_WORKER_SHUTDOWN_SECONDS: "5" },
      /registration failed; retrying[\s\S]*registration failed; retrying/,
      { timeoutMs: PROCESS_START_MS },
    );
    children.push(started.child);
    expect(await stopProcess(started.child, "SIGTERM")).toBe(0);
  }, PROCESS_TEST_MS);
});

describe("a worker whose registration is gone registers again", () => {
  it("re-registers under the same name when its row is deregistered behind its back", async () => {
    const events = await watchWorkerEvents();
    const { workerId } = await startWorker("resilient-worker");
    await events.nextMatching(eventOf(workerId, "HEARTBEAT"));
    const bound = await server.token("worker-fleet", { scope: "worker", workerId });
    expect((await server.gql(DEREGISTER, { id: workerId }, bound)).body.errors).toBeUndefined();

    const again = await events.nextMatching(
      (event) => event.workerHeartbeats.kind === "REGISTERED" && event.workerHeartbeats.worker.name === "resilient-worker",
    );
    expect(again.workerHeartbeats.worker.id).not.toBe(workerId);
    await events.nextMatching(eventOf(again.workerHeartbeats.worker.id, "HEARTBEAT"));
  }, PROCESS_TEST_MS);
});

describe("only a worker's own session token may act on it", () => {
  it("answers registerWorker with a token bound to the new worker", async () => {
    const response = await register("token-holder");
    expect(response.body.errors).toBeUndefined();
    const { token, worker } = response.body.data.registerWorker;
    const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
    expect(claims).toMatchObject({ sub: "worker-fleet", vega_scope: "worker", vega_worker_id: worker.id });
    const beat = await server.gql(HEARTBEAT, { id: worker.id, draining: false }, token);
    expect(beat.body.data.workerHeartbeat).toEqual({ id: worker.id, draining: false, activeScans: 1 });
  });

  it("refuses (FORBIDDEN) a heartbeat or deregistration with a token bound to another worker", async () => {
    const mine = (await register("mine")).body.data.registerWorker;
    const theirs = (await register("theirs")).body.data.registerWorker;
    const beat = await server.gql(HEARTBEAT, { id: theirs.worker.id, draining: false }, mine.token);
    expect(beat.status).toBe(403);
    expect(errorCodes(beat)).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(DEREGISTER, { id: theirs.worker.id }, mine.token))).toEqual(["FORBIDDEN"]);
  });

  it("refuses (FORBIDDEN) the deployment's unbound worker token, which may only register", async () => {
    const registered = (await register("unbound")).body.data.registerWorker;
    expect(errorCodes(await server.gql(HEARTBEAT, { id: registered.worker.id, draining: false }, deploymentToken))).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(DEREGISTER, { id: registered.worker.id }, deploymentToken))).toEqual(["FORBIDDEN"]);
  });

  it("refuses (FORBIDDEN) registration with a user token, an operator's included", async () => {
    for (const token of [await server.token("bob"), opsToken]) {
      const response = await register("impostor", token);
      expect(response.status).toBe(403);
      expect(errorCodes(response)).toEqual(["FORBIDDEN"]);
    }
    expect(errorCodes(await register("anonymous", ""))).toEqual(["UNAUTHENTICATED"]);
  });

  it("refuses (BAD_USER_INPUT) a registration without a name or capacity", async () => {
    const response = await server.gql(REGISTER, { input: { name: " ", host: "h", pid: 1, version: "1", capacity: 0 } }, deploymentToken);
    expect(errorCodes(response)).toEqual(["BAD_USER_INPUT"]);
  });
});

describe("without a signing key (tokens from a JWKS issuer)", () => {
  const fleet = { sub: "worker-fleet", groups: [], scope: "worker" as const };

  it("registers without minting a session token", async () => {
    const input = { name: "jwks-worker", host: "h", pid: 1, version: "1", capacity: 1 };
    const { token, worker } = await registerWorker({ ...server.app.deps, signingKey: undefined }, { principal: fleet, isOperator: false, user: null }, input);
    expect(token).toBeNull();
    expect(worker.name).toBe("jwks-worker");
  });

  it("lets the issuer's unbound worker token act on workers, and still holds a bound token to its worker", () => {
    expect(() => authorizeWorkerAccess(fleet, "w-1", { mintsSessionTokens: false })).not.toThrow();
    const refusal = (() => {
      try {
        authorizeWorkerAccess({ ...fleet, workerId: "w-2" }, "w-1", { mintsSessionTokens: false });
      } catch (error) {
        return error;
      }
    })();
    expect(errorCodeOf(refusal)).toBe("FORBIDDEN");
  });
});

describe("a deregistered worker is gone", () => {
  it("answers CONFLICT to its heartbeats and to a second deregistration", async () => {
    const { token, worker } = (await register("leaving")).body.data.registerWorker;
    expect((await server.gql(DEREGISTER, { id: worker.id }, token)).body.data.deregisterWorker.deregisteredAt).toBeTruthy();
    const beat = await server.gql(HEARTBEAT, { id: worker.id, draining: false }, token);
    expect(beat.status).toBe(409);
    expect(errorCodes(beat)).toEqual(["CONFLICT"]);
    expect(errorCodes(await server.gql(DEREGISTER, { id: worker.id }, token))).toEqual(["CONFLICT"]);
  });
});

describe("the registry's events", () => {
  it("publishes DRAINING on the first draining heartbeat only", async () => {
    const events = await watchWorkerEvents();
    const { token, worker } = (await register("drainer")).body.data.registerWorker;
    await events.nextMatching(eventOf(worker.id, "REGISTERED"));
    await server.gql(HEARTBEAT, { id: worker.id, draining: true }, token);
    await server.gql(HEARTBEAT, { id: worker.id, draining: true }, token);
    await events.nextMatching(eventOf(worker.id, "DRAINING"));
    await events.nextMatching(eventOf(worker.id, "HEARTBEAT"));
    expect(events.received.filter(eventOf(worker.id, "DRAINING"))).toHaveLength(1);
  });

  it("reports each stale worker once, however many sweeps run at the same time", async () => {
    const events = await watchWorkerEvents();
    const { token, worker } = (await register("silent")).body.data.registerWorker;
    await server.app.deps.prisma.worker.update({ where: { id: worker.id }, data: { lastHeartbeatAt: new Date(Date.now() - 3_600_000) } });
    // Four here, and the test server's own sweeper (every second) racing them.
    const sweeps = await Promise.all([1, 2, 3, 4].map(() => reportStaleWorkers(server.app.deps)));
    expect(sweeps.flat().filter((reported) => reported.id === worker.id).length).toBeLessThanOrEqual(1);
    const row = await server.app.deps.prisma.worker.findUniqueOrThrow({ where: { id: worker.id } });
    expect(row.staleReportedAt).not.toBeNull();
    await events.nextMatching(eventOf(worker.id, "STALE"));
    // A heartbeat's event comes after every report published before it: once it is in, all of them are.
    await server.gql(HEARTBEAT, { id: worker.id, draining: false }, token);
    await events.nextMatching(eventOf(worker.id, "HEARTBEAT"));
    expect(events.received.filter(eventOf(worker.id, "STALE"))).toHaveLength(1);
  });
});

describe("vega worker and vega start", () => {
  it("refuses to start a worker without VEGA_WORKER_TOKEN, naming the variable", async () => {
    const result = await runVega(["worker"], { VEGA_API_URL: server.graphqlUrl });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/VEGA_WORKER_TOKEN is not set/);
  }, PROCESS_TEST_MS);

  it("runs the API with an embedded worker, and stops both cleanly on SIGTERM (worker first)", async () => {
    const dataDir = await migratedDataDir("vega-start-");
    try {
      const started = await startVega(
        ["start"],
        // A generous TTL: this is about the embedded worker being there, not about staleness on a busy machine.
        { ...TIMING, VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "60", VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: TEST_JWT_SECRET },
        /"msg":"worker registered"/,
        { timeoutMs: PROCESS_START_MS },
      );
      children.push(started.child);
      const port = Number(/"port":(\d+)[^\n]*"msg":"Vega API listening"/.exec(started.output())![1]);
      const response = await fetch(`http://127.0.0.1:${port}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${opsToken}` },
        body: JSON.stringify({ query: "{ ops { workers { name host stale } } }" }),
      });
      const { data } = await response.json();
      expect(data.ops.workers).toEqual([{ name: expect.any(String), host: os.hostname(), stale: false }]);

      expect(await stopProcess(started.child, "SIGTERM")).toBe(0);
      const output = started.output();
      expect(output.indexOf('"msg":"worker drained and deregistered"')).toBeGreaterThan(output.indexOf('"msg":"shutting down"'));
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, PROCESS_TEST_MS);
});

describe("heartbeat timing", () => {
  it("spreads beats ±10% around the interval", () => {
    expect(nextHeartbeatDelayMs(15, () => 0)).toBe(13_500);
    expect(nextHeartbeatDelayMs(15, () => 0.5)).toBe(15_000);
    expect(nextHeartbeatDelayMs(15, () => 1)).toBe(16_500);
  });

  it("backs off exponentially from 1 s, never beyond the interval", () => {
    const middle = () => 0.5;
    expect([1, 2, 3, 4, 5, 6, 50].map((failures) => retryDelayMs(failures, 15, middle))).toEqual([
      1000, 2000, 4000, 8000, 15_000, 15_000, 15_000,
    ]);
  });

  it("computes staleness when read, against the TTL", () => {
    const now = Date.parse("2026-01-01T00:01:00Z");
    expect(workerLiveness("2026-01-01T00:00:00Z", 60, now)).toEqual({ secondsSinceHeartbeat: 60, stale: false });
    expect(workerLiveness("2026-01-01T00:00:00Z", 59, now)).toEqual({ secondsSinceHeartbeat: 60, stale: true });
  });
});
