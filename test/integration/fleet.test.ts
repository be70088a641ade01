/**
 * Beyond one machine, end to end: two `vega serve` replicas (A and B) on one
 * PostgreSQL database, with Redis between them and the S3 store (s3rver), and a
 * `vega worker` on each. Scans submitted to A run to SUCCEEDED (whichever
 * worker claims them, its runner fetches the archive from S3); their events
 * reach a subscriber on B; an operator's cleanup triggered on B removes A's
 * expired archives from S3; and SIGKILL to A in the middle of a second batch
 * loses no scan: every one ends in a terminal state with its findings.
 *
 * Runs only with a real PostgreSQL and Redis (VEGA_TEST_DATABASE_URL and
 * VEGA_TEST_REDIS_URL, as in CI's PostgreSQL pass): PGlite is one process's
 * database. Every process is stopped by the pid the test holds.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signToken } from "../../api/auth.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import { migrate } from "../../api/db/migrate.ts";
import { loadConfig } from "../../shared/config.ts";
import { stopProcess } from "../support/cli.ts";
import { createPostgresDatabase, postgresTestUrl } from "../support/database.ts";
import { operatorToken, startVegaServer, type VegaServerProcess } from "../support/processes.ts";
import { startS3Server, type S3Server } from "../support/s3.ts";
import { TEST_JWT_SECRET } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, startWorkerProcess, waitFor, type WorkerProcess } from "../support/worker-process.ts";
import { connectWs, type WsConnection } from "../support/ws.ts";
import { buildZip, manySourceFiles } from "../support/zips.ts";

const redisUrl = process.env.VEGA_TEST_REDIS_URL;
const enabled = Boolean(postgresTestUrl && redisUrl);
if (!enabled) console.warn("test/integration/fleet.test.ts skipped: it needs VEGA_TEST_DATABASE_URL and VEGA_TEST_REDIS_URL (CI's PostgreSQL pass)");

const PREFIX = "fleet/artifacts";
const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];
/** Short clocks, so that the replica's death is noticed within seconds. */
const TIMING = {
  VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
  VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "4",
  VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
  VEGA_RUNNER_HEARTBEAT_SECONDS: "1",
  VEGA_SCAN_HEARTBEAT_TTL_SECONDS: "8",
  VEGA_WORKER_SWEEP_INTERVAL_SECONDS: "1",
};

let s3: S3Server;
let postgres: { url: string; drop(): Promise<void> };
let database: Database;
let dataDir: string;
const replicas: Record<"A" | "B", VegaServerProcess | undefined> = { A: undefined, B: undefined };
const workers: WorkerProcess[] = [];
const connections: WsConnection[] = [];
const key = new TextEncoder().encode(TEST_JWT_SECRET);

beforeAll(async () => {
  if (!enabled) return;
  s3 = await startS3Server("vega-fleet");
  postgres = await createPostgresDatabase();
  database = await openDatabase(loadConfig({ VEGA_DATABASE_URL: postgres.url }));
  await migrate(database.sql);
  dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-fleet-"));
  const shared = {
    ...s3.env(PREFIX),
    ...TIMING,
    VEGA_DATABASE_URL: postgres.url,
    VEGA_REDIS_URL: redisUrl!,
    // This run's own channels: another run sharing the Redis (CI's two passes) is not heard.
    VEGA_REDIS_CHANNEL_PREFIX: `fleet-${randomUUID()}:`,
    VEGA_JWT_SECRET: TEST_JWT_SECRET,
    VEGA_CLEANUP_INTERVAL_SECONDS: "0",
    // Every finished scan's archive is expired at once: the cleanup step has something to remove.
    VEGA_ARTIFACT_RETENTION_SECONDS: "0",
    VEGA_MAX_ACTIVE_SCANS_PER_USER: "50",
  };
  const [a, b] = await Promise.all(
    (["A", "B"] as const).map((name) => startVegaServer("serve", { ...shared, VEGA_DATA_DIR: path.join(dataDir, name) })),
  );
  replicas.A = a;
  replicas.B = b;
  const workerToken = await signToken(key, { sub: "fleet-workers", scope: "worker", ttlSeconds: 3600 });
  for (const [name, replica] of [["worker-on-a", a], ["worker-on-b", b]] as const) {
    workers.push(
      await startWorkerProcess(name, {
        ...TIMING,
        VEGA_API_URL: replica.graphqlUrl,
        VEGA_WORKER_TOKEN: workerToken,
        VEGA_LAUNCHER: "local",
        VEGA_WORKER_CAPACITY: "2",
      }),
    );
  }
}, 300_000);

afterAll(async () => {
  await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
  await Promise.all(workers.splice(0).map((worker) => stopProcess(worker.child, "SIGKILL")));
  await Promise.all(Object.values(replicas).map((replica) => replica?.stop("SIGKILL")));
  await database?.close();
  await postgres?.drop();
  await s3?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** An archive with `keys` fake AWS keys (one finding each) and `files` other source files (analysis time). */
const archiveWith = (index: number, keys: number, files = 0) =>
  buildZip([{ name: "README.md", data: `# fleet ${index}\n` }, awsKeysFile(keys, "config/deploy.env", index * 10 + 1), ...manySourceFiles(files)]);

async function submitTo(replica: VegaServerProcess, token: string, archive: Buffer): Promise<string> {
  const submitted = await submitScan({ graphqlUrl: replica.graphqlUrl }, token, archive);
  expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
  return submitted.body.data.submitScan.scan.id;
}

const finishedScans = (scanIds: string[]) =>
  waitFor(
    "every scan to end",
    async () => {
      const rows = await database.prisma.scan.findMany({ where: { id: { in: scanIds } }, include: { findings: true, sourceArtifact: true } });
      return rows.length === scanIds.length && rows.every((scan) => FINISHED.includes(scan.status)) ? rows : undefined;
    },
    { timeoutMs: 240_000, intervalMs: 500 },
  );

describe.skipIf(!enabled)("a fleet of two API replicas and two workers on PostgreSQL, Redis and S3", () => {
  it("runs scans submitted to A, tells a subscriber on B, cleans A's archives from S3 through B, and survives A's SIGKILL", async () => {
    const started = Date.now();
    const a = replicas.A!;
    const b = replicas.B!;
    const alice = await signToken(key, { sub: "alice", ttlSeconds: 3600 });
    const operator = await operatorToken(key);

    // 1. Scans submitted to A run to SUCCEEDED; a subscriber on B sees every one finish.
    const subscriber = connectWs(b.graphqlUrl.replace(/^http/, "ws"), operator);
    connections.push(subscriber);
    const changes = subscriber.subscribe<{ scanStateChanged: { scan: { id: string }; to: string } }>(`subscription { scanStateChanged { scan { id } to } }`);
    // Subscribed before the first submission, so that no event can come before it.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const firstBatch: string[] = [];
    for (let index = 0; index < 4; index++) firstBatch.push(await submitTo(a, alice, await archiveWith(index, 2)));
    const done = await finishedScans(firstBatch);
    for (const scan of done) {
      expect({ id: scan.id, status: scan.status, errorCode: scan.errorCode }).toEqual({ id: scan.id, status: "SUCCEEDED", errorCode: null });
      expect(scan.findings.filter((finding) => finding.ruleId === "aws-access-key-id")).toHaveLength(2);
    }
    const heardOnB = (scanId: string) =>
      changes.received.some((event) => event.scanStateChanged.scan.id === scanId && event.scanStateChanged.to === "SUCCEEDED");
    await waitFor("B's subscriber to hear every scan succeed", async () => (firstBatch.every(heardOnB) ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
    const claimedBy = await database.prisma.scanEvent.findMany({ where: { scanId: { in: firstBatch }, code: "STARTING" } });
    expect(claimedBy).toHaveLength(firstBatch.length);
    const firstKeys = done.map((scan) => `${PREFIX}/${scan.sourceArtifact.storageKey}`);
    expect((await s3.keys(`${PREFIX}/`)).map((object) => object.key).sort()).toEqual([...firstKeys].sort());
    for (const scan of done) expect(await s3.sha256Of(`${PREFIX}/${scan.sourceArtifact.storageKey}`)).toBe(scan.sourceArtifact.sha256);
    const runTime = Date.now() - started;

    // 2. An operator's cleanup on B removes the archives A took from S3 (retention 0: all of them are expired).
    const trigger = await b.gql(`mutation { triggerCleanup(dryRun: false) { id status } }`, {}, operator);
    expect(trigger.errors, JSON.stringify(trigger.errors)).toBeUndefined();
    const runId = trigger.data.triggerCleanup.id;
    const run = await waitFor(
      "the cleanup run to finish",
      async () => {
        const row = await database.prisma.cleanupRun.findUnique({ where: { id: runId } });
        return row && row.status !== "RUNNING" ? row : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    expect(run).toMatchObject({ status: "SUCCEEDED", error: null });
    expect((run.counts as Record<string, number>).artifacts).toBe(firstBatch.length);
    expect(await s3.keys(`${PREFIX}/`)).toEqual([]);
    const cleanupTime = Date.now() - started - runTime;

    // 3. SIGKILL to A while scans submitted to it are in flight: none is lost.
    const secondBatch: string[] = [];
    for (let index = 10; index < 16; index++) secondBatch.push(await submitTo(a, alice, await archiveWith(index, 3, 3000)));
    await waitFor(
      "a scan of the second batch to run",
      async () => ((await database.prisma.scan.count({ where: { id: { in: secondBatch }, status: "RUNNING" } })) > 0 ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 100 },
    );
    await a.stop("SIGKILL");
    replicas.A = undefined;

    const survivors = await finishedScans(secondBatch);
    for (const scan of survivors) {
      const found = scan.findings.filter((finding) => finding.ruleId === "aws-access-key-id").length;
      if (scan.status === "SUCCEEDED") {
        expect(found, `scan ${scan.id}`).toBe(3);
      } else {
        // Its runner lost its API mid-run: recovery ended it, keeping every finding it had sent.
        expect({ id: scan.id, status: scan.status }).toEqual({ id: scan.id, status: "FAILED" });
        expect(["RUNNER_EXITED", "RUNNER_HUNG", "ATTEMPTS_EXHAUSTED"]).toContain(scan.errorCode);
        expect(found).toBeLessThanOrEqual(3);
      }
    }
    // Those never run by A's worker ran on B's.
    expect(survivors.some((scan) => scan.status === "SUCCEEDED")).toBe(true);
    console.log(
      `fleet: first batch ${(runTime / 1000).toFixed(1)} s, cleanup ${(cleanupTime / 1000).toFixed(1)} s, ` +
        `after SIGKILL every scan ended in ${((Date.now() - started - runTime - cleanupTime) / 1000).toFixed(1)} s ` +
        `(${survivors.filter((scan) => scan.status === "SUCCEEDED").length} SUCCEEDED, ${survivors.filter((scan) => scan.status === "FAILED").length} FAILED)`,
    );
  }, 600_000);
});
