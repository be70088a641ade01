/**
 * Recovery after the whole `vega start` process group is killed with SIGKILL
 * while two scans run, then started again on the same data directory: the
 * running scans are FAILED once their runners have been silent for
 * VEGA_SCAN_HEARTBEAT_TTL_SECONDS (short here), with the findings they had
 * sent, and their owner's quota is free again. (When only a worker dies, with
 * the API alive: recovery-worker-death.test.ts.)
 *
 * The runners are SIGSTOPped before the kill, so that none can finish first
 * however fast the machine is. The embedded database only: it runs the same on
 * either of CI's passes, so it runs once.
 */
import { rm } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { vegaServerOf } from "../support/processes.ts";
import { TEST_JWT_SECRET } from "../support/jwt-secret.ts";
import { FINISHED, runningWithFindings, SCAN_FIELDS, SHORT_TTL, totalFindings, trackRecoveryProcesses } from "../support/recovery-processes.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, runnerWorkDirs, waitFor } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

const { groups, children, stopRunner } = trackRecoveryProcesses();

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
      return vegaServerOf(started);
    };
    const token = await signToken(new TextEncoder().encode(TEST_JWT_SECRET), { sub: "alice", ttlSeconds: 3600 });

    const first = await start({
      ...SHORT_TTL,
      VEGA_MAX_ACTIVE_SCANS_PER_USER: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      // Passed on to the runners: one addFindings call per finding, so both are busy reporting when stopped.
      VEGA_RUNNER_FINDINGS_BATCH: "1",
    });
    const scanIds: string[] = [];
    for (const seed of [1, 2]) {
      const submitted = await submitScan({ graphqlUrl: first.graphqlUrl }, token, await buildZip([awsKeysFile(3000, "config/keys.env", seed)]));
      expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
      scanIds.push(submitted.body.data.submitScan.scan.id);
    }
    const read = async (scanId: string) => (await first.gql(`query ($id: ID!) { scan(id: $id) { ${SCAN_FIELDS} } }`, { id: scanId }, token)).data!.scan;
    const running = await runningWithFindings(read, scanIds, () => first.output().slice(-3000));
    for (const scan of running) stopRunner(scan.taskId);
    process.kill(-first.child.pid!, "SIGKILL");
    await waitFor("the first vega start to be gone", () => first.child.exitCode !== null || first.child.signalCode !== null);

    // Default settings but for the short heartbeat TTL (and the runner interval it must exceed).
    const second = await start(SHORT_TTL);
    const readAgain = async (scanId: string) => (await second.gql(`query ($id: ID!) { scan(id: $id) { ${SCAN_FIELDS} } }`, { id: scanId }, token)).data!.scan;
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
