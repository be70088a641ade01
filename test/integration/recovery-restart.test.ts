/**
 * Recovery whoever died, with real processes: the whole `vega start` process
 * group killed with SIGKILL while two scans run, then started again on the
 * same data directory; and, against a server in this process, only the
 * `vega worker` that launched two local runners killed while another worker
 * lives. Either way the running scans are FAILED once their runners have been
 * silent for VEGA_SCAN_HEARTBEAT_TTL_SECONDS (short here), with the findings
 * they had sent, and their owner's quota is free again.
 *
 * The runners are SIGSTOPped before the kill, so that none can finish first
 * however fast the machine is.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess, vegaBin } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import {
  awsKeysFile,
  pidOfLocalTask,
  processEnded,
  runnerWorkDirs,
  startWorkerProcess,
  waitFor,
  type WorkerProcess,
} from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];
/** A runner silent this long is recovered; it reports every second (a busy machine delays some beats, not ten in a row). */
const SHORT_TTL = { VEGA_SCAN_HEARTBEAT_TTL_SECONDS: "10", VEGA_RUNNER_HEARTBEAT_SECONDS: "1" };
const SCAN_FIELDS = "id status errorCode errorMessage taskId lastHeartbeatAt findingCounts { critical high medium low info }";

const groups: number[] = [];
const children: ChildProcess[] = [];
const runnerPids: number[] = [];
afterEach(async () => {
  for (const pid of groups.splice(0)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // The group is gone already.
    }
  }
  for (const child of children.splice(0)) await stopProcess(child, "SIGKILL");
  // Runners this test stopped and that outlived it (a failed assertion) are not left stopped on the machine;
  // only while the pid is still a vega runner, never a process that reused it.
  for (const pid of runnerPids.splice(0)) if (isVegaRunner(pid)) process.kill(pid, "SIGKILL");
});

function isVegaRunner(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(-2).join(" ") === `${vegaBin} runner`;
  } catch {
    return false;
  }
}

const totalFindings = (scan: { findingCounts: Record<string, number> }) => Object.values(scan.findingCounts).reduce((sum, count) => sum + count, 0);

/** A GraphQL client of a running Vega as one user. */
function apiOf(graphqlUrl: string, token: string) {
  return async (query: string, variables: Record<string, unknown> = {}) => {
    const response = await fetch(graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as { data: any; errors?: { extensions?: { code?: string } }[] };
  };
}

/** Waits until every scan is RUNNING with its task known, has heartbeated and stored a finding; answers them. */
async function runningWithFindings(read: (scanId: string) => Promise<any>, scanIds: string[], details: () => string) {
  return waitFor(
    "both scans to run, heartbeat and store findings",
    async () => {
      const scans = await Promise.all(scanIds.map(read));
      const ended = scans.find((scan) => FINISHED.includes(scan.status));
      if (ended) throw new Error(`scan ${ended.id} ended (${ended.status}) before the kill:\n${details()}`);
      return scans.every((scan) => scan.status === "RUNNING" && scan.taskId && scan.lastHeartbeatAt && totalFindings(scan) > 0) && scans;
    },
    { timeoutMs: 180_000 },
  );
}

const stopRunner = (taskId: string) => {
  const pid = pidOfLocalTask(taskId);
  process.kill(pid, "SIGSTOP");
  runnerPids.push(pid);
  return pid;
};

describe("kill -9 of the whole `vega start` process group with two scans running, then a restart", () => {
  let dataDir: string | undefined;
  afterAll(async () => {
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("fails both scans once their heartbeats are past the TTL, with their partial findings, and frees the quota", async () => {
    dataDir = await migratedDataDir("vega-restart-");
    const baseEnv = { VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: TEST_JWT_SECRET };
    const start = async (env: Record<string, string>) => {
      // The group's leader, so that one kill reaches the API, the embedded worker and its runners.
      const started = await startVega(["start"], { ...baseEnv, ...env }, /"msg":"worker registered"/, { timeoutMs: 300_000, detached: true });
      groups.push(started.child.pid!);
      children.push(started.child);
      const port = /"port":(\d+)/.exec(started.output())![1];
      return { ...started, graphqlUrl: `http://127.0.0.1:${port}/graphql` };
    };
    const token = await signToken(new TextEncoder().encode(TEST_JWT_SECRET), { sub: "alice", ttlSeconds: 3600 });

    const first = await start({
      ...SHORT_TTL,
      VEGA_MAX_ACTIVE_SCANS_PER_USER: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      // Passed on to the runners: one addFindings call per finding, so both are busy reporting when stopped.
      VEGA_RUNNER_FINDINGS_BATCH: "1",
    });
    const api = apiOf(first.graphqlUrl, token);
    const scanIds: string[] = [];
    for (const seed of [1, 2]) {
      const submitted = await submitScan({ graphqlUrl: first.graphqlUrl }, token, await buildZip([awsKeysFile(3000, "config/keys.env", seed)]));
      expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
      scanIds.push(submitted.body.data.submitScan.scan.id);
    }
    const read = async (scanId: string) => (await api(`query ($id: ID!) { scan(id: $id) { ${SCAN_FIELDS} } }`, { id: scanId })).data.scan;
    const running = await runningWithFindings(read, scanIds, () => first.output().slice(-3000));
    for (const scan of running) stopRunner(scan.taskId);
    process.kill(-first.child.pid!, "SIGKILL");
    await waitFor("the first vega start to be gone", () => first.child.exitCode !== null || first.child.signalCode !== null);

    // Default settings but for the short heartbeat TTL (and the runner interval it must exceed).
    const second = await start(SHORT_TTL);
    const again = apiOf(second.graphqlUrl, token);
    const readAgain = async (scanId: string) => (await again(`query ($id: ID!) { scan(id: $id) { ${SCAN_FIELDS} } }`, { id: scanId })).data.scan;
    const failed = await waitFor(
      "both scans to be recovered",
      async () => {
        const scans = await Promise.all(scanIds.map(readAgain));
        return scans.every((scan) => FINISHED.includes(scan.status)) && scans;
      },
      { timeoutMs: 120_000 },
    );
    for (const [index, scan] of failed.entries()) {
      expect(scan, second.output().slice(-3000)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_EXITED", taskId: running[index].taskId });
      expect(scan.errorMessage).toMatch(/no progress report for \d+ s \(TTL 10 s\)/);
      expect(scan.errorMessage).toContain("no longer known to the launcher");
      // What the runner sent before the kill stays.
      expect(totalFindings(scan)).toBeGreaterThanOrEqual(totalFindings(running[index]));
      expect(totalFindings(scan)).toBeLessThan(3000);
    }
    // The quota (2) is free: two more scans are accepted.
    for (let index = 0; index < 2; index++) {
      const submitted = await submitScan({ graphqlUrl: second.graphqlUrl }, token, await buildZip([{ name: "src/a.ts", data: "export {};\n" }]));
      expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
    }
    expect(await stopProcess(second.child, "SIGTERM")).toBe(0);
    for (const scanId of scanIds) for (const dir of runnerWorkDirs(scanId)) await rm(dir, { recursive: true, force: true });
  }, 600_000);
});

describe("only the worker that launched two local runners dies, while another worker lives", () => {
  let server: TestServer;
  afterAll(() => server?.close());

  it("the live worker kills the runner left hung and fails both scans (RUNNER_HUNG, RUNNER_EXITED) with their findings; the quota is free", async () => {
    // The dead worker does not turn stale during the test: the runners' heartbeat TTL alone must be enough.
    server = await startTestServer({ ...SHORT_TTL, VEGA_MAX_ACTIVE_SCANS_PER_USER: "2", VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "3600" });
    const prisma = server.app.deps.prisma;
    const alice = await server.token("alice");
    const workerEnv = async (name: string) => ({
      VEGA_API_URL: server.graphqlUrl,
      VEGA_WORKER_TOKEN: await server.token(`${name}-fleet`, { scope: "worker" }),
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_CAPACITY: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      VEGA_RUNNER_HEARTBEAT_SECONDS: "1",
      VEGA_RUNNER_FINDINGS_BATCH: "1",
    });
    const launcher: WorkerProcess = await startWorkerProcess("doomed-launcher", await workerEnv("doomed"));
    children.push(launcher.child);
    const scanIds: string[] = [];
    for (const seed of [3, 4]) {
      const submitted = await submitScan(server, alice, await buildZip([awsKeysFile(3000, "config/keys.env", seed)]));
      expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
      scanIds.push(submitted.body.data.submitScan.scan.id);
    }
    const read = async (scanId: string) =>
      (await server.gql(`query ($id: ID!) { scan(id: $id) { ${SCAN_FIELDS} } }`, { id: scanId }, alice)).body.data.scan;
    const [hung, killed] = await runningWithFindings(read, scanIds, () => JSON.stringify(launcher.logLines().slice(-20)));
    const hungPid = stopRunner(hung.taskId);
    const killedPid = stopRunner(killed.taskId);
    expect(await stopProcess(launcher.child, "SIGKILL")).toBeNull();
    // One runner outlives its worker, stopped (hung); the other dies after it.
    process.kill(killedPid, "SIGKILL");

    const survivor = await startWorkerProcess("survivor", await workerEnv("survivor"));
    children.push(survivor.child);
    const failed = await waitFor(
      "the survivor to recover both scans",
      async () => {
        const scans = await prisma.scan.findMany({ where: { id: { in: scanIds } } });
        return scans.every((scan) => FINISHED.includes(scan.status)) && new Map(scans.map((scan) => [scan.id, scan]));
      },
      { timeoutMs: 120_000 },
    );
    const survivorRow = await prisma.worker.findFirstOrThrow({ where: { name: "survivor" } });
    expect(failed.get(hung.id), JSON.stringify(survivor.logLines().slice(-20))).toMatchObject({ status: "FAILED", errorCode: "RUNNER_HUNG" });
    expect(failed.get(killed.id)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_EXITED" });
    expect(await prisma.recoveryLease.findFirst()).toMatchObject({ workerId: survivorRow.id });
    // SIGKILL, from the survivor: the hung runner was not its child.
    await waitFor(`hung runner ${hungPid} to end`, () => processEnded(hungPid));
    for (const scan of [hung, killed]) expect(await prisma.finding.count({ where: { scanId: scan.id } })).toBeGreaterThanOrEqual(totalFindings(scan));
    for (let index = 0; index < 2; index++) {
      expect((await submitScan(server, alice, await buildZip([{ name: "src/a.ts", data: "export {};\n" }]))).status).toBe(200);
    }
    expect(await stopProcess(survivor.child, "SIGTERM")).toBe(0);
    for (const scanId of scanIds) for (const dir of runnerWorkDirs(scanId)) await rm(dir, { recursive: true, force: true });
  }, 600_000);
});
