/**
 * Cancelling a scan at each state, with a real `vega worker` (local launcher)
 * and real runner processes. The worker reaches the API through a gate
 * (test/support/api-gate.ts) that can hold one of its calls, or one of its
 * runner's, so that the cancellation lands at a known point of a real run.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startApiGate, type ApiGate, type Hold } from "../support/api-gate.ts";
import { stopProcess } from "../support/cli.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import {
  awsKeysFile,
  pidOfLocalTask,
  processExists,
  runnerWorkDirs,
  scanEvents,
  startWorkerProcess,
  waitFor,
  waitForScanStatus,
  within,
  type WorkerProcess,
} from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

const CANCEL = "mutation ($id: ID!) { cancelScan(id: $id) { id status } }";
const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];

let server: TestServer;
let gate: ApiGate;
let worker: WorkerProcess;
let alice: string;
const holds: Hold[] = [];

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "20" });
  gate = await startApiGate(server.url);
  alice = await server.token("alice");
  worker = await startWorkerProcess("cancelling-worker", {
    VEGA_API_URL: gate.graphqlUrl,
    VEGA_WORKER_TOKEN: await server.token("local-fleet", { scope: "worker" }),
    VEGA_LAUNCHER: "local",
    VEGA_WORKER_CAPACITY: "2",
    VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
    // Passed on to the runners: one addFindings call per finding keeps a runner busy reporting.
    VEGA_RUNNER_FINDINGS_BATCH: "1",
  });
});
afterEach(() => {
  for (const hold of holds.splice(0)) hold.drop();
});
afterAll(async () => {
  if (worker) expect(await stopProcess(worker.child, "SIGTERM")).toBe(0);
  await gate?.close();
  await server?.close();
});

function hold(...args: Parameters<ApiGate["hold"]>): Hold {
  const held = gate.hold(...args);
  holds.push(held);
  return held;
}

async function submit(files: { name: string; data: string }[]) {
  const submitted = await submitScan(server, alice, await buildZip(files));
  expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
  return submitted.body.data.submitScan.scan.id as string;
}

async function cancel(scanId: string) {
  const response = await server.gql(CANCEL, { id: scanId }, alice);
  expect(response.body).toEqual({ data: { cancelScan: { id: scanId, status: "CANCELLED" } } });
}

const scanRow = (scanId: string) => server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
const stateCodes = async (scanId: string) =>
  (await scanEvents(server.app.deps.prisma, scanId)).filter((event) => event.kind === "STATE").map((event) => event.code);
const findingCount = (scanId: string) => server.app.deps.prisma.finding.count({ where: { scanId } });
const workerLogTail = () => JSON.stringify(worker.logLines().slice(-30), null, 1);
/** The worker's log lines about one scan, and its warnings, for failure messages. */
const scanLog = (scanId: string) => JSON.stringify(worker.logLines().filter((line) => line.scanId === scanId || line.level >= 40), null, 1);
const runnerExited = (scanId: string) => (line: Record<string, any>) => line.msg === "runner process exited" && line.scanId === scanId;

/** A scan that completed: its runner exits 0 by itself and leaves no work directory (awaited, so no test ends with a runner still exiting). */
async function expectRunnerExitedCleanly(scanId: string) {
  const exited = await worker.waitForLog(runnerExited(scanId));
  expect(exited, scanLog(scanId)).toMatchObject({ exitCode: 0, signal: null });
  expect(runnerWorkDirs(scanId)).toEqual([]);
}

describe("cancelling a queued scan", () => {
  it("is never claimed: the worker runs the next scan and leaves the cancelled one alone", async () => {
    // The worker's claim waits at the gate while the scan is queued and cancelled.
    const claim = hold((call) => call.operationName === "ClaimScans");
    await claim.first;
    const cancelledId = await submit([{ name: "src/a.ts", data: "export {};\n" }]);
    await cancel(cancelledId);
    claim.release();

    const nextId = await submit([{ name: "src/b.ts", data: "export {};\n" }]);
    expect((await waitForScanStatus(server.app.deps.prisma, nextId, FINISHED, { timeoutMs: 120_000 })).status).toBe("SUCCEEDED");
    await expectRunnerExitedCleanly(nextId);

    expect(await scanRow(cancelledId)).toMatchObject({ status: "CANCELLED", attempts: 0, workerId: null, taskId: null });
    expect(await stateCodes(cancelledId)).toEqual(["QUEUED", "CANCELLED"]);
    expect(worker.logLines().filter((line) => line.scanId === cancelledId)).toEqual([]);
  }, 180_000);
});

describe("cancelling a starting scan", () => {
  it("makes the worker stop the runner it just launched, and no work directory is left", async () => {
    // The worker's launch report waits at the gate: the runner process exists, the scan is still STARTING. So does
    // the runner's first progress report, which would otherwise move the scan to RUNNING itself.
    const started = hold((call) => call.operationName === "ReportScanStarted");
    hold((call) => call.operationName === "ReportScanProgress");
    const scanId = await submit([awsKeysFile(3)]);
    const report = await within(started.first, "the worker's launch report", { timeoutMs: 120_000, details: workerLogTail });
    expect(report.variables.scanId).toBe(scanId);
    const pid = pidOfLocalTask(report.variables.taskId);
    expect((await scanRow(scanId)).status).toBe("STARTING");

    await cancel(scanId);
    // Released at once, well within the worker's request timeout: the API answers CONFLICT and the worker stops the runner.
    started.release();
    const exited = await worker.waitForLog(runnerExited(scanId));

    // Stopped by the worker's SIGTERM (a runner that saw the cancellation itself would exit 0): through the
    // runner's handler (143), or by the signal itself when it came before the handler was set.
    expect(exited.exitCode === 143 || exited.signal === "SIGTERM", scanLog(scanId)).toBe(true);
    await waitFor(`runner ${pid} to be reaped`, () => !processExists(pid));
    expect(runnerWorkDirs(scanId)).toEqual([]);
    expect(await scanRow(scanId)).toMatchObject({ status: "CANCELLED", taskId: null, attempts: 1 });
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING", "CANCELLED"]);
    expect(await findingCount(scanId)).toBe(0);
  }, 180_000);
});

describe("cancelling a running scan", () => {
  it("makes the worker stop a runner that is waiting on the API (SIGTERM), and removes its work directory", async () => {
    let scanId: string | undefined;
    // The runner's second addFindings waits at the gate: the runner is busy, and says nothing the API could refuse.
    const secondReport = hold((call) => call.operationName === "AddFindings" && call.variables.scanId === scanId, { skip: 1 });
    scanId = await submit([awsKeysFile(5)]);
    await within(secondReport.first, "the runner's second addFindings", { timeoutMs: 120_000, details: workerLogTail });
    const running = await scanRow(scanId);
    expect(running.status).toBe("RUNNING");
    const pid = pidOfLocalTask(running.taskId);
    expect(processExists(pid)).toBe(true);
    expect(runnerWorkDirs(scanId)).toHaveLength(1);
    expect(await findingCount(scanId)).toBe(1);

    await cancel(scanId);
    const exited = await worker.waitForLog(runnerExited(scanId));

    // 143: the worker's SIGTERM, through the runner's handler (which removes the work directory first).
    expect(exited, scanLog(scanId)).toMatchObject({ exitCode: 143, signal: null });
    await waitFor(`runner ${pid} to be reaped`, () => !processExists(pid));
    expect(runnerWorkDirs(scanId)).toEqual([]);
    expect(await scanRow(scanId)).toMatchObject({ status: "CANCELLED", taskId: running.taskId, errorCode: null });
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING", "RUNNING", "CANCELLED"]);
    expect(await findingCount(scanId)).toBe(1);
  }, 180_000);

  it("stops a runner reporting thousands of findings one by one; the scan stays CANCELLED with the findings it had", async () => {
    const keys = 3000;
    const scanId = await submit([awsKeysFile(keys)]);
    // Reporting has begun: the runner is inside its findings loop.
    const running = await waitFor(
      "the runner to report its first finding",
      async () => {
        const scan = await scanRow(scanId);
        if (FINISHED.includes(scan.status)) throw new Error(`scan ${scanId} finished (${scan.status}) before it could be cancelled`);
        return scan.status === "RUNNING" && (await findingCount(scanId)) > 0 ? scan : undefined;
      },
      { timeoutMs: 120_000 },
    );
    const pid = pidOfLocalTask(running.taskId);
    expect(processExists(pid)).toBe(true);
    expect(runnerWorkDirs(scanId)).toHaveLength(1);

    await cancel(scanId);
    const exited = await worker.waitForLog(runnerExited(scanId));

    // Whichever comes first ends it: its next report refused (it gives up, exit 0) or the worker's SIGTERM
    // (143 from its handler; the signal itself when it lands as the runner is already on its way out).
    expect(exited.exitCode === 0 || exited.exitCode === 143 || exited.signal === "SIGTERM", scanLog(scanId)).toBe(true);
    await waitFor(`runner ${pid} to be reaped`, () => !processExists(pid));
    expect(runnerWorkDirs(scanId)).toEqual([]);
    const findings = await findingCount(scanId);
    expect(findings).toBeGreaterThan(0);
    expect(findings).toBeLessThan(keys);

    // A later scan runs to completion: the worker went on polling, and nothing moved the cancelled scan meanwhile.
    const laterId = await submit([{ name: "src/later.ts", data: "export {};\n" }]);
    expect((await waitForScanStatus(server.app.deps.prisma, laterId, FINISHED, { timeoutMs: 120_000 })).status).toBe("SUCCEEDED");
    await expectRunnerExitedCleanly(laterId);
    expect(await scanRow(scanId)).toMatchObject({ status: "CANCELLED", errorCode: null });
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING", "RUNNING", "CANCELLED"]);
    expect((await scanEvents(server.app.deps.prisma, scanId)).at(-1)!.code).toBe("CANCELLED");
    expect(await findingCount(scanId)).toBe(findings);
  }, 240_000);
});
