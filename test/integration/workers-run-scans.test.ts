/**
 * Several real `vega worker` processes against one API share the queue: every
 * scan runs once, on one worker, to completion (claims use FOR UPDATE SKIP
 * LOCKED), and the work spreads over the workers.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stopProcess } from "../support/cli.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, runnerWorkDirs, scanEvents, startWorkerProcess, waitFor, type WorkerProcess } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

const SCANS = 30;
const WORKERS = 3;
const CAPACITY = 3;

let server: TestServer;
let alice: string;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: String(SCANS + 10) });
  alice = await server.token("alice");
});
afterAll(async () => {
  await Promise.all(workers.splice(0).map((worker) => stopProcess(worker.child, "SIGKILL")));
  await server?.close();
});

describe("three workers run thirty queued scans", () => {
  it("runs every scan once to SUCCEEDED, spread over more than one worker, and the workers stop cleanly", async () => {
    const fleetToken = await server.token("worker-fleet", { scope: "worker" });
    const env = {
      VEGA_API_URL: server.graphqlUrl,
      VEGA_WORKER_TOKEN: fleetToken,
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_CAPACITY: String(CAPACITY),
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
    };
    workers.push(...(await Promise.all(Array.from({ length: WORKERS }, (_, index) => startWorkerProcess(`fleet-${index + 1}`, env)))));
    const workerIds = workers.map((worker) => worker.workerId);
    expect(new Set(workerIds).size).toBe(WORKERS);

    // Each archive holds one fake key of its own: the scan's one finding shows its runner scanned its archive.
    const scanIds: string[] = [];
    for (let index = 0; index < SCANS; index++) {
      const archive = await buildZip([
        { name: "README.md", data: `# project ${index}\n` },
        awsKeysFile(1, "config/deploy.env", index + 1),
      ]);
      const submitted = await submitScan(server, alice, archive, { label: `fleet-${index}` });
      expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
      scanIds.push(submitted.body.data.submitScan.scan.id);
    }

    const prisma = server.app.deps.prisma;
    const scans = await waitFor(
      "every scan to finish",
      async () => {
        const rows = await prisma.scan.findMany({ where: { id: { in: scanIds } } });
        return rows.every((scan) => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(scan.status)) ? rows : undefined;
      },
      { timeoutMs: 400_000, intervalMs: 250 },
    );

    const claimedBy = new Map<string, string>();
    for (const scan of scans) {
      expect({ id: scan.id, status: scan.status, errorCode: scan.errorCode, attempts: scan.attempts }).toEqual({
        id: scan.id,
        status: "SUCCEEDED",
        errorCode: null,
        attempts: 1,
      });
      const events = await scanEvents(prisma, scan.id);
      const states = events.filter((event) => event.kind === "STATE").map((event) => event.code);
      expect(states).toEqual(["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]);
      const starting = events.find((event) => event.code === "STARTING")!;
      const workerId = (starting.data as { workerId: string }).workerId;
      expect(workerIds).toContain(workerId);
      // Where the column is kept after completion, it names the same worker.
      if (scan.workerId !== null) expect(scan.workerId).toBe(workerId);
      claimedBy.set(scan.id, workerId);
      expect(scan.taskId).toMatch(/^local:\d+$/);
      expect(await prisma.finding.count({ where: { scanId: scan.id, ruleId: "aws-access-key-id" } })).toBe(1);
    }
    expect(claimedBy.size).toBe(SCANS);
    const scansPerWorker = new Map<string, number>();
    for (const workerId of claimedBy.values()) scansPerWorker.set(workerId, (scansPerWorker.get(workerId) ?? 0) + 1);
    expect(scansPerWorker.size).toBeGreaterThan(1);

    // Every runner exits 0 once its scan is complete and leaves no work directory behind.
    const byId = new Map(workers.map((worker) => [worker.workerId, worker]));
    for (const [scanId, workerId] of claimedBy) {
      const exited = await byId.get(workerId)!.waitForLog((line) => line.msg === "runner process exited" && line.scanId === scanId);
      expect(exited).toMatchObject({ exitCode: 0, signal: null });
      expect(runnerWorkDirs(scanId)).toEqual([]);
    }

    const exits = await Promise.all(workers.splice(0).map((worker) => stopProcess(worker.child, "SIGTERM")));
    expect(exits).toEqual(Array(WORKERS).fill(0));
    const registry = await prisma.worker.findMany({ where: { id: { in: workerIds } } });
    expect(registry.every((row) => row.deregisteredAt !== null)).toBe(true);
  }, 480_000);
});
