/**
 * Redis is a dependency, not a single point of failure: two `vega serve`
 * replicas share a redis-server that the test starts, kills (SIGKILL, by its
 * pid) and starts again on the same port. While it is down both replicas serve
 * queries, mutations and their own subscribers, /readyz stays 200 and reports
 * Redis degraded, and the log says so once; when it returns, cross-replica
 * delivery resumes without a restart. `vega start` pointed at a Redis that
 * never answers stays up. After the outage, a restart finds every write that
 * was acknowledged during it.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { signToken } from "../../api/auth.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { dataDirKey, freePort, operatorToken, startRedisServer, startVegaServer, type RedisProcess, type VegaServerProcess } from "../support/processes.ts";
import { waitFor } from "../support/worker-process.ts";
import { connectWs, SubscriptionError, type EventStream, type WsConnection } from "../support/ws.ts";

vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const hasRedisServer = (() => {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
if (!hasRedisServer && process.env.CI) throw new Error("redis-server is not installed, and CI must run the Redis outage test");

const TIMING = { VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1", VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "30", VEGA_CLEANUP_INTERVAL_SECONDS: "0" };
const WORKER_EVENTS = `subscription { workerHeartbeats { kind at worker { id name } } }`;
const REGISTER = `mutation ($name: String!) { registerWorker(input: { name: $name, host: "h", pid: 1, version: "1", capacity: 1 }) { token worker { id } } }`;
const HEARTBEAT = `mutation ($id: ID!) { workerHeartbeat(id: $id, input: { activeScans: 0, draining: false }) { id lastHeartbeatAt } }`;
const UNREACHABLE = /"msg":"Redis is unreachable/g;
const REACHABLE_AGAIN = /"msg":"Redis is reachable again/g;

type WorkerEvent = { workerHeartbeats: { kind: string; at: string; worker: { id: string; name: string } } };

const countOf = (pattern: RegExp, text: string) => text.match(pattern)?.length ?? 0;

async function readiness(server: VegaServerProcess) {
  const response = await fetch(`${server.url}/readyz`);
  return { status: response.status, body: await response.json() };
}

describe.skipIf(!hasRedisServer)("two API replicas while Redis goes away and comes back", () => {
  const secret = randomBytes(32).toString("base64url");
  const key = new TextEncoder().encode(secret);
  const dataDirs: string[] = [];
  let redis: RedisProcess;
  let redisPort: number;
  let a: VegaServerProcess;
  let b: VegaServerProcess;
  let connection: WsConnection;
  let events: EventStream<WorkerEvent>;
  let opsToken: string;
  let workerToken: string;
  /** The worker registered on A while Redis was down, and its last acknowledged heartbeat. */
  let duringOutage: { id: string; lastHeartbeatAt: string };

  const replicaEnv = (dataDir: string) => ({ ...TIMING, VEGA_REDIS_URL: redis.url, VEGA_DATA_DIR: dataDir, VEGA_JWT_SECRET: secret });

  async function gql(server: VegaServerProcess, query: string, variables: Record<string, unknown>, token: string) {
    const { data, errors } = await server.gql(query, variables, token);
    expect(errors).toBeUndefined();
    return data;
  }

  async function register(server: VegaServerProcess, name: string) {
    const { registerWorker } = await gql(server, REGISTER, { name }, workerToken);
    return { id: registerWorker.worker.id as string, token: registerWorker.token as string };
  }

  /** Heartbeats on `server` until A's subscriber hears one (A's SUBSCRIBE to Redis has no acknowledgement). */
  async function heardOnA(server: VegaServerProcess, worker: { id: string; token: string }) {
    for (let attempt = 1; ; attempt++) {
      await gql(server, HEARTBEAT, { id: worker.id }, worker.token);
      const heard = await events.nextMatching((event) => event.workerHeartbeats.worker.id === worker.id, { timeoutMs: 1000 }).catch((error) => {
        if (error instanceof SubscriptionError && error.codes.includes("TIMEOUT") && attempt < 120) return undefined;
        throw error;
      });
      if (heard) return heard;
    }
  }

  beforeAll(async () => {
    redisPort = await freePort();
    redis = await startRedisServer(redisPort);
    for (let index = 0; index < 2; index++) dataDirs.push(await migratedDataDir("vega-redis-outage-"));
    [a, b] = await Promise.all(dataDirs.map((dataDir) => startVegaServer("serve", replicaEnv(dataDir))));
    opsToken = await signToken(key, { sub: "ops", groups: ["vega-ops"], ttlSeconds: 3600 });
    workerToken = await signToken(key, { sub: "fleet", scope: "worker", ttlSeconds: 3600 });
    connection = connectWs(`${a.url.replace(/^http/, "ws")}/graphql`, opsToken);
    events = connection.subscribe<WorkerEvent>(WORKER_EVENTS);
  });
  afterAll(async () => {
    await connection?.dispose();
    await Promise.all([a, b].filter(Boolean).map((server) => server.stop("SIGTERM")));
    await redis?.kill();
    await Promise.all(dataDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  it("delivers on A what B publishes while Redis is up, and reports Redis ok", async () => {
    const probe = await register(b, "probe-before");
    expect((await heardOnA(b, probe)).workerHeartbeats.worker.id).toBe(probe.id);
    expect(await readiness(a)).toEqual({ status: 200, body: { status: "ready", database: { status: "ok" }, redis: { status: "ok" } } });
  });

  it("keeps serving queries, mutations and A's own subscribers while Redis is down; /readyz stays 200 and says degraded, the log says it once", async () => {
    await redis.kill();
    await waitFor("A to notice Redis is gone", async () => (await readiness(a)).body.redis?.status === "degraded");

    const worker = await register(a, "during-outage");
    const registered = await events.nextMatching((event) => event.workerHeartbeats.worker.id === worker.id);
    expect(registered.workerHeartbeats.kind).toBe("REGISTERED");
    let lastHeartbeatAt = "";
    for (let beat = 0; beat < 5; beat++) {
      lastHeartbeatAt = (await gql(a, HEARTBEAT, { id: worker.id }, worker.token)).workerHeartbeat.lastHeartbeatAt;
      const heartbeat = await events.nextMatching((event) => event.workerHeartbeats.worker.id === worker.id && event.workerHeartbeats.kind === "HEARTBEAT");
      expect(heartbeat.workerHeartbeats.at).toBe(lastHeartbeatAt);
    }
    duringOutage = { id: worker.id, lastHeartbeatAt };
    // B serves too, for its own callers.
    await register(b, "on-b-during-outage");
    const listed = await gql(a, `{ ops { workers { id name } } }`, {}, opsToken);
    expect(listed.ops.workers.map((entry: { name: string }) => entry.name)).toContain("during-outage");

    const ready = await readiness(a);
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ status: "ready", database: { status: "ok" }, redis: { status: "degraded", since: expect.any(String) } });
    expect((await readiness(b)).status).toBe(200);
    expect(a.child.exitCode).toBeNull();
    expect(b.child.exitCode).toBeNull();
    expect(countOf(UNREACHABLE, a.output())).toBe(1);
    expect(countOf(UNREACHABLE, b.output())).toBe(1);
  });

  it("resumes cross-replica delivery once Redis is back on its port, without restarting either replica", async () => {
    redis = await startRedisServer(redisPort);
    const probe = await register(b, "probe-after");
    expect((await heardOnA(b, probe)).workerHeartbeats.worker.id).toBe(probe.id);
    await waitFor("A to report Redis ok", async () => (await readiness(a)).body.redis?.status === "ok");
    expect(countOf(REACHABLE_AGAIN, a.output())).toBe(1);
    expect(countOf(UNREACHABLE, a.output())).toBe(1);
  });

  it("after a restart of A, has every registration and heartbeat A acknowledged during the outage", async () => {
    await connection.dispose();
    expect(await a.stop("SIGTERM")).toBe(0);
    a = await startVegaServer("serve", replicaEnv(dataDirs[0]));
    const { ops } = await gql(a, `{ ops { workers { id name lastHeartbeatAt } } }`, {}, opsToken);
    expect(ops.workers.find((entry: { id: string }) => entry.id === duringOutage.id)).toMatchObject({
      name: "during-outage",
      lastHeartbeatAt: duringOutage.lastHeartbeatAt,
    });
  });
});

describe.skipIf(!hasRedisServer)("`vega start` with VEGA_REDIS_URL where nothing answers", () => {
  it("stays up: its worker heartbeats, its subscribers hear it, /readyz is 200 with Redis degraded, and SIGTERM ends it with 0", async () => {
    const dataDir = await migratedDataDir("vega-redis-none-");
    const server = await startVegaServer("start", { ...TIMING, VEGA_DATA_DIR: dataDir, VEGA_REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
    let ws: WsConnection | undefined;
    try {
      ws = connectWs(`${server.url.replace(/^http/, "ws")}/graphql`, await operatorToken(await dataDirKey(dataDir)));
      const heartbeats = ws.subscribe<WorkerEvent>(WORKER_EVENTS);
      // Fifteen beats of the embedded worker, one a second: well past the publish retries that used to end the process.
      for (let beat = 0; beat < 15; beat++) await heartbeats.nextMatching((event) => event.workerHeartbeats.kind === "HEARTBEAT");
      expect(server.child.exitCode).toBeNull();
      expect(await readiness(server)).toMatchObject({ status: 200, body: { status: "ready", redis: { status: "degraded" } } });
      expect(countOf(UNREACHABLE, server.output())).toBe(1);
      await ws.dispose();
      ws = undefined;
      expect(await server.stop("SIGTERM")).toBe(0);
    } finally {
      await ws?.dispose();
      await server.stop("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
