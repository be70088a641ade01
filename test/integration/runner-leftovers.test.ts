/**
 * Runners killed with SIGKILL, alone or with their whole worker's process
 * group, leave no work directory (the user's extracted source) behind: the
 * local launcher removes its child's directory when it sees the child exit, and
 * a worker starting after a crash removes those of runners that no longer run,
 * never those of a live one. Real `vega worker` processes and their runners,
 * with a temporary directory of the test's, reach the API through a gate that
 * holds a runner's second report, so the runner is alive mid-scan when killed.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createLocalLauncher } from "../../worker/launchers/local.ts";
import { startApiGate, type ApiGate, type Hold } from "../support/api-gate.ts";
import { stopProcess, vegaBin } from "../support/cli.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, pidOfLocalTask, processExists, startWorkerProcess, waitFor, waitForScanStatus, within, type WorkerProcess } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

vi.setConfig({ testTimeout: 300_000, hookTimeout: 300_000 });

let server: TestServer;
let gate: ApiGate;
let tmpRoot: string;
let alice: string;
const workers: WorkerProcess[] = [];
const holds: Hold[] = [];

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "20", VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "3", VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1" });
  gate = await startApiGate(server.url);
  alice = await server.token("alice");
  tmpRoot = await mkdtemp(path.join(os.tmpdir(), "vega-leftovers-"));
});
afterEach(async () => {
  for (const hold of holds.splice(0)) hold.drop();
  for (const worker of workers.splice(0)) await stopProcess(worker.child, "SIGKILL");
});
afterAll(async () => {
  await gate?.close();
  await server?.close();
  await rm(tmpRoot, { recursive: true, force: true });
});

async function startWorker(name: string, options: { detached?: boolean } = {}) {
  const worker = await startWorkerProcess(
    name,
    {
      VEGA_API_URL: gate.graphqlUrl,
      VEGA_WORKER_TOKEN: await server.token("local-fleet", { scope: "worker" }),
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
      // One finding per addFindings call: the runner's second report can be held.
      VEGA_RUNNER_FINDINGS_BATCH: "1",
      TMPDIR: tmpRoot,
    },
    options,
  );
  workers.push(worker);
  return worker;
}

const workDirs = async (scanId: string) => (await readdir(tmpRoot)).filter((name) => name.startsWith(`vega-runner-${scanId.slice(0, 8)}-`));
const findingCount = (scanId: string) => server.app.deps.prisma.finding.count({ where: { scanId } });

/** A scan whose runner is alive, holding its second addFindings; answers the scan and the runner's pid. */
async function scanWithLiveRunner(worker: WorkerProcess) {
  let scanId: string | undefined;
  const secondReport = gate.hold((call) => call.operationName === "AddFindings" && call.variables.scanId === scanId, { skip: 1 });
  holds.push(secondReport);
  const submitted = await submitScan(server, alice, await buildZip([awsKeysFile(3)]));
  scanId = submitted.body.data.submitScan.scan.id as string;
  await within(secondReport.first, "the runner's second addFindings", { timeoutMs: 120_000, details: () => JSON.stringify(worker.logLines().slice(-20)) });
  const scan = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
  return { scanId, runnerPid: pidOfLocalTask(scan.taskId), secondReport };
}

describe("a runner killed with SIGKILL", () => {
  it("has its work directory removed by the launcher that sees it exit; the finding it reported stays", async () => {
    const worker = await startWorker("sees-its-runner-die");
    const { scanId, runnerPid, secondReport } = await scanWithLiveRunner(worker);
    expect(await workDirs(scanId)).toHaveLength(1);
    expect(await findingCount(scanId)).toBe(1);

    // Another worker starting now must leave a live runner's directory alone.
    const bystander = createLocalLauncher({ command: [process.execPath, vegaBin, "runner"], workDirRoot: tmpRoot });
    expect(await bystander.removeLeftoverWorkDirs()).toEqual([]);
    expect(await workDirs(scanId)).toHaveLength(1);

    process.kill(runnerPid, "SIGKILL");
    const exited = await worker.waitForLog((line) => line.msg === "runner process exited" && line.scanId === scanId);
    expect(exited).toMatchObject({ signal: "SIGKILL" });
    // The launcher logs the exit once it has removed the directory.
    expect(await workDirs(scanId)).toEqual([]);
    secondReport.drop();

    const failed = await waitForScanStatus(server.app.deps.prisma, scanId, ["FAILED"]);
    expect(failed.errorCode).toBe("RUNNER_EXITED");
    expect(await findingCount(scanId)).toBe(1);
  });
});

describe("a worker's whole process group killed with SIGKILL", () => {
  it("leaves the runner's directory, which the next worker removes when it starts; the finding stays", async () => {
    const crashed = await startWorker("crashes", { detached: true });
    const { scanId, runnerPid, secondReport } = await scanWithLiveRunner(crashed);
    const [leftover] = await workDirs(scanId);
    expect(leftover).toBeDefined();

    // Its own group: the worker's pid is the group's id.
    process.kill(-crashed.child.pid!, "SIGKILL");
    await waitFor("the worker and its runner to be gone", () => !processExists(crashed.child.pid!) && !processExists(runnerPid));
    secondReport.drop();
    expect(await workDirs(scanId)).toEqual([leftover]);

    const next = await startWorker("starts-after-the-crash");
    expect(await workDirs(scanId)).toEqual([]);
    expect(next.logLines().find((line) => line.msg === "removed the work directories of runners that no longer run")).toMatchObject({
      workDirs: [path.join(tmpRoot, leftover)],
    });
    expect(await findingCount(scanId)).toBe(1);
  });
});
