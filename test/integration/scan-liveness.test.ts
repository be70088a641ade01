/**
 * A running scan can neither hang nor vanish, with real processes: a real
 * server, a real `vega worker` (local launcher) reaching it through the API
 * gate (test/support/api-gate.ts), and its real `vega runner` children, which
 * the tests SIGSTOP or SIGKILL by pid. A held call keeps a runner at a known
 * point of its scan for as long as a test needs, so nothing here depends on
 * how fast the machine is.
 */
import { rm } from "node:fs/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startApiGate, type ApiGate, type Hold } from "../support/api-gate.ts";
import { stopProcess } from "../support/cli.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import {
  awsKeysFile,
  fakeAwsAccessKeyIds,
  pidOfLocalTask,
  processExists,
  runnerWorkDirs,
  startWorkerProcess,
  waitFor,
  waitForScanStatus,
  within,
  type WorkerProcess,
} from "../support/worker-process.ts";
import { connectWs, watchSubscriptions, type WsConnection } from "../support/ws.ts";
import { buildZip } from "../support/zips.ts";

const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];

interface Setup {
  server: TestServer;
  gate: ApiGate;
  worker: WorkerProcess;
  alice: string;
  holds: Hold[];
}

/** A server with `serverEnv`, and a worker (polling every second) that reaches it through a gate. */
function useSetup(name: string, serverEnv: Record<string, string>, workerEnv: Record<string, string>): Setup {
  const setup = { holds: [] as Hold[] } as Setup;
  beforeAll(async () => {
    setup.server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "20", ...serverEnv });
    setup.gate = await startApiGate(setup.server.url);
    setup.alice = await setup.server.token("alice");
    setup.worker = await startWorkerProcess(name, {
      VEGA_API_URL: setup.gate.graphqlUrl,
      VEGA_WORKER_TOKEN: await setup.server.token(`${name}-fleet`, { scope: "worker" }),
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_CAPACITY: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      ...workerEnv,
    });
  }, 120_000);
  afterEach(() => {
    for (const hold of setup.holds.splice(0)) hold.drop();
  });
  afterAll(async () => {
    if (setup.worker) expect(await stopProcess(setup.worker.child, "SIGTERM")).toBe(0);
    await setup.gate?.close();
    await setup.server?.close();
  });
  return setup;
}

function hold(setup: Setup, ...args: Parameters<ApiGate["hold"]>): Hold {
  const held = setup.gate.hold(...args);
  setup.holds.push(held);
  return held;
}

async function submit(setup: Setup, files: { name: string; data: string }[]) {
  const submitted = await submitScan(setup.server, setup.alice, await buildZip(files));
  expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
  return submitted.body.data.submitScan.scan.id as string;
}

const scanRow = (setup: Setup, scanId: string) => setup.server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
const findingCount = (setup: Setup, scanId: string) => setup.server.app.deps.prisma.finding.count({ where: { scanId } });
const eventsWithCode = (setup: Setup, scanId: string, code: string) =>
  setup.server.app.deps.prisma.scanEvent.findMany({ where: { scanId, code }, orderBy: { seq: "asc" } });
const workerLog = (setup: Setup, scanId: string) =>
  JSON.stringify(setup.worker.logLines().filter((line) => line.scanId === scanId || line.level >= 40).slice(-40), null, 1);
const runnerExited = (scanId: string) => (line: Record<string, any>) => line.msg === "runner process exited" && line.scanId === scanId;

/** The scan once RUNNING with its runner's task recorded (the runner may report before its worker does). */
function runningWithTask(setup: Setup, scanId: string) {
  return waitFor(
    `scan ${scanId} to run with a task`,
    async () => {
      const scan = await scanRow(setup, scanId);
      if (FINISHED.includes(scan.status)) throw new Error(`scan ${scanId} finished (${scan.status}) too early:\n${workerLog(setup, scanId)}`);
      return scan.status === "RUNNING" && scan.taskId ? scan : undefined;
    },
    { timeoutMs: 120_000 },
  );
}

/**
 * Submits a scan of `files` (findings sent one a call) and resolves once its runner's second addFindings
 * waits at the gate: the runner is then busy with its scan, RUNNING, for as long as the hold lasts.
 */
async function heldAtSecondFinding(setup: Setup, files: { name: string; data: string }[], options: { onClaimed?: () => void } = {}) {
  let scanId: string | undefined;
  const second = hold(setup, (call) => call.operationName === "AddFindings" && call.variables.scanId === scanId, { skip: 1 });
  scanId = await submit(setup, files);
  if (options.onClaimed) {
    await waitForScanStatus(setup.server.app.deps.prisma, scanId, ["STARTING", "RUNNING", ...FINISHED], { timeoutMs: 120_000 });
    options.onClaimed();
  }
  await within(second.first, "the runner's second addFindings", { timeoutMs: 120_000, details: () => workerLog(setup, scanId!) });
  const running = await runningWithTask(setup, scanId);
  return { scanId, running, pid: pidOfLocalTask(running.taskId), second };
}

/** Source files with no secret: bulk for the analyzer to go through. */
const fillerFiles = (count: number, bytesEach: number) =>
  Array.from({ length: count }, (_, index) => ({
    name: `src/module-${String(index).padStart(5, "0")}.ts`,
    data: `// module ${index}\n${"export const value = 42; // nothing to see here\n".repeat(Math.ceil(bytesEach / 49))}`,
  }));

describe("a runner that stops reporting while its process lives", () => {
  const setup = useSetup(
    "hung-runner-host",
    // Eight beats may be missed before a runner counts as hung: a busy machine delays some, not eight in a row.
    { VEGA_SCAN_HEARTBEAT_TTL_SECONDS: "8", VEGA_RUNNER_HEARTBEAT_SECONDS: "1" },
    // Passed on to the runners: a progress report every second, one addFindings call per finding.
    { VEGA_RUNNER_HEARTBEAT_SECONDS: "1", VEGA_RUNNER_FINDINGS_BATCH: "1" },
  );

  it("is killed once SIGSTOPped mid-analysis (alive, silent past the TTL), and the scan FAILED RUNNER_HUNG keeps the findings it had sent", async () => {
    // The runner is in the middle of its analysis.
    const { scanId, running, pid, second } = await heldAtSecondFinding(setup, [awsKeysFile(20)]);
    expect(running.progress).toMatchObject({ phase: "ANALYZING" });
    expect(running.lastHeartbeatAt).not.toBeNull();

    process.kill(pid, "SIGSTOP");
    second.drop();

    const failed = await waitForScanStatus(setup.server.app.deps.prisma, scanId, FINISHED, { timeoutMs: 120_000 });
    expect(failed, workerLog(setup, scanId)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_HUNG" });
    expect(failed.errorMessage).toMatch(/no progress report for \d+ s \(TTL 8 s\)/);
    const [hung] = await eventsWithCode(setup, scanId, "RUNNER_HUNG");
    expect(hung).toMatchObject({
      kind: "ERROR",
      data: { from: "RUNNING", to: "FAILED", taskStopped: true, task: { taskId: running.taskId, state: "RUNNING" } },
    });
    // SIGKILL: SIGTERM would have waited for a SIGCONT that never comes.
    const exited = await setup.worker.waitForLog(runnerExited(scanId));
    expect(exited).toMatchObject({ signal: "SIGKILL", exitCode: null });
    await waitFor(`runner ${pid} to be reaped`, () => !processExists(pid));
    expect(await findingCount(setup, scanId)).toBe(1);
    // SIGKILL gave the runner no chance to remove its work directory: this test's own.
    for (const dir of runnerWorkDirs(scanId)) await rm(dir, { recursive: true, force: true });
  }, 240_000);

  describe("scanProgress over graphql-ws", () => {
    let connection: WsConnection | undefined;
    afterEach(async () => {
      await connection?.dispose();
    });

    it("delivers several reports during one long scan, with files and bytes growing", async () => {
      // 128 files of 64 KB (8 MB), each with one secret: every batch of 32 files the analyzer hands over brings
      // 32 findings, sent one call each, and each call waits at the gate until the test lets it through.
      const BATCH = 32;
      const keys = fakeAwsAccessKeyIds(4 * BATCH, 7);
      const filler = "export const value = 42; // nothing to see here\n".repeat(1337);
      const files = keys.map((key, index) => ({ name: `src/module-${index}.ts`, data: `const key = "${key}";\n${filler}` }));
      // The worker does not claim before the subscription listens.
      const claim = hold(setup, (call) => call.operationName === "ClaimScans");
      await claim.first;
      const scanId = await submit(setup, files);
      connection = connectWs(setup.server.wsUrl, setup.alice);
      const watch = watchSubscriptions(setup.server.app.deps.pubsub);
      const reports = connection.subscribe<{ scanProgress: { scanId: string; progress: Record<string, any>; scan: { status: string } } }>(
        `subscription ($id: ID!) { scanProgress(scanId: $id) {
           scanId progress { phase filesDone filesTotal bytesDone bytesTotal findings updatedAt } scan { status } } }`,
        { id: scanId },
      );
      await watch.until("scanProgress");
      watch.restore();
      // A stranger may not watch it.
      const stranger = connectWs(setup.server.wsUrl, await setup.server.token("mallory"));
      const refused = stranger.subscribe(`subscription ($id: ID!) { scanProgress(scanId: $id) { scanId } }`, { id: scanId });
      await expect(refused.next()).rejects.toMatchObject({ codes: ["NOT_FOUND"] });
      await stranger.dispose();

      let findingsHold = hold(setup, (call) => call.operationName === "AddFindings" && call.variables.scanId === scanId);
      claim.release();
      const analyzing: Record<string, any>[] = [];
      for (let batch = 1; batch <= 4; batch++) {
        // Held at the first finding of the batch: the runner reports it has gone through `batch` batches of files.
        const report = await reports.nextMatching(
          (event) => event.scanProgress.progress.phase === "ANALYZING" && event.scanProgress.progress.findings === batch * BATCH,
          { timeoutMs: 120_000 },
        );
        analyzing.push(report.scanProgress.progress);
        if (batch === 4) break;
        for (let finding = 0; finding < BATCH; finding++) {
          await within(findingsHold.first, `addFindings of batch ${batch}`, { timeoutMs: 120_000, details: () => workerLog(setup, scanId) });
          const previous = findingsHold;
          findingsHold = hold(setup, (call) => call.operationName === "AddFindings" && call.variables.scanId === scanId);
          previous.release();
        }
      }
      findingsHold.release();
      expect((await waitForScanStatus(setup.server.app.deps.prisma, scanId, FINISHED, { timeoutMs: 120_000 })).status).toBe("SUCCEEDED");

      // Read when delivered: RUNNING while the runner is held (the last report may be read after completion).
      for (const event of reports.received.filter((received) => received.scanProgress.progress.phase !== "REPORTING")) {
        expect(event.scanProgress).toMatchObject({ scanId, scan: { status: "RUNNING" } });
      }
      // Every phase is reported as it begins, in order.
      expect([...new Set(reports.received.map((event) => event.scanProgress.progress.phase))]).toEqual(["DOWNLOADING", "EXTRACTING", "ANALYZING", "REPORTING"]);
      expect(analyzing.map((progress) => [progress.filesDone, progress.filesTotal])).toEqual([
        [32, 128],
        [64, 128],
        [96, 128],
        [128, 128],
      ]);
      const bytes = analyzing.map((progress) => BigInt(progress.bytesDone));
      for (let index = 1; index < bytes.length; index++) expect(bytes[index]).toBeGreaterThan(bytes[index - 1]);
      expect(bytes[0]).toBeGreaterThan(32n * 64_000n);

      // The last report stays on the scan.
      const read = await setup.server.gql(
        `query ($id: ID!) { scan(id: $id) { status lastHeartbeatAt progress { phase filesDone filesTotal findings } findingCounts { critical high } } }`,
        { id: scanId },
        setup.alice,
      );
      expect(read.body.data.scan).toMatchObject({ status: "SUCCEEDED", progress: { phase: "REPORTING", findings: 128 } });
      expect(read.body.data.scan.lastHeartbeatAt).not.toBeNull();
    }, 300_000);
  });
});

describe("a scan running past VEGA_SCAN_TIMEOUT_SECONDS", () => {
  const setup = useSetup("timeout-host", { VEGA_SCAN_TIMEOUT_SECONDS: "4" }, { VEGA_RUNNER_FINDINGS_BATCH: "1" });

  it("has its runner stopped (SIGTERM: it removes its work directory) and is FAILED SCAN_TIMEOUT, keeping its findings", async () => {
    // From the claim on, the worker's recovery waits at the gate, so that the timeout (counted from the scan's
    // start, seconds later) cannot end the scan before its runner is where the test wants it: waiting on its
    // second addFindings for as long as it lives, healthy and reporting, but not done.
    let recovery: Hold | undefined;
    const { scanId, pid } = await heldAtSecondFinding(setup, [awsKeysFile(5)], {
      onClaimed: () => (recovery = hold(setup, (call) => call.operationName === "RecoveryCandidates")),
    });
    recovery!.release();

    const failed = await waitForScanStatus(setup.server.app.deps.prisma, scanId, FINISHED, { timeoutMs: 120_000 });
    expect(failed, workerLog(setup, scanId)).toMatchObject({ status: "FAILED", errorCode: "SCAN_TIMEOUT" });
    expect(failed.errorMessage).toMatch(/past the timeout of 4 s/);
    const [timedOut] = await eventsWithCode(setup, scanId, "SCAN_TIMEOUT");
    expect(timedOut).toMatchObject({ kind: "ERROR", data: { from: "RUNNING", to: "FAILED", taskStopped: true, task: { state: "RUNNING" } } });
    const exited = await setup.worker.waitForLog(runnerExited(scanId));
    expect(exited).toMatchObject({ exitCode: 143, signal: null });
    await waitFor(`runner ${pid} to be reaped`, () => !processExists(pid));
    expect(runnerWorkDirs(scanId)).toEqual([]);
    expect(await findingCount(setup, scanId)).toBe(1);
  }, 240_000);
});

describe("findings sent as they are found", () => {
  // Default settings: findings in batches of 500, or whatever is waiting after 2 s.
  const setup = useSetup("streaming-host", {}, {});

  it("a secret in the first file is readable while the scan runs, and stays on the scan once its runner is SIGKILLed", async () => {
    const [key] = fakeAwsAccessKeyIds(1, 3);
    const files = [{ name: "a/first.env", data: `AWS_ACCESS_KEY_ID=${key}\n` }, ...fillerFiles(400, 2048)];
    // The runner is held where its analysis is over and its final flush has not begun: only the 2 s flush
    // can have sent the finding by then.
    const reporting = hold(setup, (call) => call.operationName === "ReportScanProgress" && call.variables.input.phase === "REPORTING");
    const scanId = await submit(setup, files);

    await waitFor("the first finding to be stored", async () => (await findingCount(setup, scanId)) > 0, { timeoutMs: 120_000 });
    const running = await scanRow(setup, scanId);
    expect(running.status).toBe("RUNNING");
    expect(running.progress).toMatchObject({ phase: "ANALYZING" });
    const read = await setup.server.gql(
      `query ($id: ID!) { scan(id: $id) { status findings(first: 10) { edges { node { ruleId path line } } } } }`,
      { id: scanId },
      setup.alice,
    );
    expect(read.body.data.scan).toEqual({
      status: "RUNNING",
      findings: { edges: [{ node: { ruleId: "aws-access-key-id", path: "a/first.env", line: 1 } }] },
    });

    await within(reporting.first, "the runner to reach its last phase", { timeoutMs: 120_000 });
    const pid = pidOfLocalTask(running.taskId ?? (await runningWithTask(setup, scanId)).taskId);
    process.kill(pid, "SIGKILL");
    reporting.drop();

    const failed = await waitForScanStatus(setup.server.app.deps.prisma, scanId, FINISHED, { timeoutMs: 120_000 });
    expect(failed, workerLog(setup, scanId)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_EXITED" });
    const [exited] = await eventsWithCode(setup, scanId, "RUNNER_EXITED");
    expect(exited.data).toMatchObject({ task: { state: "STOPPED", signal: "SIGKILL" } });
    expect(await findingCount(setup, scanId)).toBe(1);
    // SIGKILL gave the runner no chance to remove its work directory: this test's own.
    for (const dir of runnerWorkDirs(scanId)) await rm(dir, { recursive: true, force: true });
  }, 240_000);
});
