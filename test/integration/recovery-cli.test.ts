/**
 * `vega maintenance recover-stale [--dry-run]`, run as an operator runs it: a
 * child process over its own database (embedded PGlite in a data directory,
 * or a fresh PostgreSQL database with VEGA_TEST_DATABASE_URL), asking the ECS
 * test endpoint about tasks through the real SDK (AWS_ENDPOINT_URL_ECS).
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import { ECSClient } from "@aws-sdk/client-ecs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import { createEcsLauncher } from "../../worker/launchers/ecs.ts";
import { runVega, type CliResult } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { createPostgresDatabase, postgresTestUrl } from "../support/database.ts";
import { startEcsEndpoint, type EcsEndpoint } from "../support/ecs-endpoint.ts";
import { ecsClientEnv, insertScansInBulk, testEcsLauncherOptions } from "../support/recovery.ts";

const longAgo = () => new Date(Date.now() - 2 * 3600_000);

function summaryOf(result: CliResult): Record<string, any> {
  const lines = result.stdout.trim().split("\n");
  expect(lines, result.stderr).toHaveLength(1);
  return JSON.parse(lines[0]);
}

let ecs: EcsEndpoint;
let dataDir: string;
let dropPostgres: (() => Promise<void>) | undefined;
let env: Record<string, string>;
let databaseEnv: Record<string, string>;

/** The embedded database opens in one process at a time: open it, work, close it before the next `vega` runs. */
async function withDatabase<T>(work: (database: Database) => Promise<T>): Promise<T> {
  const database = await openDatabase(loadConfig(databaseEnv));
  try {
    return await work(database);
  } finally {
    await database.close();
  }
}

beforeAll(async () => {
  ecs = await startEcsEndpoint();
  dataDir = await migratedDataDir("vega-recover-cli-");
  const postgres = postgresTestUrl ? await createPostgresDatabase() : undefined;
  dropPostgres = postgres?.drop;
  databaseEnv = { VEGA_DATA_DIR: dataDir, ...(postgres ? { VEGA_DATABASE_URL: postgres.url } : {}) };
  env = {
    ...databaseEnv,
    VEGA_LAUNCHER: "ecs",
    VEGA_ECS_CLUSTER: "vega",
    VEGA_SCAN_RUNNING_STALE_SECONDS: "3600",
    // Past the scans' age: this is the stale sweep (the timeout has tests of its own).
    VEGA_SCAN_TIMEOUT_SECONDS: "86400",
    VEGA_SCAN_MAX_ATTEMPTS: "3",
    ...ecsClientEnv(ecs.url),
  };
  const migrated = await runVega(["maintenance", "migrate"], databaseEnv, { timeoutMs: 120_000 });
  expect(migrated.code, migrated.stderr).toBe(0);
}, 180_000);

afterAll(async () => {
  await ecs?.close();
  await dropPostgres?.();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("vega maintenance recover-stale", () => {
  it("prints what it would do with --dry-run and changes nothing; without, applies it; a second run finds nothing more", async () => {
    const client = new ECSClient({ endpoint: ecs.url, region: "us-east-1", credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "x" }, maxAttempts: 1 });
    const launcher = createEcsLauncher({
      ...testEcsLauncherOptions,
      client,
    });
    const request = (scanId: string) => ({ scanId, attempt: 1, apiUrl: "http://api.internal/graphql", runnerToken: "unused" });
    const { taskId: liveTask } = await launcher.launch(request("cli-live"));
    const { taskId: stoppedTask } = await launcher.launch(request("cli-stopped"));
    ecs.setTaskState(liveTask, { lastStatus: "RUNNING" });
    ecs.setTaskState(stoppedTask, { lastStatus: "STOPPED", stopCode: "TaskFailedToStart", stoppedReason: "CannotPullContainerError: pull access denied" });
    const forgottenTask = `arn:aws:ecs:us-east-1:123456789012:task/vega/${randomBytes(16).toString("hex")}`;
    client.destroy();

    const snapshot = async (prisma: Database["prisma"], ids: string[]) => ({
      scans: await prisma.scan.findMany({ where: { id: { in: ids } }, orderBy: { id: "asc" } }),
      events: await prisma.scanEvent.count({ where: { scanId: { in: ids } } }),
    });
    const { fixtures, before } = await withDatabase(async ({ prisma }) => {
      const [live, stopped, forgotten] = await insertScansInBulk(prisma, {
        ownerId: "alice",
        taskIds: [liveTask, stoppedTask, forgottenTask],
        startedAt: longAgo(),
      });
      const [orphaned] = await insertScansInBulk(prisma, { ownerId: "alice", taskIds: [null], status: "STARTING", startedAt: longAgo(), attempts: 1 });
      const [exhausted] = await insertScansInBulk(prisma, { ownerId: "alice", taskIds: [null], status: "STARTING", startedAt: longAgo(), attempts: 3 });
      const created = { live, stopped, forgotten, orphaned, exhausted };
      return { fixtures: created, before: await snapshot(prisma, Object.values(created)) };
    });
    const ids = Object.values(fixtures);

    const dry = await runVega(["maintenance", "recover-stale", "--dry-run"], env, { timeoutMs: 120_000 });
    expect(dry.code, dry.stderr).toBe(0);
    const planned = summaryOf(dry);
    expect(planned).toMatchObject({ ok: true, job: "recover-stale", dryRun: true, runningScansChecked: 3, orphanedClaimsFound: 2, applied: 0 });
    const byScan = Object.fromEntries(planned.decisions.map((decision: any) => [decision.scanId, [decision.action, decision.code]]));
    expect(byScan).toEqual({
      [fixtures.live]: ["WARN", "STALE_SCAN_TASK_ALIVE"],
      [fixtures.stopped]: ["FAIL", "STALE_SCAN"],
      [fixtures.forgotten]: ["FAIL", "STALE_SCAN"],
      [fixtures.orphaned]: ["REQUEUE", "ORPHANED_CLAIM"],
      [fixtures.exhausted]: ["FAIL", "ATTEMPTS_EXHAUSTED"],
    });
    const stoppedDecision = planned.decisions.find((decision: any) => decision.scanId === fixtures.stopped);
    expect(stoppedDecision.reason).toContain(stoppedTask);
    expect(stoppedDecision.reason).toContain("CannotPullContainerError");
    expect(await withDatabase(({ prisma }) => snapshot(prisma, ids))).toEqual(before);
    expect(ecs.calls("DescribeTasks")).toBe(1);

    const applied = await runVega(["maintenance", "recover-stale"], env, { timeoutMs: 120_000 });
    expect(applied.code, applied.stderr).toBe(0);
    expect(summaryOf(applied)).toMatchObject({ ok: true, dryRun: false, applied: 5 });
    await withDatabase(async ({ prisma }) => {
      const scans = Object.fromEntries(
        (await prisma.scan.findMany({ where: { id: { in: ids } } })).map((scan) => [scan.id, [scan.status, scan.errorCode, scan.staleWarnedAt !== null]]),
      );
      expect(scans).toEqual({
        [fixtures.live]: ["RUNNING", null, true],
        [fixtures.stopped]: ["FAILED", "STALE_SCAN", false],
        [fixtures.forgotten]: ["FAILED", "STALE_SCAN", false],
        [fixtures.orphaned]: ["QUEUED", null, false],
        [fixtures.exhausted]: ["FAILED", "ATTEMPTS_EXHAUSTED", false],
      });
      const events = await prisma.scanEvent.findMany({ where: { scanId: { in: ids } } });
      expect(events.map((event) => [event.scanId, event.code]).sort()).toEqual(
        [
          [fixtures.live, "STALE_SCAN_TASK_ALIVE"],
          [fixtures.stopped, "STALE_SCAN"],
          [fixtures.forgotten, "STALE_SCAN"],
          [fixtures.orphaned, "ORPHANED_CLAIM"],
          [fixtures.exhausted, "ATTEMPTS_EXHAUSTED"],
        ].sort(),
      );
      const stoppedEvent = events.find((event) => event.scanId === fixtures.stopped)!;
      expect(stoppedEvent.data).toMatchObject({ task: { taskId: stoppedTask, state: "STOPPED", stopCode: "TaskFailedToStart" } });
      const audits = await prisma.auditEntry.findMany({ where: { action: "scan.recoverStale" }, orderBy: { at: "asc" } });
      expect(audits.map((entry) => [entry.actor.startsWith("cli:"), entry.details])).toEqual([
        [true, { dryRun: true, decisions: 5, applied: 0 }],
        [true, { dryRun: false, decisions: 5, applied: 5 }],
      ]);
    });

    const again = await runVega(["maintenance", "recover-stale"], env, { timeoutMs: 120_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(summaryOf(again)).toMatchObject({ ok: true, runningScansChecked: 1, orphanedClaimsFound: 0, decisions: [], applied: 0 });
  }, 600_000); // Each `vega` run opens the embedded database anew: minutes in all on a busy machine.

  it("refuses flags it does not know, and does nothing", async () => {
    const result = await runVega(["maintenance", "recover-stale", "--force"], env, { timeoutMs: 120_000 });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/--force/);
  }, 180_000);
});
