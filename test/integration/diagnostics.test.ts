import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { ScanStatus } from "../../api/generated/prisma/client.ts";
import { diagnose, TASK_ALIVE_EVENT_CODE } from "../../api/services/diagnostics.ts";
import { SeenUsers } from "../../api/services/users.ts";
import { ensureUserRow } from "../support/fixtures.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const ago = (ms: number) => new Date(Date.now() - ms);

const DIAGNOSTICS = `{ ops { diagnostics { code severity summary action subjects details } } }`;

interface Diagnostic {
  code: string;
  severity: string;
  summary: string;
  action: string;
  subjects: string[];
  details: Record<string, any>;
}

let server: TestServer;
let operator: string;
beforeAll(async () => {
  server = await startTestServer({
    VEGA_DIAGNOSTICS_QUEUED_SECONDS: "300",
    VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "60",
    VEGA_SCAN_RUNNING_STALE_SECONDS: "3600",
    VEGA_MAX_ACTIVE_SCANS_PER_USER: "2",
  });
  operator = await server.token("ops-olga", { groups: ["vega-ops"] });
});
afterAll(() => server?.close());
beforeEach(async () => {
  await server.app.deps.database.sql.withConnection(async (connection) => {
    const tables = await connection.query<{ tablename: string }>(
      `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> '_prisma_migrations'`,
    );
    await connection.exec(`TRUNCATE ${tables.map((table) => `"${table.tablename}"`).join(", ")} CASCADE`);
  });
  server.app.deps.seenUsers = new SeenUsers();
});

const prisma = () => server.app.deps.prisma;

async function diagnostics(): Promise<Diagnostic[]> {
  const response = await server.gql(DIAGNOSTICS, {}, operator);
  expect(response.body.errors).toBeUndefined();
  return response.body.data.ops.diagnostics;
}

const byCode = (found: Diagnostic[], code: string) => found.filter((diagnostic) => diagnostic.code === code);

async function scan(options: { ownerId?: string; status: ScanStatus; queuedAt?: Date; startedAt?: Date; workerId?: string; taskId?: string }) {
  const ownerId = options.ownerId ?? "alice";
  const workspaceId = await ensureUserRow(prisma(), ownerId);
  const artifact = await prisma().artifact.create({
    data: { kind: "SOURCE", workspaceId, ownerId, storageKey: `sources/test/${crypto.randomUUID()}`, sizeBytes: 1n, sha256: "0".repeat(64) },
  });
  return prisma().scan.create({
    data: {
      ownerId,
      workspaceId,
      status: options.status,
      sourceArtifactId: artifact.id,
      queuedAt: options.queuedAt ?? ago(MINUTE),
      startedAt: options.startedAt ?? (options.status === "RUNNING" ? ago(MINUTE) : null),
      workerId: options.workerId,
      taskId: options.taskId,
    },
  });
}

const worker = (name: string, data: { lastHeartbeatAt: Date; deregisteredAt?: Date }) =>
  prisma().worker.create({ data: { name, host: `${name}.internal`, pid: 42, version: "1.0.0", capacity: 2, ...data } });

describe("a healthy system", () => {
  it("answers no diagnostics", async () => {
    const live = await worker("live", { lastHeartbeatAt: new Date() });
    await scan({ status: "QUEUED", queuedAt: ago(4 * MINUTE) });
    await scan({ ownerId: "erin", status: "RUNNING", startedAt: ago(30 * MINUTE), workerId: live.id, taskId: "arn:aws:ecs:task/1" });
    await scan({ ownerId: "bob", status: "QUEUED" });
    await prisma().cleanupRun.create({ data: { trigger: "SCHEDULE", status: "SUCCEEDED", finishedAt: new Date() } });

    expect(await diagnostics()).toEqual([]);
  });
});

describe("scans stuck in queued", () => {
  it("reports NO_LIVE_WORKER for scans queued past VEGA_DIAGNOSTICS_QUEUED_SECONDS with no live worker, oldest first", async () => {
    const older = await scan({ status: "QUEUED", queuedAt: ago(20 * MINUTE) });
    const old = await scan({ ownerId: "bob", status: "QUEUED", queuedAt: ago(10 * MINUTE) });
    await scan({ status: "QUEUED", queuedAt: ago(MINUTE) });
    await worker("gone", { lastHeartbeatAt: ago(HOUR), deregisteredAt: ago(HOUR) });

    const [found] = byCode(await diagnostics(), "NO_LIVE_WORKER");

    expect(found).toMatchObject({
      severity: "CRITICAL",
      subjects: [`Scan:${older.id}`, `Scan:${old.id}`],
      details: { queuedScans: 2, queuedThresholdSeconds: 300, registeredStaleWorkers: 0 },
    });
    expect(found.summary).toMatch(/^2 scans queued for more than 5m \(oldest 20m( \d+s)?\) and no live worker: start or restart the worker service$/);
    expect(found.action).toMatch(/restart the worker service/);
  });

  it("does not report it while a live worker is registered", async () => {
    await scan({ status: "QUEUED", queuedAt: ago(20 * MINUTE) });
    await worker("live", { lastHeartbeatAt: new Date() });
    expect(byCode(await diagnostics(), "NO_LIVE_WORKER")).toEqual([]);
  });
});

describe("stale workers", () => {
  it("reports each STALE_WORKER with the scans it still holds", async () => {
    const stale = await worker("crashed", { lastHeartbeatAt: ago(5 * MINUTE) });
    const running = await scan({ status: "RUNNING", workerId: stale.id, taskId: "arn:aws:ecs:task/2" });
    const starting = await scan({ status: "STARTING", workerId: stale.id, queuedAt: ago(2 * MINUTE) });
    await scan({ status: "SUCCEEDED", workerId: stale.id });
    await worker("deregistered", { lastHeartbeatAt: ago(5 * MINUTE), deregisteredAt: ago(5 * MINUTE) });

    const found = byCode(await diagnostics(), "STALE_WORKER");

    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({
      severity: "WARNING",
      subjects: [`Worker:${stale.id}`, `Scan:${starting.id}`, `Scan:${running.id}`],
      details: { workerId: stale.id, name: "crashed", host: "crashed.internal", pid: 42 },
    });
    expect(found[0].details.scans).toEqual([
      { id: starting.id, status: "STARTING", taskId: null },
      { id: running.id, status: "RUNNING", taskId: "arn:aws:ecs:task/2" },
    ]);
    expect(found[0].summary).toMatch(/^Worker crashed \(crashed\.internal, pid 42\) last sent a heartbeat 5m( \d+s)? ago \(TTL 1m\) and still holds 2 scans$/);
  });
});

describe("scans stuck in running", () => {
  it("reports SCAN_RUNNING_PAST_THRESHOLD with the task and whether it was last seen alive", async () => {
    const unchecked = await scan({ status: "RUNNING", startedAt: ago(3 * HOUR), taskId: "arn:aws:ecs:us-east-1:1:task/vega/aaa" });
    const alive = await scan({ status: "RUNNING", startedAt: ago(2 * HOUR), taskId: "arn:aws:ecs:us-east-1:1:task/vega/bbb" });
    await prisma().scanEvent.createMany({
      data: [
        { scanId: alive.id, seq: 1, kind: "WARNING", code: TASK_ALIVE_EVENT_CODE, message: "task alive at first check", createdAt: ago(HOUR) },
        { scanId: alive.id, seq: 2, kind: "WARNING", code: TASK_ALIVE_EVENT_CODE, message: "task still alive", data: { lastStatus: "RUNNING" }, createdAt: ago(10 * MINUTE) },
        { scanId: alive.id, seq: 3, kind: "PROGRESS", message: "step" },
      ],
    });
    await scan({ status: "RUNNING", startedAt: ago(30 * MINUTE), taskId: "arn:aws:ecs:us-east-1:1:task/vega/ccc" });

    const found = byCode(await diagnostics(), "SCAN_RUNNING_PAST_THRESHOLD");

    expect(found.map((diagnostic) => diagnostic.subjects)).toEqual([
      [`Scan:${unchecked.id}`, `Task:${unchecked.taskId}`],
      [`Scan:${alive.id}`, `Task:${alive.taskId}`],
    ]);
    expect(found[0].details).toMatchObject({ scanId: unchecked.id, taskId: unchecked.taskId, taskAliveAsLastSeen: null });
    expect(found[0].summary).toMatch(/running for 3h.*past VEGA_SCAN_RUNNING_STALE_SECONDS \(1h\); task .*aaa has not been reported alive$/);
    expect(found[1].details.taskAliveAsLastSeen).toMatchObject({ message: "task still alive", data: { lastStatus: "RUNNING" } });
    expect(found[1].summary).toMatch(/task .*bbb was alive when last checked 10m( \d+s)? ago$/);
    expect(found[1].action).toMatch(/CloudWatch logs/);
  });
});

describe("quota errors hitting users", () => {
  it("reports USER_AT_QUOTA with the user's oldest active scans", async () => {
    const oldest = await scan({ ownerId: "carol", status: "RUNNING", queuedAt: ago(3 * HOUR), startedAt: ago(30 * MINUTE) });
    const next = await scan({ ownerId: "carol", status: "QUEUED", queuedAt: ago(MINUTE) });
    await scan({ ownerId: "carol", status: "FAILED" });
    await scan({ ownerId: "dave", status: "QUEUED" });

    const found = byCode(await diagnostics(), "USER_AT_QUOTA");

    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({
      severity: "INFO",
      subjects: ["User:carol", `Scan:${oldest.id}`, `Scan:${next.id}`],
      details: { userId: "carol", active: 2, limit: 2 },
    });
    expect(found[0].summary).toMatch(/^User carol has 2 active scans .* at the limit of 2/);
  });
});

describe("cleanup", () => {
  it("reports CLEANUP_FAILING when the last finished run failed", async () => {
    await prisma().cleanupRun.create({ data: { trigger: "SCHEDULE", status: "SUCCEEDED", startedAt: ago(2 * HOUR), finishedAt: ago(2 * HOUR) } });
    const failed = await prisma().cleanupRun.create({
      data: { trigger: "SCHEDULE", status: "FAILED", startedAt: ago(HOUR), finishedAt: ago(HOUR), error: "artifacts: EACCES" },
    });

    const found = byCode(await diagnostics(), "CLEANUP_FAILING");

    expect(found).toEqual([
      expect.objectContaining({ severity: "WARNING", subjects: [`CleanupRun:${failed.id}`], summary: "The last cleanup run (schedule) failed: artifacts: EACCES" }),
    ]);
  });

  it("reports it when scheduling is on and no run started within two intervals, once the process had that long", async () => {
    const config = { ...server.config, cleanupIntervalSeconds: 3600 };
    const last = await prisma().cleanupRun.create({ data: { trigger: "SCHEDULE", status: "SUCCEEDED", startedAt: ago(3 * HOUR), finishedAt: ago(3 * HOUR) } });

    const late = await diagnose({ prisma: prisma(), config }, { cleanupScheduledSince: ago(5 * HOUR) });
    expect(byCode(late as Diagnostic[], "CLEANUP_FAILING")).toEqual([
      expect.objectContaining({ subjects: [`CleanupRun:${last.id}`], summary: expect.stringMatching(/^No cleanup has run in the last 2h/) }),
    ]);
    expect(await diagnose({ prisma: prisma(), config }, { cleanupScheduledSince: ago(HOUR) })).toEqual([]);
    expect(await diagnose({ prisma: prisma(), config: { ...config, cleanupIntervalSeconds: 0 } })).toEqual([]);
  });
});

describe("access", () => {
  it("is for operators only", async () => {
    const user = await server.token("mallory");
    expect(errorCodes(await server.gql(DIAGNOSTICS, {}, user))).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(DIAGNOSTICS))).toEqual(["UNAUTHENTICATED"]);
  });

  it("lists every finding at once, most severe first", async () => {
    const stale = await worker("crashed", { lastHeartbeatAt: ago(5 * MINUTE) });
    await scan({ status: "QUEUED", queuedAt: ago(HOUR) });
    await scan({ status: "RUNNING", startedAt: ago(2 * HOUR), workerId: stale.id });
    await prisma().cleanupRun.create({ data: { trigger: "CLI", status: "FAILED", finishedAt: new Date(), error: "boom" } });

    const codes = (await diagnostics()).map((diagnostic) => diagnostic.code);

    expect(codes).toEqual(["NO_LIVE_WORKER", "STALE_WORKER", "SCAN_RUNNING_PAST_THRESHOLD", "CLEANUP_FAILING", "USER_AT_QUOTA"]);
  });
});
