import { randomUUID } from "node:crypto";
import { spawn } from "node:child_process";
import { access, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { loadConfig, settings } from "../../shared/config.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import { acquireDataDirLock } from "../../api/db/data-dir-lock.ts";
import { CLEANUP_LOCK } from "../../api/services/cleanup-runs.ts";
import { childEnv, runVega, summaryOf, type CliResult } from "../support/cli.ts";
import { seedDataDir } from "../support/data-dir.ts";
import { createPostgresDatabase, postgresTestUrl } from "../support/database.ts";
import { startEcsEndpoint, type EcsEndpoint } from "../support/ecs-endpoint.ts";
import { ensureUserRow, insertScan } from "../support/fixtures.ts";
import { startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { waitFor, within } from "../support/worker-process.ts";

const HOUR = 3600_000;
/** A `vega` process on the embedded database starts PGlite (seconds on a busy machine): generous limits, not thresholds. */
const CLI = { timeoutMs: 240_000 };
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });
const ago = (ms: number) => new Date(Date.now() - ms);
const exists = (file: string) => access(file).then(
  () => true,
  () => false,
);

/**
 * A data directory (and, with VEGA_TEST_DATABASE_URL, a PostgreSQL database) for
 * the CLI: copies of the run's migrated templates unless `migrated` is false
 * (`vega maintenance migrate` itself is tested in migrations.test.ts). The embedded database opens in
 * one process at a time: fixtures are written with `withDatabase`, which closes
 * it again before the next `vega` runs.
 */
interface Target {
  env: Record<string, string>;
  dataDir: string;
  artifactDir: string;
  withDatabase<T>(work: (database: Database) => Promise<T>): Promise<T>;
  dispose(): Promise<void>;
}

async function createTarget({ migrated = true } = {}): Promise<Target> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-cli-"));
  if (migrated) await seedDataDir(dataDir);
  const postgres = postgresTestUrl ? await createPostgresDatabase({ migrated }) : undefined;
  const env = {
    VEGA_DATA_DIR: dataDir,
    VEGA_ARTIFACT_RETENTION_SECONDS: "3600",
    ...(postgres ? { VEGA_DATABASE_URL: postgres.url } : {}),
  };
  const config = loadConfig(env);
  return {
    env,
    dataDir,
    artifactDir: config.artifactStoreDir,
    async withDatabase(work) {
      const database = await openDatabase(config);
      try {
        return await work(database);
      } finally {
        await database.close();
      }
    },
    async dispose() {
      await postgres?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A scan finished two hours ago whose source archive (`bytes` long) is in the store. */
async function expiredScan(target: Target, bytes: number) {
  const storageKey = `sources/2020-01/${randomUUID()}`;
  const file = path.join(target.artifactDir, storageKey);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, Buffer.alloc(bytes));
  await target.withDatabase(async ({ prisma }) => {
    const workspaceId = await ensureUserRow(prisma, "alice");
    const artifact = await prisma.artifact.create({
      data: { kind: "SOURCE", workspaceId, ownerId: "alice", storageKey, sizeBytes: BigInt(bytes), sha256: "0".repeat(64), createdAt: ago(3 * HOUR) },
    });
    await prisma.scan.create({
      data: { ownerId: "alice", workspaceId, status: "SUCCEEDED", sourceArtifactId: artifact.id, finishedAt: ago(2 * HOUR) },
    });
  });
  return file;
}

async function uploadTemp(target: Target) {
  await mkdir(path.join(target.artifactDir, "tmp"), { recursive: true });
  return path.join(target.artifactDir, "tmp", `upload-${randomUUID()}`);
}

describe("vega maintenance cleanup and prune-artifacts", () => {
  let target: Target;
  beforeAll(async () => {
    target = await createTarget();
  });
  afterAll(() => target?.dispose());

  it("a dry run exits 0, reports the counts and bytes, and removes nothing; the real run removes them", async () => {
    const archive = await expiredScan(target, 4096);
    const temp = await uploadTemp(target);
    await writeFile(temp, Buffer.alloc(100));
    await utimes(temp, ago(2 * HOUR), ago(2 * HOUR));

    const dry = await runVega(["maintenance", "cleanup", "--dry-run"], target.env, CLI);
    expect(dry.code, dry.stderr).toBe(0);
    expect(summaryOf(dry)).toMatchObject({
      ok: true,
      job: "cleanup",
      dryRun: true,
      status: "SUCCEEDED",
      counts: { artifacts: 1, orphanFiles: 0, uploadTemps: 1, sessions: 0, workers: 0 },
      bytesFreed: "4196",
    });
    expect(await exists(archive)).toBe(true);
    expect(await exists(temp)).toBe(true);

    const real = await runVega(["maintenance", "cleanup"], target.env, CLI);
    expect(real.code, real.stderr).toBe(0);
    const summary = summaryOf(real);
    expect(summary).toMatchObject({ ok: true, dryRun: false, counts: { artifacts: 1, uploadTemps: 1 }, bytesFreed: "4196" });
    expect(await exists(archive)).toBe(false);
    expect(await exists(temp)).toBe(false);
    const run = await target.withDatabase(({ prisma }) => prisma.cleanupRun.findUniqueOrThrow({ where: { id: summary.cleanupRunId } }));
    expect(run).toMatchObject({ trigger: "CLI", status: "SUCCEEDED", triggeredBy: expect.stringContaining("@") });
  });

  it("prune-artifacts runs the artifact job alone", async () => {
    const archive = await expiredScan(target, 10);
    const temp = await uploadTemp(target);
    await writeFile(temp, "x");
    await utimes(temp, ago(2 * HOUR), ago(2 * HOUR));

    const result = await runVega(["maintenance", "prune-artifacts"], target.env, CLI);

    expect(result.code, result.stderr).toBe(0);
    expect(summaryOf(result)).toMatchObject({ ok: true, job: "prune-artifacts", counts: { artifacts: 1 }, bytesFreed: "10" });
    expect(summaryOf(result).counts).toEqual({ artifacts: 1 });
    expect(await exists(archive)).toBe(false);
    expect(await exists(temp)).toBe(true);
  });

  it("exits 1 with the run's error when a job fails", async () => {
    const archive = await expiredScan(target, 10);
    // A directory where the archive should be: it cannot be deleted as a file.
    await rm(archive);
    await mkdir(path.join(archive, "inside"), { recursive: true });

    const result = await runVega(["maintenance", "prune-artifacts"], target.env, CLI);

    expect(result.code).toBe(1);
    expect(summaryOf(result)).toMatchObject({
      ok: false,
      job: "prune-artifacts",
      status: "FAILED",
      error: expect.stringMatching(/^artifacts: could not delete 1 of the artifact files/),
    });
    await rm(archive, { recursive: true });
  });

  it("refuses unknown flags and arguments with exit 2", async () => {
    expect((await runVega(["maintenance", "cleanup", "--force"], target.env, CLI)).code).toBe(2);
    expect((await runVega(["maintenance", "prune-artifacts", "now"], target.env, CLI)).code).toBe(2);
  });

  describe.skipIf(!postgresTestUrl)("while another cleanup runs (PostgreSQL)", () => {
    it("exits 75 with skipped: true and the run in progress, and does nothing", async () => {
      const archive = await expiredScan(target, 10);
      const running = await target.withDatabase(({ prisma }) =>
        prisma.cleanupRun.create({ data: { trigger: "OPERATOR", triggeredBy: "olga", status: "RUNNING" } }),
      );
      const holder = new pg.Client({ connectionString: target.env.VEGA_DATABASE_URL });
      await holder.connect();
      try {
        await holder.query(`SELECT pg_advisory_lock($1::int4, $2::int4)`, [CLEANUP_LOCK.namespace, CLEANUP_LOCK.run]);
        const result = await runVega(["maintenance", "cleanup"], target.env, CLI);
        expect(result.code).toBe(75);
        expect(summaryOf(result)).toMatchObject({
          ok: false,
          job: "cleanup",
          skipped: true,
          inProgress: { cleanupRunId: running.id, trigger: "OPERATOR", triggeredBy: "olga" },
        });
        expect(await exists(archive)).toBe(true);
      } finally {
        await holder.end();
      }
    });
  });
});

describe("vega maintenance on a database not migrated yet", () => {
  it("exits 1 and says to run migrate first", async () => {
    const target = await createTarget({ migrated: false });
    try {
      const result = await runVega(["maintenance", "cleanup"], target.env, CLI);
      expect(result.code).toBe(1);
      expect(summaryOf(result)).toMatchObject({ ok: false, job: "cleanup", error: expect.stringContaining("run `vega maintenance migrate` first") });
    } finally {
      await target.dispose();
    }
  });
});

describe("vega maintenance run-remote", () => {
  let ecs: EcsEndpoint;
  beforeAll(async () => {
    ecs = await startEcsEndpoint();
  });
  afterAll(() => ecs?.close());
  beforeEach(() => ecs.reset());

  /** The real SDK in the child, pointed at the endpoint by AWS_ENDPOINT_URL_ECS. */
  const awsEnv = () => ({
    AWS_ENDPOINT_URL_ECS: ecs.url,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
    AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    VEGA_ECS_SUBNETS: "subnet-aaa",
    VEGA_ECS_SECURITY_GROUPS: "sg-123",
  });

  const stopWith = (exitCode: number, stoppedReason = "Essential container in task exited") =>
    ecs.onRunTask((task) => {
      ecs.setTaskState(task.taskArn, { lastStatus: "STOPPED", exitCode, stoppedReason });
    });

  it("runs the job as the environment's vega-maintenance task and exits 0 when it does", async () => {
    stopWith(0);

    const result = await runVega(["maintenance", "run-remote", "migrate", "--env", "dev"], awsEnv(), CLI);

    expect(result.code, result.stderr).toBe(0);
    const [runTask] = ecs.requests.filter((request) => request.operation === "RunTask");
    expect(runTask.body).toMatchObject({
      cluster: "vega-dev",
      taskDefinition: "vega-maintenance-dev",
      launchType: "FARGATE",
      startedBy: "vega-run-remote",
      clientToken: expect.stringMatching(/^[0-9a-f-]{36}$/),
      networkConfiguration: { awsvpcConfiguration: { subnets: ["subnet-aaa"], securityGroups: ["sg-123"], assignPublicIp: "DISABLED" } },
      overrides: { containerOverrides: [{ name: "maintenance", command: ["maintenance", "migrate"] }] },
    });
    const task = [...ecs.tasks.values()][0];
    expect(summaryOf(result)).toEqual({
      ok: true,
      job: "run-remote",
      remoteJob: "migrate",
      args: [],
      env: "dev",
      cluster: "vega-dev",
      taskDefinition: "vega-maintenance-dev",
      taskArn: task.taskArn,
      exitCode: 0,
      stopCode: "EssentialContainerExited",
      stoppedReason: "Essential container in task exited",
      durationMs: expect.any(Number),
    });
  });

  it("exits with a failing task's exit code and prints its stopped reason", async () => {
    stopWith(3, "Essential container in task exited");

    const result = await runVega(["maintenance", "run-remote", "cleanup", "--dry-run", "--env", "prod", "--cluster", "ops", "--task-definition", "maint:7"], awsEnv(), CLI);

    expect(result.code).toBe(3);
    expect(summaryOf(result)).toMatchObject({ ok: false, remoteJob: "cleanup", args: ["--dry-run"], cluster: "ops", exitCode: 3, stoppedReason: "Essential container in task exited" });
    const [runTask] = ecs.requests.filter((request) => request.operation === "RunTask");
    expect(runTask.body).toMatchObject({ cluster: "ops", taskDefinition: "maint:7" });
    expect(runTask.body.overrides.containerOverrides[0].command).toEqual(["maintenance", "cleanup", "--dry-run"]);
  });

  it("polls DescribeTasks until the task stops", async () => {
    ecs.onRunTask((task) => {
      ecs.setTaskState(task.taskArn, { lastStatus: "RUNNING" });
    });
    const child = runVega(["maintenance", "run-remote", "prune-artifacts", "--env", "dev"], awsEnv(), CLI);
    // Stop the task once the command has seen it running.
    while (ecs.calls("DescribeTasks") === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const taskArn = [...ecs.tasks.keys()][0];
    ecs.setTaskState(taskArn, { lastStatus: "STOPPED", exitCode: 0 });

    const result = await child;

    expect(result.code, result.stderr).toBe(0);
    expect(ecs.calls("DescribeTasks")).toBeGreaterThanOrEqual(2);
    expect(summaryOf(result)).toMatchObject({ ok: true, exitCode: 0, taskArn });
  });

  it("gives up waiting at --timeout with exit 124 and leaves the task running", async () => {
    ecs.onRunTask((task) => {
      ecs.setTaskState(task.taskArn, { lastStatus: "RUNNING" });
    });

    const result = await runVega(["maintenance", "run-remote", "migrate", "--env", "dev", "--timeout", "1"], awsEnv(), CLI);

    expect(result.code).toBe(124);
    expect(summaryOf(result)).toMatchObject({ ok: false, lastStatus: "RUNNING", error: expect.stringContaining("left running") });
    expect(ecs.calls("StopTask")).toBe(0);
  });

  it("exits 1 with ECS's reason when no task starts", async () => {
    ecs.failNextRunTasks(1, { reason: "Capacity is unavailable at this time" });

    const result = await runVega(["maintenance", "run-remote", "migrate", "--env", "dev"], awsEnv(), CLI);

    expect(result.code).toBe(1);
    expect(summaryOf(result)).toMatchObject({ ok: false, error: "ECS started no task: Capacity is unavailable at this time" });
  });

  it("refuses a missing --env or an unknown job with exit 2, before calling ECS", async () => {
    expect((await runVega(["maintenance", "run-remote", "migrate"], awsEnv(), CLI)).code).toBe(2);
    expect((await runVega(["maintenance", "run-remote", "migrat", "--env", "dev"], awsEnv(), CLI)).code).toBe(2);
    expect((await runVega(["maintenance", "run-remote", "run-remote", "--env", "dev"], awsEnv(), CLI)).code).toBe(2);
    expect(ecs.requests).toHaveLength(0);
  });

  it("scripts/aws/run-migrations.sh runs migrate remotely and exits with the task's exit code", async () => {
    stopWith(7);
    const script = path.resolve("scripts/aws/run-migrations.sh");
    const result = await new Promise<CliResult>((resolve, reject) => {
      const child = spawn(script, ["dev"], { env: childEnv(awsEnv()), stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk) => (stdout += chunk));
      child.stderr.on("data", (chunk) => (stderr += chunk));
      child.on("error", reject);
      child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
    expect(result.code, result.stderr).toBe(7);
    expect(summaryOf(result)).toMatchObject({ remoteJob: "migrate", env: "dev", exitCode: 7 });
  });
});

describe("deploy/ task definition templates", () => {
  const deployDir = path.resolve("deploy/ecs");

  it("define the api, worker, runner and maintenance tasks with known settings and secrets from SSM or Secrets Manager", async () => {
    const files = (await readdir(deployDir)).filter((file) => file.endsWith(".json")).sort();
    expect(files).toEqual(["vega-api.json", "vega-maintenance.json", "vega-runner.json", "vega-worker.json"]);
    const known = new Set(Object.values(settings).map((setting) => setting.env));
    for (const file of files) {
      const definition = JSON.parse(await readFile(path.join(deployDir, file), "utf8"));
      expect(definition.family, file).toMatch(/^vega-(api|worker|runner|maintenance)-\$\{ENV\}$/);
      const [container] = definition.containerDefinitions;
      for (const variable of container.environment ?? []) expect(known, `${file}: ${variable.name}`).toContain(variable.name);
      for (const secret of container.secrets ?? []) {
        expect(known, `${file}: ${secret.name}`).toContain(secret.name);
        expect(secret.valueFrom, `${file}: ${secret.name}`).toMatch(/^arn:aws:(ssm|secretsmanager):\$\{AWS_REGION\}:\$\{AWS_ACCOUNT_ID\}:/);
      }
      const names = [...(container.environment ?? []), ...(container.secrets ?? [])].map((entry: { name: string }) => entry.name);
      expect(new Set(names).size, `${file}: a setting given twice`).toBe(names.length);
      for (const secretName of ["VEGA_DATABASE_URL", "VEGA_JWT_SECRET", "VEGA_WORKER_TOKEN"]) {
        expect((container.environment ?? []).map((entry: { name: string }) => entry.name), `${file}: ${secretName} must be a secret`).not.toContain(secretName);
      }
    }
  });

  it("give the maintenance task the entry point run-remote overrides the command of", async () => {
    const maintenance = JSON.parse(await readFile(path.join(deployDir, "vega-maintenance.json"), "utf8"));
    const [container] = maintenance.containerDefinitions;
    expect(container.name).toBe("maintenance");
    expect(container.entryPoint).toEqual(["node", "bin/vega.mjs"]);
    expect(container.command).toEqual(["maintenance", "migrate"]);
  });
});

describe("vega maintenance cleanup through a server whose cleanup is in progress", () => {
  let server: TestServer;
  beforeAll(async () => {
    // Retention 0: a finished scan's archive is due at once.
    server = await startTestServer({ VEGA_ARTIFACT_RETENTION_SECONDS: "0" });
  });
  afterAll(() => server?.close());

  it("exits 75 with skipped: true and the run in progress, and starts nothing", async () => {
    // The server's own run holds on deleting an expired archive until the test lets it go.
    await insertScan(server.app.deps.prisma, { ownerId: "alice", status: "SUCCEEDED" });
    const store = server.app.deps.artifacts;
    // The retention job deletes expired archives in batches (deleteMany): its first batch is held.
    const originalDelete = store.deleteMany;
    let releaseDelete!: () => void;
    const deleteReleased = new Promise<void>((resolve) => (releaseDelete = resolve));
    let deleteReached!: () => void;
    const deleteStarted = new Promise<void>((resolve) => (deleteReached = resolve));
    store.deleteMany = async (storageKeys) => {
      deleteReached();
      await deleteReleased;
      return originalDelete.call(store, storageKeys);
    };
    // The CLI finds the server through the lock, as it would find `vega serve` holding the directory.
    const lock = await acquireDataDirLock(server.dataDir, { command: "vega serve" });
    await lock.announce(server.url);
    try {
      const operator = await server.token("olga", { groups: ["vega-ops"] });
      const started = await server.gql(`mutation { triggerCleanup { id status } }`, {}, operator);
      const running = started.body.data.triggerCleanup;
      expect(running.status).toBe("RUNNING");
      await within(deleteStarted, "the server's run to reach the archive");

      const result = await runVega(["maintenance", "cleanup"], { VEGA_DATA_DIR: server.dataDir, VEGA_JWT_SECRET: TEST_JWT_SECRET }, CLI);

      expect(result.code, result.stderr).toBe(75);
      expect(summaryOf(result)).toMatchObject({
        ok: false,
        job: "cleanup",
        skipped: true,
        error: "another cleanup is in progress; nothing was done",
        inProgress: { cleanupRunId: running.id, trigger: "OPERATOR", triggeredBy: "olga", startedAt: expect.any(String) },
      });
      expect(await server.app.deps.prisma.cleanupRun.count()).toBe(1);
    } finally {
      releaseDelete();
      store.deleteMany = originalDelete;
      await lock.release();
    }
    await waitFor("the server's run to finish", async () => (await server.app.deps.prisma.cleanupRun.findFirst({ where: { status: "RUNNING" } })) === null);
  });
});
