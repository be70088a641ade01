/**
 * Workers learn of a queued scan when it is queued (subscription { scanQueued },
 * worker/queue-signal.ts), and poll as the fallback: a real `vega worker` with a
 * ten-minute poll interval still takes a scan submitted after its first poll,
 * and one whose subscription cannot connect still takes scans at its polls.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stopProcess } from "../support/cli.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { startWorkerProcess, waitFor, waitForScanStatus, type WorkerProcess } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

let server: TestServer;
let alice: string;
let fleetToken: string;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "10" });
  alice = await server.token("alice");
  fleetToken = await server.token("worker-fleet", { scope: "worker" });
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => stopProcess(worker.child, "SIGTERM")));
});
afterAll(() => server?.close());

const workerEnv = (pollSeconds: number) => ({
  VEGA_API_URL: server.graphqlUrl,
  VEGA_WORKER_TOKEN: fleetToken,
  VEGA_LAUNCHER: "local",
  VEGA_WORKER_CAPACITY: "2",
  VEGA_WORKER_POLL_INTERVAL_SECONDS: String(pollSeconds),
});

async function submit(label: string) {
  const submitted = await submitScan(server, alice, await buildZip([{ name: "README.md", data: `# ${label}\n` }]), { label });
  expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
  return submitted.body.data.submitScan.scan.id as string;
}

describe("a worker learns of queued scans over its subscription", () => {
  it("claims a scan submitted after its first poll, long before its next one (a 600 s interval)", async () => {
    const groups = server.app.deps.subscriptionGroups;
    const before = groups.stats().members;
    const worker = await startWorkerProcess("signalled", workerEnv(600));
    workers.push(worker);
    // Its scanQueued subscription has joined a group: from here on it hears of every queued scan.
    await waitFor("the worker's scanQueued subscription", async () => (groups.stats().members > before ? true : undefined), { intervalMs: 50 });
    const scanId = await submit("signalled");
    const scan = await waitForScanStatus(server.app.deps.prisma, scanId, ["SUCCEEDED", "FAILED"], { timeoutMs: 120_000 });
    expect({ status: scan.status, claimedBy: scan.workerId }).toEqual({ status: "SUCCEEDED", claimedBy: worker.workerId });
  });

  it("falls back to polling while the subscription cannot connect", async () => {
    // Every WebSocket upgrade is refused from here on: the subscription stays down.
    const httpServer = server.app.httpServer;
    const upgrades = httpServer.listeners("upgrade");
    httpServer.removeAllListeners("upgrade");
    httpServer.on("upgrade", (_req, socket) => socket.destroy());
    try {
      const worker = await startWorkerProcess("polling", workerEnv(1));
      workers.push(worker);
      await worker.waitForLog((line) => /queue signal subscription down/.test(String(line.msg)));
      const scanId = await submit("polling");
      const scan = await waitForScanStatus(server.app.deps.prisma, scanId, ["SUCCEEDED", "FAILED"], { timeoutMs: 120_000 });
      expect({ status: scan.status, claimedBy: scan.workerId }).toEqual({ status: "SUCCEEDED", claimedBy: worker.workerId });
    } finally {
      httpServer.removeAllListeners("upgrade");
      for (const listener of upgrades) httpServer.on("upgrade", listener as (...args: unknown[]) => void);
    }
  });
});
