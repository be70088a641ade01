/**
 * Recovery when only the `vega worker` that launched two local runners is
 * killed, against a server in this process, while another worker lives: the
 * survivor fails both scans once their runners have been silent for
 * VEGA_SCAN_HEARTBEAT_TTL_SECONDS (short here), the hung one RUNNER_HUNG (and
 * kills it), the dead one RUNNER_EXITED, with the findings they had sent, and
 * their owner's quota is free again. (The whole `vega start` killed and
 * restarted: recovery-restart.test.ts.)
 *
 * The runners are SIGSTOPped before the kill, so that none can finish first
 * however fast the machine is.
 */
import { rm } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { stopProcess } from "../support/cli.ts";
import { FINISHED, runningWithFindings, SCAN_FIELDS, SHORT_TTL, totalFindings, trackRecoveryProcesses } from "../support/recovery-processes.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, processEnded, runnerWorkDirs, startWorkerProcess, waitFor, type WorkerProcess } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

const { children, stopRunner } = trackRecoveryProcesses();

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
