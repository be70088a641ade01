import { randomUUID } from "node:crypto";
import { access, mkdir, rm, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import type { ScanStatus } from "../../api/generated/prisma/client.ts";
import { scheduledCleanupDueAt } from "../../api/services/cleanup-scheduler.ts";
import { CLEANUP_LOCK, CleanupGate, startCleanup, type CleanupDeps, type CleanupRequest } from "../../api/services/cleanup-runs.ts";
import { SeenUsers } from "../../api/services/users.ts";
import type { LocalArtifactStore } from "../../api/services/artifact-store.ts";
import { postgresTestUrl } from "../support/database.ts";
import { ensureUserRow } from "../support/fixtures.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { connectWs, watchSubscriptions, type WsConnection } from "../support/ws.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** Retention of one hour for everything, so "two hours ago" is expired and "ten minutes ago" is not. */
const RETENTION = {
  VEGA_ARTIFACT_RETENTION_SECONDS: "3600",
  VEGA_SESSION_RETENTION_SECONDS: "3600",
  VEGA_WORKER_PRUNE_SECONDS: "3600",
  VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "60",
};
const ago = (ms: number) => new Date(Date.now() - ms);

let server: TestServer;
const connections: WsConnection[] = [];
beforeAll(async () => {
  server = await startTestServer(RETENTION);
});
afterAll(() => server?.close());
beforeEach(() => emptyDatabaseAndStore(server));
afterEach(async () => {
  await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
});

/** One server for the file (starting one costs seconds); each test starts from an empty database and store. */
async function emptyDatabaseAndStore(target: TestServer) {
  await target.app.deps.database.sql.withConnection(async (connection) => {
    const tables = await connection.query<{ tablename: string }>(
      `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> '_prisma_migrations'`,
    );
    await connection.exec(`TRUNCATE ${tables.map((table) => `"${table.tablename}"`).join(", ")} CASCADE`);
  });
  for (const dir of ["sources", "reports", "tmp"]) await rm(path.join((target.app.deps.artifacts as LocalArtifactStore).root, dir), { recursive: true, force: true });
  await mkdir(target.app.deps.artifacts.tmpDir, { recursive: true });
  // Users are remembered to spare upserts; the rows just went.
  target.app.deps.seenUsers = new SeenUsers();
}

const prisma = () => server.app.deps.prisma;
/** These tests run on the local backend (test/integration/s3-artifact-store.test.ts runs cleanup on S3). */
const store = () => server.app.deps.artifacts as LocalArtifactStore;
const exists = (file: string) => access(file).then(
  () => true,
  () => false,
);

/** A file committed to the store as an upload would be, its modification time set to `modifiedAt`. */
async function storedFile(kind: "sources" | "reports", bytes: number, modifiedAt = ago(3 * HOUR)): Promise<string> {
  const temp = store().tempPath("upload");
  await writeFile(temp, Buffer.alloc(bytes, 97));
  const key = await store().commit(temp, kind);
  await utimes(store().pathOf(key), modifiedAt, modifiedAt);
  return key;
}

async function artifactRow(options: { bytes?: number; createdAt?: Date; kind?: "sources" | "reports"; ownerId?: string } = {}) {
  const ownerId = options.ownerId ?? "alice";
  const workspaceId = await ensureUserRow(prisma(), ownerId);
  const bytes = options.bytes ?? 100;
  const storageKey = await storedFile(options.kind ?? "sources", bytes);
  return prisma().artifact.create({
    data: {
      kind: options.kind === "reports" ? "REPORT" : "SOURCE",
      workspaceId,
      ownerId,
      storageKey,
      sizeBytes: BigInt(bytes),
      sha256: "0".repeat(64),
      createdAt: options.createdAt ?? ago(3 * HOUR),
    },
  });
}

/** A scan of `artifactId` (a new artifact by default) in `status`, finished `finishedAt` when finished. */
async function scanOf(options: { status: ScanStatus; finishedAt?: Date | null; artifactId?: string; bytes?: number; ownerId?: string }) {
  const ownerId = options.ownerId ?? "alice";
  const workspaceId = await ensureUserRow(prisma(), ownerId);
  const artifactId = options.artifactId ?? (await artifactRow({ bytes: options.bytes, ownerId })).id;
  const finished = ["SUCCEEDED", "FAILED", "CANCELLED"].includes(options.status);
  const scan = await prisma().scan.create({
    data: {
      ownerId,
      workspaceId,
      status: options.status,
      sourceArtifactId: artifactId,
      queuedAt: ago(4 * HOUR),
      startedAt: options.status === "QUEUED" ? null : ago(4 * HOUR),
      finishedAt: finished ? (options.finishedAt === undefined ? ago(2 * HOUR) : options.finishedAt) : null,
      lastEventSeq: 1,
      events: { create: { seq: 1, kind: "STATE", code: options.status, message: `Scan is ${options.status}` } },
      findings: { create: { ruleId: "aws-access-key", severity: "HIGH", path: "src/a.ts", line: 3, message: "a secret", fingerprint: randomUUID() } },
    },
  });
  return { scan, artifact: await prisma().artifact.findUniqueOrThrow({ where: { id: artifactId } }) };
}

async function runCleanup(request: Partial<CleanupRequest> = {}, deps: CleanupDeps = server.app.deps) {
  const start = await startCleanup(deps, { trigger: "CLI", triggeredBy: "test", ...request });
  if (start.outcome !== "started") throw new Error(`cleanup did not start: ${start.outcome}`);
  return start.finished;
}

const fileOf = (storageKey: string) => store().pathOf(storageKey);

describe("artifacts of scans finished past VEGA_ARTIFACT_RETENTION_SECONDS", () => {
  it("deletes the file and marks the row deleted; the scan, its events and findings stay", async () => {
    const expired = [];
    for (const status of ["SUCCEEDED", "FAILED", "CANCELLED"] as const) expired.push(await scanOf({ status, bytes: 1000 }));

    const run = await runCleanup();

    expect(run).toMatchObject({ status: "SUCCEEDED", error: null, counts: { artifacts: 3 }, bytesFreed: 3000n });
    for (const { scan, artifact } of expired) {
      expect(await exists(fileOf(artifact.storageKey))).toBe(false);
      const row = await prisma().artifact.findUniqueOrThrow({ where: { id: artifact.id } });
      expect(row.deletedAt).toEqual(run.startedAt);
      expect(await prisma().scan.findUnique({ where: { id: scan.id } })).toMatchObject({ status: scan.status });
      expect(await prisma().scanEvent.count({ where: { scanId: scan.id } })).toBe(1);
      expect(await prisma().finding.count({ where: { scanId: scan.id } })).toBe(1);
    }
  });

  it("keeps artifacts of recently finished scans, of active scans, and any artifact an active scan still uses", async () => {
    const recent = await scanOf({ status: "SUCCEEDED", finishedAt: ago(10 * MINUTE) });
    const active = [];
    for (const status of ["QUEUED", "STARTING", "RUNNING"] as const) active.push(await scanOf({ status }));
    const unknownFinish = await scanOf({ status: "FAILED", finishedAt: null });
    const shared = await scanOf({ status: "SUCCEEDED" });
    await scanOf({ status: "RUNNING", artifactId: shared.artifact.id });
    const unreferenced = await artifactRow();

    const run = await runCleanup();

    expect(run.counts).toMatchObject({ artifacts: 0 });
    for (const { artifact } of [recent, ...active, unknownFinish, shared, { artifact: unreferenced }]) {
      expect(await exists(fileOf(artifact.storageKey))).toBe(true);
      expect((await prisma().artifact.findUniqueOrThrow({ where: { id: artifact.id } })).deletedAt).toBeNull();
    }
  });

  it("walks more than one batch", async () => {
    const owner = await ensureUserRow(prisma(), "bulk");
    const artifacts = Array.from({ length: 1203 }, (_, index) => ({
      id: randomUUID(),
      kind: "SOURCE" as const,
      workspaceId: owner,
      ownerId: "bulk",
      storageKey: `sources/bulk/${index}`,
      sizeBytes: 10n,
      sha256: "0".repeat(64),
      createdAt: ago(3 * HOUR),
    }));
    await prisma().artifact.createMany({ data: artifacts });
    await prisma().scan.createMany({
      data: artifacts.map((artifact) => ({
        ownerId: "bulk",
        workspaceId: owner,
        status: "SUCCEEDED" as const,
        sourceArtifactId: artifact.id,
        finishedAt: ago(2 * HOUR),
      })),
    });
    await mkdir(path.join(store().root, "sources/bulk"), { recursive: true });
    await Promise.all(artifacts.map((artifact) => writeFile(fileOf(artifact.storageKey), "0123456789")));

    const run = await runCleanup({ jobs: ["artifacts"] });

    expect(run.counts).toEqual({ artifacts: 1203 });
    expect(run.bytesFreed).toBe(12030n);
    expect(await prisma().artifact.count({ where: { deletedAt: null } })).toBe(0);
  });
});

describe("orphaned store files and abandoned uploads", () => {
  it("deletes files older than an hour that no live Artifact row names, and keeps the rest", async () => {
    const live = await artifactRow();
    const orphanSource = await storedFile("sources", 200);
    const orphanReport = await storedFile("reports", 300);
    const freshOrphan = await storedFile("sources", 50, new Date());
    const deletedRow = await artifactRow({ bytes: 400 });
    await prisma().artifact.update({ where: { id: deletedRow.id }, data: { deletedAt: ago(HOUR) } });

    const run = await runCleanup();

    expect(run.counts).toMatchObject({ orphanFiles: 3 });
    expect(run.bytesFreed).toBe(900n);
    expect(await exists(fileOf(live.storageKey))).toBe(true);
    expect(await exists(fileOf(freshOrphan))).toBe(true);
    for (const key of [orphanSource, orphanReport, deletedRow.storageKey]) expect(await exists(fileOf(key))).toBe(false);
  });

  it("deletes upload temporaries older than an hour; a fresh one may be an upload in progress", async () => {
    const abandoned = store().tempPath("upload");
    const inProgress = store().tempPath("upload");
    await writeFile(abandoned, Buffer.alloc(700));
    await writeFile(inProgress, Buffer.alloc(70));
    await utimes(abandoned, ago(2 * HOUR), ago(2 * HOUR));

    const run = await runCleanup();

    expect(run.counts).toMatchObject({ uploadTemps: 1 });
    expect(run.bytesFreed).toBe(700n);
    expect(await exists(abandoned)).toBe(false);
    expect(await exists(inProgress)).toBe(true);
  });
});

describe("sessions and workers", () => {
  it("deletes sessions expired or closed more than VEGA_SESSION_RETENTION_SECONDS ago", async () => {
    const workspaceId = await ensureUserRow(prisma(), "alice");
    const session = (data: { expiresAt: Date; closedAt?: Date }) =>
      prisma().session.create({ data: { workspaceId, userId: "alice", ...data } });
    const expiredLongAgo = await session({ expiresAt: ago(2 * HOUR) });
    const closedLongAgo = await session({ expiresAt: new Date(Date.now() + HOUR), closedAt: ago(2 * HOUR) });
    const expiredRecently = await session({ expiresAt: ago(10 * MINUTE) });
    const open = await session({ expiresAt: new Date(Date.now() + HOUR) });

    const run = await runCleanup();

    expect(run.counts).toMatchObject({ sessions: 2 });
    const left = (await prisma().session.findMany({ select: { id: true } })).map((row) => row.id).sort();
    expect(left).toEqual([expiredRecently.id, open.id].sort());
    expect(left).not.toContain(expiredLongAgo.id);
    expect(left).not.toContain(closedLongAgo.id);
  });

  it("deletes workers stale or deregistered longer than VEGA_WORKER_PRUNE_SECONDS, unless they hold a STARTING scan", async () => {
    const worker = (name: string, data: { lastHeartbeatAt: Date; deregisteredAt?: Date }) =>
      prisma().worker.create({ data: { name, host: "h", pid: 1, version: "1", capacity: 2, ...data } });
    const longStale = await worker("long-stale", { lastHeartbeatAt: ago(2 * HOUR) });
    const longGone = await worker("long-gone", { lastHeartbeatAt: ago(3 * HOUR), deregisteredAt: ago(2 * HOUR) });
    const recentlyStale = await worker("recently-stale", { lastHeartbeatAt: ago(30 * MINUTE) });
    const recentlyGone = await worker("recently-gone", { lastHeartbeatAt: ago(10 * MINUTE), deregisteredAt: ago(10 * MINUTE) });
    const live = await worker("live", { lastHeartbeatAt: new Date() });
    const holdsStarting = await worker("holds-starting", { lastHeartbeatAt: ago(2 * HOUR) });
    const starting = await scanOf({ status: "STARTING" });
    await prisma().scan.update({ where: { id: starting.scan.id }, data: { workerId: holdsStarting.id } });
    const running = await scanOf({ status: "RUNNING" });
    await prisma().scan.update({ where: { id: running.scan.id }, data: { workerId: longStale.id, taskId: "local:1" } });

    const run = await runCleanup();

    expect(run.counts).toMatchObject({ workers: 2 });
    const left = (await prisma().worker.findMany({ select: { name: true } })).map((row) => row.name).sort();
    expect(left).toEqual([holdsStarting, live, recentlyGone, recentlyStale].map((w) => w.name).sort());
    expect(left).not.toContain(longGone.name);
    expect(await prisma().scan.findUniqueOrThrow({ where: { id: running.scan.id } })).toMatchObject({ workerId: null, taskId: "local:1" });
  });
});

/** One of everything a run removes; answers what must be gone afterwards. */
async function somethingOfEverything() {
  const { artifact } = await scanOf({ status: "SUCCEEDED", bytes: 1000 });
  const orphan = await storedFile("sources", 200);
  const temp = store().tempPath("upload");
  await writeFile(temp, Buffer.alloc(30));
  await utimes(temp, ago(2 * HOUR), ago(2 * HOUR));
  const workspaceId = await ensureUserRow(prisma(), "alice");
  await prisma().session.create({ data: { workspaceId, userId: "alice", expiresAt: ago(2 * HOUR) } });
  await prisma().worker.create({ data: { name: "gone", host: "h", pid: 1, version: "1", capacity: 1, lastHeartbeatAt: ago(3 * HOUR) } });
  return { files: [fileOf(artifact.storageKey), fileOf(orphan), temp], artifactId: artifact.id };
}

describe("a dry run", () => {
  it("changes nothing and reports what the real run then removes", async () => {
    const { files, artifactId } = await somethingOfEverything();

    const dry = await runCleanup({ dryRun: true });

    expect(dry).toMatchObject({ status: "SUCCEEDED", dryRun: true });
    for (const file of files) expect(await exists(file)).toBe(true);
    expect((await prisma().artifact.findUniqueOrThrow({ where: { id: artifactId } })).deletedAt).toBeNull();
    expect(await prisma().session.count()).toBe(1);
    expect(await prisma().worker.count()).toBe(1);

    const real = await runCleanup();

    expect(dry.counts).toEqual({ artifacts: 1, orphanFiles: 1, uploadTemps: 1, sessions: 1, workers: 1 });
    expect(real.counts).toEqual(dry.counts);
    expect(real.bytesFreed).toBe(1230n);
    expect(dry.bytesFreed).toBe(real.bytesFreed);
    for (const file of files) expect(await exists(file)).toBe(false);
  });

  it("a second real run finds nothing left", async () => {
    await somethingOfEverything();
    await runCleanup();
    const again = await runCleanup();
    expect(again.counts).toEqual({ artifacts: 0, orphanFiles: 0, uploadTemps: 0, sessions: 0, workers: 0 });
    expect(again.bytesFreed).toBe(0n);
  });
});

describe("one cleanup at a time", () => {
  const TRIGGER = `mutation ($dryRun: Boolean) { triggerCleanup(dryRun: $dryRun) { id status trigger triggeredBy dryRun } }`;

  it("two concurrent triggers yield one run", async () => {
    await somethingOfEverything();
    const operator = await server.token("ops-olga", { groups: ["vega-ops"] });
    const runs = watchRuns(server.app.deps);
    const [a, b] = await Promise.all([server.gql(TRIGGER, {}, operator), server.gql(TRIGGER, {}, operator)]);

    expect(a.body.errors).toBeUndefined();
    expect(b.body.data.triggerCleanup.id).toBe(a.body.data.triggerCleanup.id);
    expect(a.body.data.triggerCleanup).toMatchObject({ status: "RUNNING", trigger: "OPERATOR", triggeredBy: "ops-olga", dryRun: false });
    await runs.finished(a.body.data.triggerCleanup.id);
    await runs.close();
    expect(await prisma().cleanupRun.count()).toBe(1);
  });

  it("closes a RUNNING run left by a process that died, when the next run starts", async () => {
    const left = await prisma().cleanupRun.create({ data: { trigger: "SCHEDULE", status: "RUNNING", startedAt: ago(HOUR) } });
    await runCleanup();
    expect(await prisma().cleanupRun.findUniqueOrThrow({ where: { id: left.id } })).toMatchObject({
      status: "FAILED",
      error: expect.stringMatching(/^abandoned/),
    });
  });

  it("records a failing job and still runs the others", async () => {
    const workspaceId = await ensureUserRow(prisma(), "alice");
    await prisma().session.create({ data: { workspaceId, userId: "alice", expiresAt: ago(2 * HOUR) } });
    // A directory where a stored file should be: the artifact job cannot delete it.
    const { artifact } = await scanOf({ status: "SUCCEEDED" });
    const file = fileOf(artifact.storageKey);
    await rm(file);
    await mkdir(path.join(file, "sub"), { recursive: true });
    await writeFile(path.join(file, "sub", "x"), "x");

    const run = await runCleanup();

    expect(run.status).toBe("FAILED");
    expect(run.error).toMatch(/^artifacts: could not delete 1 of the artifact files \(sources\/.*: Path is a directory/);
    expect(run.counts).toMatchObject({ artifacts: 1, sessions: 1 });
  });

  describe.skipIf(!postgresTestUrl)("across processes (PostgreSQL)", () => {
    let other: Database;
    beforeEach(async () => {
      other = await openDatabase(loadConfig({ VEGA_DATABASE_URL: server.db.url! }));
    });
    afterEach(() => other.close());

    // Another process: its own database session and its own in-process gate.
    const otherProcess = (): CleanupDeps => ({ ...server.app.deps, database: other, prisma: other.prisma, cleanupGate: new CleanupGate() });

    it("answers the RUNNING run of the session that holds the lock, and starts once it is released", async () => {
      const holder = new pg.Client({ connectionString: server.db.url });
      await holder.connect();
      try {
        const running = await prisma().cleanupRun.create({ data: { trigger: "CLI", triggeredBy: "elsewhere", status: "RUNNING" } });
        await holder.query(`SELECT pg_advisory_lock($1::int4, $2::int4)`, [CLEANUP_LOCK.namespace, CLEANUP_LOCK.run]);

        const refused = await startCleanup(server.app.deps, { trigger: "OPERATOR", triggeredBy: "olga" });
        expect(refused).toMatchObject({ outcome: "inProgress", run: { id: running.id, status: "RUNNING" } });

        await holder.query(`SELECT pg_advisory_unlock($1::int4, $2::int4)`, [CLEANUP_LOCK.namespace, CLEANUP_LOCK.run]);
        const run = await runCleanup();
        expect(run.status).toBe("SUCCEEDED");
        expect(await prisma().cleanupRun.findUniqueOrThrow({ where: { id: running.id } })).toMatchObject({ status: "FAILED" });
      } finally {
        await holder.end();
      }
    });

    it("two replicas starting together yield one run", async () => {
      await somethingOfEverything();
      // Hold the first run at its first progress write, so that it is surely running when the second asks.
      const blocker = new pg.Client({ connectionString: server.db.url });
      await blocker.connect();
      try {
        await blocker.query("BEGIN");
        await blocker.query(`LOCK TABLE "CleanupRun" IN SHARE MODE`);
        const first = startCleanup(server.app.deps, { trigger: "SCHEDULE" });
        const second = startCleanup(otherProcess(), { trigger: "SCHEDULE" });
        // One waits on the blocker to write its RUNNING row, the other on the start lock it holds meanwhile.
        await until(async () => {
          const { rows } = await blocker.query(`SELECT count(*)::int AS waiting FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`);
          return rows[0].waiting === 1;
        });
        await blocker.query("COMMIT");
        const outcomes = await Promise.all([first, second]);
        const started = outcomes.filter((outcome) => outcome.outcome === "started");
        const answered = outcomes.filter((outcome) => outcome.outcome === "inProgress");
        expect(started).toHaveLength(1);
        expect(answered).toHaveLength(1);
        expect(answered[0]).toMatchObject({ run: { id: (started[0] as { run: { id: string } }).run.id } });
        await (started[0] as { finished: Promise<unknown> }).finished;
        expect(await prisma().cleanupRun.count()).toBe(1);
      } finally {
        await blocker.end();
      }
    });
  });
});

/** Polls a condition no event announces (another session waiting on a lock). */
async function until(condition: () => Promise<boolean>) {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** Listens to cleanupRunUpdated in-process from now on; `finished(id)` settles with the run's final row. */
function watchRuns(deps: CleanupDeps) {
  const iterator = deps.pubsub.subscribe("cleanupRunUpdated")[Symbol.asyncIterator]();
  // The first read attaches the listener: events published from now on are queued.
  let pending = iterator.next();
  return {
    async finished(runId: string) {
      for (;;) {
        const { value } = await pending;
        pending = iterator.next();
        if (value.cleanupRunId !== runId) continue;
        const run = await deps.prisma.cleanupRun.findUniqueOrThrow({ where: { id: runId } });
        if (run.status !== "RUNNING") return run;
      }
    },
    close: () => iterator.return?.(),
  };
}

describe("the GraphQL surface", () => {
  const STATUS = `{ ops { cleanup {
    running { id } lastRun { id status counts { artifacts orphanFiles uploadTemps sessions workers } bytesFreed }
    runs(first: 2) { edges { cursor node { id trigger } } pageInfo { hasNextPage endCursor } }
    nextScheduledAt intervalSeconds } } }`;

  it("triggerCleanup answers the RUNNING run at once; cleanupRunUpdated reports its start and finish", async () => {
    await somethingOfEverything();
    const operator = await server.token("ops-olga", { groups: ["vega-ops"] });
    const watch = watchSubscriptions(server.app.deps.pubsub);
    const ws = connectWs(server.wsUrl, operator);
    connections.push(ws);
    const events = ws.subscribe<{ cleanupRunUpdated: { id: string; status: string; bytesFreed: string; counts: { artifacts: number } } }>(
      `subscription { cleanupRunUpdated { id status bytesFreed counts { artifacts } } }`,
    );
    await watch.until("cleanupRunUpdated");
    watch.restore();

    const response = await server.gql(`mutation { triggerCleanup { id status } }`, {}, operator);
    const run = response.body.data.triggerCleanup;
    expect(run.status).toBe("RUNNING");

    const finished = await events.nextMatching((event) => event.cleanupRunUpdated.id === run.id && event.cleanupRunUpdated.status !== "RUNNING");
    expect(finished.cleanupRunUpdated).toEqual({ id: run.id, status: "SUCCEEDED", bytesFreed: "1230", counts: { artifacts: 1 } });
    expect(events.received[0].cleanupRunUpdated).toMatchObject({ id: run.id });

    const status = await server.gql(STATUS, {}, operator);
    expect(status.body.data.ops.cleanup).toMatchObject({
      running: null,
      lastRun: { id: run.id, status: "SUCCEEDED", bytesFreed: "1230", counts: { artifacts: 1, orphanFiles: 1, uploadTemps: 1, sessions: 1, workers: 1 } },
      nextScheduledAt: null,
      intervalSeconds: 0,
    });
  });

  it("lists runs newest first, page by page", async () => {
    const operator = await server.token("ops-olga", { groups: ["vega-ops"] });
    const ids = [];
    for (let index = 0; index < 3; index++) ids.push((await runCleanup({ dryRun: true })).id);
    const first = await server.gql(STATUS, {}, operator);
    const page = first.body.data.ops.cleanup.runs;
    expect(page.edges.map((edge: { node: { id: string } }) => edge.node.id)).toEqual([ids[2], ids[1]]);
    expect(page.pageInfo.hasNextPage).toBe(true);
    const next = await server.gql(`query ($after: String) { ops { cleanup { runs(first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage } } } } }`, { after: page.pageInfo.endCursor }, operator);
    expect(next.body.data.ops.cleanup.runs).toEqual({ edges: [{ node: { id: ids[0] } }], pageInfo: { hasNextPage: false } });
  });

  it("is for operators only", async () => {
    const user = await server.token("mallory");
    expect(errorCodes(await server.gql(`mutation { triggerCleanup { id } }`, {}, user))).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(`{ ops { cleanup { running { id } } } }`, {}, user))).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(`mutation { triggerCleanup { id } }`))).toEqual(["UNAUTHENTICATED"]);
    expect(await prisma().cleanupRun.count()).toBe(0);
  });
});

describe("the schedule", () => {
  it("starts a run with the API when none ever ran, and the next an interval later", async () => {
    const scheduled = await startTestServer({ ...RETENTION, VEGA_CLEANUP_INTERVAL_SECONDS: "3600" });
    try {
      // The first check runs at start, finds no scheduled run and starts one; idle() waits for it to end.
      await scheduled.app.deps.cleanupScheduler.idle();
      const [run, ...others] = await scheduled.app.deps.prisma.cleanupRun.findMany();
      expect(others).toEqual([]);
      expect(run).toMatchObject({ trigger: "SCHEDULE", triggeredBy: null, dryRun: false, status: "SUCCEEDED" });

      const operator = await scheduled.token("ops-olga", { groups: ["vega-ops"] });
      const status = await scheduled.gql(`{ ops { cleanup { nextScheduledAt intervalSeconds } } }`, {}, operator);
      expect(status.body.data.ops.cleanup).toEqual({
        nextScheduledAt: new Date(run.startedAt.getTime() + 3600_000).toISOString(),
        intervalSeconds: 3600,
      });
    } finally {
      await scheduled.close();
    }
  });

  it("is due an interval after the newest scheduled run, whoever ran it", async () => {
    const now = new Date();
    expect(await scheduledCleanupDueAt(prisma(), 3600, now)).toEqual(now);
    const last = await prisma().cleanupRun.create({ data: { trigger: "SCHEDULE", status: "SUCCEEDED", startedAt: ago(10 * MINUTE) } });
    await prisma().cleanupRun.create({ data: { trigger: "OPERATOR", status: "SUCCEEDED", startedAt: ago(MINUTE) } });
    expect(await scheduledCleanupDueAt(prisma(), 3600, now)).toEqual(new Date(last.startedAt.getTime() + 3600_000));
  });
});
