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
import { rm } from "node:fs/promises";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signToken } from "../../api/auth.ts";
import { createVegaPubSub, type VegaPubSub } from "../../api/pubsub.ts";
import { startVega, stopProcess } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
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
  // This run's own channels: another run sharing the Redis (CI's two passes) is not heard.
  const channelPrefix = `test-${randomBytes(6).toString("hex")}:`;
  const secret = randomBytes(32).toString("base64url");
  const key = new TextEncoder().encode(secret);
  const replicas: Replica[] = [];
  const children: ChildProcess[] = [];
  let connection: WsConnection | undefined;

  async function startReplica(): Promise<Replica> {
    const dataDir = await migratedDataDir("vega-replica-");
    const { child, output } = await startVega(
      ["serve"],
      { ...TIMING, VEGA_REDIS_URL: redisUrl, VEGA_REDIS_CHANNEL_PREFIX: channelPrefix, VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: secret },
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

describe.skipIf(!redisUp)("VEGA_REDIS_CHANNEL_PREFIX: deployments sharing one Redis", () => {
  const opened: { close(): Promise<unknown> }[] = [];
  const listening: AsyncIterator<unknown>[] = [];
  afterAll(async () => {
    await Promise.all(listening.map((iterator) => iterator.return?.()));
    await Promise.all(opened.map((pubsub) => pubsub.close()));
  });

  function replica(redisChannelPrefix: string): VegaPubSub {
    const created = createVegaPubSub({ redisUrl, redisChannelPrefix });
    opened.push(created);
    return created.pubsub;
  }

  /** Publishes from `from` until `to` hears it: a Redis SUBSCRIBE has no acknowledgement to wait for. */
  async function publishUntilHeard(from: VegaPubSub, heard: () => boolean, cleanupRunId: string) {
    for (let attempt = 0; !heard(); attempt++) {
      expect(attempt, `${cleanupRunId} was never heard`).toBeLessThan(100);
      from.publish("cleanupRunUpdated", { cleanupRunId });
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  function listen(pubsub: VegaPubSub) {
    const received: string[] = [];
    const events = pubsub.subscribe("cleanupRunUpdated")[Symbol.asyncIterator]();
    listening.push(events);
    void (async () => {
      for (let event = await events.next(); !event.done; event = await events.next()) received.push(event.value.cleanupRunId);
    })();
    return received;
  }

  it("delivers between replicas of one prefix, and never to a replica of another", async () => {
    const unique = randomBytes(6).toString("hex");
    const [a, b] = [replica(`blue-${unique}:`), replica(`blue-${unique}:`)];
    const [c, d] = [replica(`green-${unique}:`), replica(`green-${unique}:`)];
    const heardByB = listen(b);
    const heardByC = listen(c);

    // C's subscription is live once it hears its own deployment's D.
    await publishUntilHeard(d, () => heardByC.includes("green-probe"), "green-probe");
    await publishUntilHeard(a, () => heardByB.includes("blue"), "blue");
    // Redis handled A's publications before this one, and delivers to C in order: had C been
    // subscribed to blue's channel, A's events would come before this marker.
    await publishUntilHeard(d, () => heardByC.includes("green-marker"), "green-marker");
    expect(heardByC.filter((id) => id === "blue")).toEqual([]);
    expect(heardByB.filter((id) => id.startsWith("green"))).toEqual([]);
  });
});
