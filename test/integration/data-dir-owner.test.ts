/**
 * The embedded data directory has one owner, and maintenance jobs run through
 * it: real `vega start` processes on a data directory of the test's, a second
 * `vega start`/`serve` refused, `vega maintenance …` run through the server
 * that holds the directory, and after each fault (a restart, a SIGKILL) every
 * write that was reported done is still there.
 */
import { readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { acquireDataDirLock, LOCK_FILE, type DataDirOwner } from "../../api/db/data-dir-lock.ts";
import { runVega, summaryOf } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { dataDirKey, operatorToken, startVegaServer, type VegaServerProcess } from "../support/processes.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, waitFor, within } from "../support/worker-process.ts";
import { signToken } from "../../api/auth.ts";
import { buildZip } from "../support/zips.ts";

vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });
const CLI = { timeoutMs: 240_000 };

const lockOwner = async (dataDir: string) => JSON.parse(await readFile(path.join(dataDir, LOCK_FILE), "utf8")) as DataDirOwner;
const lockExists = (dataDir: string) => stat(path.join(dataDir, LOCK_FILE)).then(
  () => true,
  () => false,
);

const CLEANUP_RUNS = `{ ops { cleanup { runs(first: 100) { edges { node { id trigger triggeredBy dryRun status } } } } } }`;
const SCAN = `query ($id: ID!) { scan(id: $id) { id status findings(first: 10) { edges { node { ruleId } } } } }`;

describe("the embedded data directory while `vega start` runs on it", () => {
  let dataDir: string;
  let env: Record<string, string>;
  let server: VegaServerProcess;
  let opsToken: string;
  let aliceToken: string;
  let scanId: string;
  /** Cleanup runs the CLI reported done, by id. */
  const reportedRuns: string[] = [];

  const listedRuns = async (target: VegaServerProcess) => {
    const { data, errors } = await target.gql(CLEANUP_RUNS, {}, opsToken);
    expect(errors).toBeUndefined();
    return data.ops.cleanup.runs.edges.map((edge: any) => edge.node) as { id: string; trigger: string; triggeredBy: string; dryRun: boolean; status: string }[];
  };

  /** The scan written before the faults, with its finding, as the server now answers it. */
  const scanAsServed = async (target: VegaServerProcess) => (await target.gql(SCAN, { id: scanId }, aliceToken)).data?.scan;

  beforeAll(async () => {
    dataDir = await migratedDataDir("vega-owner-");
    env = { VEGA_DATA_DIR: dataDir, VEGA_WORKER_POLL_INTERVAL_SECONDS: "1" };
    server = await startVegaServer("start", env);
    const key = await dataDirKey(dataDir);
    opsToken = await operatorToken(key);
    aliceToken = await signToken(key, { sub: "alice", ttlSeconds: 3600 });
    const submitted = await submitScan({ graphqlUrl: server.graphqlUrl }, aliceToken, await buildZip([awsKeysFile(1)]));
    expect(submitted.body.errors).toBeUndefined();
    scanId = submitted.body.data.submitScan.scan.id;
    await waitFor("the scan to succeed", async () => (await scanAsServed(server))?.status === "SUCCEEDED", { timeoutMs: 240_000 });
  });
  afterAll(async () => {
    await server?.stop("SIGKILL");
    await rm(dataDir, { recursive: true, force: true });
  });

  it("names the server in the data directory's lock: pid, host, start time, URL", async () => {
    expect(await lockOwner(dataDir)).toMatchObject({ pid: server.pid, host: os.hostname(), command: "vega start", startedAt: expect.any(String), url: server.url });
  });

  it("refuses a second `vega start` and a `vega serve`: non-zero exit naming the directory and the owner's pid", async () => {
    for (const command of ["start", "serve"]) {
      const second = await runVega([command], { ...env, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1" }, CLI);
      expect(second.code, second.stderr).toBe(1);
      expect(second.stderr).toContain(dataDir);
      expect(second.stderr).toContain(`pid ${server.pid}`);
      expect(second.stderr).not.toMatch(/\n\s+at /);
    }
    // The first owner is untouched: still the lock's owner, its worker live (never swept as stale by a second copy).
    expect((await lockOwner(dataDir)).pid).toBe(server.pid);
    const { data } = await server.gql(`{ ops { workers(includeStale: true) { name stale deregisteredAt } } }`, {}, opsToken);
    expect(data.ops.workers.filter((worker: any) => !worker.deregisteredAt)).toEqual([expect.objectContaining({ stale: false })]);
  });

  it("runs cleanup, prune-artifacts and recover-stale (each with --dry-run) through the server, with the same JSON and exit codes", async () => {
    for (const [job, counts] of [
      ["cleanup", { artifacts: 0, orphanFiles: 0, uploadTemps: 0, sessions: 0, workers: 0 }],
      ["prune-artifacts", { artifacts: 0 }],
    ] as const) {
      for (const dryRun of [true, false]) {
        const result = await runVega(["maintenance", job, ...(dryRun ? ["--dry-run"] : [])], env, CLI);
        expect(result.code, result.stderr).toBe(0);
        const summary = summaryOf(result);
        expect(summary).toEqual({
          ok: true,
          job,
          cleanupRunId: expect.any(String),
          dryRun,
          status: "SUCCEEDED",
          counts,
          bytesFreed: "0",
          database: path.join(dataDir, "pglite"),
          server: server.url,
          durationMs: expect.any(Number),
        });
        reportedRuns.push(summary.cleanupRunId);
      }
    }
    const listed = await listedRuns(server);
    for (const id of reportedRuns) {
      expect(listed.find((run) => run.id === id)).toMatchObject({ trigger: "OPERATOR", triggeredBy: expect.stringContaining("@"), status: "SUCCEEDED" });
    }

    for (const dryRun of [true, false]) {
      const recovery = await runVega(["maintenance", "recover-stale", ...(dryRun ? ["--dry-run"] : [])], env, CLI);
      expect(recovery.code, recovery.stderr).toBe(0);
      expect(summaryOf(recovery)).toMatchObject({ ok: true, job: "recover-stale", dryRun, runningScansChecked: 0, orphanedClaimsFound: 0, decisions: [], applied: 0, server: server.url });
    }
  });

  it("refuses `vega maintenance migrate` on the held directory, naming the owner's pid", async () => {
    const result = await runVega(["maintenance", "migrate"], env, CLI);
    expect(result.code).toBe(1);
    expect(summaryOf(result)).toMatchObject({ ok: false, job: "migrate", error: expect.stringContaining(`pid ${server.pid}`) });
  });

  it("after a restart, lists the runs the CLI reported and keeps the scan; the lock names the new owner", async () => {
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(await lockExists(dataDir)).toBe(false);
    server = await startVegaServer("start", env);
    expect((await lockOwner(dataDir)).pid).toBe(server.pid);
    const listed = (await listedRuns(server)).map((run) => run.id);
    expect(listed).toEqual(expect.arrayContaining(reportedRuns));
    const scan = await scanAsServed(server);
    expect(scan).toMatchObject({ id: scanId, status: "SUCCEEDED" });
    expect(scan.findings.edges.map((edge: any) => edge.node.ruleId)).toEqual(["aws-access-key-id"]);
  });

  it("takes over the lock of a server killed with SIGKILL, and nothing it reported done is lost", async () => {
    const beforeKill = summaryOf(await runVega(["maintenance", "cleanup", "--dry-run"], env, CLI));
    expect(beforeKill).toMatchObject({ ok: true, server: server.url });
    reportedRuns.push(beforeKill.cleanupRunId);
    const killed = server.pid;
    await server.stop("SIGKILL");
    expect((await lockOwner(dataDir)).pid).toBe(killed);

    server = await startVegaServer("start", env);
    expect((await lockOwner(dataDir)).pid).toBe(server.pid);
    expect((await listedRuns(server)).map((run) => run.id)).toEqual(expect.arrayContaining(reportedRuns));
    expect(await scanAsServed(server)).toMatchObject({ id: scanId, status: "SUCCEEDED" });
  });
});

describe("vega maintenance on a data directory held by something other than a server", () => {
  it("exits 75 with skipped: true naming the owner, and does nothing", async () => {
    const dataDir = await migratedDataDir("vega-owner-");
    const lock = await acquireDataDirLock(dataDir, { command: "vega maintenance cleanup" });
    try {
      const result = await runVega(["maintenance", "prune-artifacts"], { VEGA_DATA_DIR: dataDir }, CLI);
      expect(result.code).toBe(75);
      expect(summaryOf(result)).toMatchObject({ ok: false, job: "prune-artifacts", skipped: true, error: expect.stringContaining(`pid ${process.pid}`) });
    } finally {
      await lock.release();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
