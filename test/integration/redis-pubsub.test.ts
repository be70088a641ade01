/**
 * Subscriptions across API replicas: two `vega serve` processes, each with its
 * own embedded database, share Redis and a token key. A subscriber on one sees
 * the registry events of a worker that talks to the other (events resolve from
 * their payload, so no database is shared or read).
 *
 * Needs Redis (VEGA_TEST_REDIS_URL, default redis://127.0.0.1:6379). Without it
 * the file is skipped on a developer's machine and fails in CI (CI=true).
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess } from "../support/cli.ts";
import { connectWs, SubscriptionError, type WsConnection } from "../support/ws.ts";

const redisUrl = process.env.VEGA_TEST_REDIS_URL || "redis://127.0.0.1:6379";

async function redisAnswers(): Promise<boolean> {
  const redis = new Redis(redisUrl, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on("error", () => {});
  try {
    await redis.connect();
    return (await redis.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

const redisUp = await redisAnswers();
if (!redisUp && process.env.CI) throw new Error(`Redis does not answer at ${redisUrl}, and CI must run the cross-replica subscription test`);
if (!redisUp) console.warn(`test/integration/redis-pubsub.test.ts skipped: no Redis answers at ${redisUrl} (set VEGA_TEST_REDIS_URL, or start redis-server)`);

const TIMING = { VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1", VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "3" };
const WORKER_EVENTS = `subscription { workerHeartbeats { kind worker { id name } } }`;

interface Replica {
  child: ChildProcess;
  graphqlUrl: string;
  dataDir: string;
}

describe.skipIf(!redisUp)("subscriptions across API replicas through Redis", () => {
  const secret = randomBytes(32).toString("base64url");
  const key = new TextEncoder().encode(secret);
  const replicas: Replica[] = [];
  const children: ChildProcess[] = [];
  let connection: WsConnection | undefined;

  async function startReplica(): Promise<Replica> {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-replica-"));
    const { child, output } = await startVega(
      ["serve"],
      { ...TIMING, VEGA_REDIS_URL: redisUrl, VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: secret },
      /"msg":"Vega API listening"/,
      { timeoutMs: 180_000 },
    );
    const port = /"port":(\d+)[^\n]*"msg":"Vega API listening"/.exec(output())![1];
    const replica = { child, graphqlUrl: `http://127.0.0.1:${port}/graphql`, dataDir };
    replicas.push(replica);
    return replica;
  }

  async function gql(replica: Replica, query: string, variables: Record<string, unknown>, token: string) {
    const response = await fetch(replica.graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = await response.json();
    expect(body.errors).toBeUndefined();
    return body.data;
  }

  beforeAll(async () => {
    await Promise.all([startReplica(), startReplica()]);
  }, 400_000);
  afterAll(async () => {
    await connection?.dispose();
    await Promise.all([...children, ...replicas.map((replica) => replica.child)].map((child) => stopProcess(child, "SIGTERM")));
    await Promise.all(replicas.map((replica) => rm(replica.dataDir, { recursive: true, force: true })));
  });

  it("delivers, on replica A, the REGISTERED and HEARTBEAT events of a worker talking to replica B", async () => {
    const [a, b] = replicas;
    const opsToken = await signToken(key, { sub: "ops", groups: ["vega-ops"], ttlSeconds: 600 });
    const workerToken = await signToken(key, { sub: "fleet", scope: "worker", ttlSeconds: 600 });
    connection = connectWs(a.graphqlUrl.replace(/^http/, "ws"), opsToken);
    const events = connection.subscribe<{ workerHeartbeats: { kind: string; worker: { id: string; name: string } } }>(WORKER_EVENTS);

    // A's subscription to Redis has no acknowledgement: a probe worker on B beats until A hears it.
    const probe = (
      await gql(b, `mutation { registerWorker(input: { name: "probe", host: "h", pid: 1, version: "1", capacity: 1 }) { token worker { id } } }`, {}, workerToken)
    ).registerWorker;
    for (let attempt = 1; ; attempt++) {
      await gql(b, `mutation ($id: ID!) { workerHeartbeat(id: $id, input: { activeScans: 0, draining: false }) { id } }`, { id: probe.worker.id }, probe.token);
      const heard = await events.nextMatching((event) => event.workerHeartbeats.worker.id === probe.worker.id, { timeoutMs: 1000 }).catch((error) => {
        if (error instanceof SubscriptionError && error.codes.includes("TIMEOUT") && attempt < 30) return undefined;
        throw error;
      });
      if (heard) break;
    }

    const worker = await startVega(
      ["worker"],
      { ...TIMING, VEGA_API_URL: b.graphqlUrl, VEGA_WORKER_TOKEN: workerToken, VEGA_WORKER_NAME: "talks-to-b" },
      /"msg":"worker registered"/,
      { timeoutMs: 180_000 },
    );
    children.push(worker.child);
    const registered = await events.nextMatching((event) => event.workerHeartbeats.worker.name === "talks-to-b");
    expect(registered.workerHeartbeats.kind).toBe("REGISTERED");
    const heartbeat = await events.nextMatching(
      (event) => event.workerHeartbeats.worker.id === registered.workerHeartbeats.worker.id && event.workerHeartbeats.kind === "HEARTBEAT",
    );
    expect(heartbeat.workerHeartbeats.worker.name).toBe("talks-to-b");
  }, 300_000);
});
