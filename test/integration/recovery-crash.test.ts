/**
 * Crash safety with real processes: `vega worker` children (the CLI a
 * deployment runs) against a real server in this process, their runners
 * killed, or the worker itself killed with SIGKILL right after it claimed.
 * PGlite by default, PostgreSQL with VEGA_TEST_DATABASE_URL.
 */
import type { ChildProcess } from "node:child_process";
import { readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startVega, stopProcess } from "../support/cli.ts";
import { awsKeysArchive, ecsClientEnv, eventCountsByCode, queueScan, startSilentEndpoint, waitFor } from "../support/recovery.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";

const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];
const children: ChildProcess[] = [];

/** A `vega worker` child against `server`, resolved once it has registered. */
async function startWorker(server: TestServer, name: string, env: Record<string, string>) {
  const token = await server.token(`deploy-${name}`, { scope: "worker" });
  const { child, output } = await startVega(
    ["worker"],
    { VEGA_API_URL: server.graphqlUrl, VEGA_WORKER_TOKEN: token, VEGA_WORKER_NAME: name, ...env },
    /"msg":"worker registered"/,
    { timeoutMs: 120_000 },
  );
  children.push(child);
  return { child, output };
}

afterEach(async () => {
  for (const child of children.splice(0)) await stopProcess(child, "SIGKILL");
});

/** Every finding of a scan through Scan.findings, page by page, as its owner reads them. */
async function findingsOf(server: TestServer, token: string, scanId: string) {
  const found: { ruleId: string; path: string; line: number }[] = [];
  let after: string | null = null;
  for (;;) {
    const response: any = await server.gql(
      `query ($id: ID!, $after: String) { scan(id: $id) { status errorCode findings(first: 100, after: $after) {
         edges { node { ruleId path line } } pageInfo { hasNextPage endCursor } } } }`,
      { id: scanId, after },
      token,
    );
    expect(response.body.errors).toBeUndefined();
    const page = response.body.data.scan.findings;
    found.push(...page.edges.map((edge: any) => edge.node));
    if (!page.pageInfo.hasNextPage) return found;
    after = page.pageInfo.endCursor;
  }
}

describe("a runner killed in the middle of a scan", () => {
  let server: TestServer;
  let alice: string;

  beforeAll(async () => {
    server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "100" });
    alice = await server.token("alice");
  });
  afterAll(() => server?.close());

  it("fails the scan with RUNNER_EXITED at the worker's next poll, recording the signal, and keeps the findings sent before", async () => {
    const planted = 200;
    const submitted = await submitScan(server, alice, await awsKeysArchive(planted), { label: "many keys" });
    expect(submitted.status).toBe(200);
    const scanId: string = submitted.body.data.submitScan.scan.id;
    const prisma = server.app.deps.prisma;

    // The worker polls once an hour: after its first poll (which claims the scan), only the poll its
    // runner's exit triggers can see the crash. The runner sends its findings one per call.
    const worker = await startWorker(server, "crash-host", {
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "3600",
      VEGA_RUNNER_FINDINGS_BATCH: "1",
    });

    const running = await waitFor(
      "the scan to run and store its first findings",
      async () => {
        const scan = await prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
        if (FINISHED.includes(scan.status)) throw new Error(`the scan ended before the runner was killed: ${scan.status}`);
        if (scan.status !== "RUNNING" || !scan.taskId) return undefined;
        return (await prisma.finding.count({ where: { scanId } })) > 0 && scan;
      },
      { timeoutMs: 120_000, intervalMs: 10, describe: () => prisma.scan.findUnique({ where: { id: scanId }, select: { status: true, taskId: true } }) },
    );
    const pid = Number(/^local:(\d+)$/.exec(running.taskId!)![1]);
    process.kill(pid, "SIGKILL");
    const storedAtKill = await prisma.finding.count({ where: { scanId } });

    const failed = await waitFor(
      "the worker to fail the scan",
      async () => {
        const scan = await prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
        return FINISHED.includes(scan.status) && scan;
      },
      { timeoutMs: 60_000, describe: async () => ({ status: (await prisma.scan.findUnique({ where: { id: scanId } }))?.status, log: worker.output().slice(-2000) }) },
    );
    expect(failed).toMatchObject({ status: "FAILED", errorCode: "RUNNER_EXITED" });
    expect(failed.errorMessage).toContain(running.taskId!);
    expect(failed.errorMessage).toContain("SIGKILL");

    const exited = await prisma.scanEvent.findMany({ where: { scanId, code: "RUNNER_EXITED" } });
    expect(exited).toHaveLength(1);
    expect(exited[0]).toMatchObject({
      kind: "ERROR",
      data: { from: "RUNNING", to: "FAILED", task: { taskId: running.taskId, state: "STOPPED", signal: "SIGKILL", exitCode: null } },
    });
    const codes = await eventCountsByCode(prisma, [scanId]);
    expect(codes).toMatchObject({ QUEUED: 1, STARTING: 1, RUNNING: 1, RUNNER_EXITED: 1 });
    expect(codes.SUCCEEDED).toBeUndefined();

    // A request in flight at the kill may still have landed; none after the scan failed.
    const stored = await prisma.finding.count({ where: { scanId } });
    expect(stored).toBeGreaterThanOrEqual(storedAtKill);
    expect(stored).toBeLessThan(planted);
    const findings = await findingsOf(server, alice, scanId);
    expect(findings).toHaveLength(stored);
    expect(findings.every((finding) => finding.ruleId === "aws-access-key-id" && finding.path.startsWith("src/keys/"))).toBe(true);

    expect(await stopProcess(worker.child)).toBe(0);
    // SIGKILL gave the runner no chance to remove its work directory (the extracted archive): this test's own.
    for (const entry of await readdir(os.tmpdir())) {
      if (entry.startsWith(`vega-runner-${scanId.slice(0, 8)}-`)) await rm(path.join(os.tmpdir(), entry), { recursive: true, force: true });
    }
  });
});

describe("a worker killed right after it claimed", () => {
  let server: TestServer;
  let alice: string;
  let silentEcs: Awaited<ReturnType<typeof startSilentEndpoint>>;

  beforeAll(async () => {
    server = await startTestServer({
      VEGA_MAX_ACTIVE_SCANS_PER_USER: "100",
      // Workers heartbeat every second; one silent for five is stale (a margin for a busy machine, so that
      // the surviving worker never looks stale itself).
      VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "5",
    });
    alice = await server.token("alice");
    silentEcs = await startSilentEndpoint();
  });
  afterAll(async () => {
    await server?.close();
    await silentEcs?.close();
  });

  it("has its claims requeued by another worker once it is stale; that worker runs them to completion on their second attempt", async () => {
    const prisma = server.app.deps.prisma;
    const scanIds = [await queueScan(server, alice), await queueScan(server, alice)];

    // ECS that never answers RunTask: the claims stay STARTING for as long as this worker lives.
    const doomed = await startWorker(server, "doomed", {
      VEGA_LAUNCHER: "ecs",
      VEGA_ECS_CLUSTER: "vega",
      VEGA_WORKER_CAPACITY: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
      ...ecsClientEnv(silentEcs.url),
    });
    const claimed = await waitFor(
      "the doomed worker to claim both scans and call RunTask",
      async () => {
        const scans = await prisma.scan.findMany({ where: { id: { in: scanIds } } });
        return scans.every((scan) => scan.status === "STARTING" && scan.workerId) && silentEcs.connections() > 0 && scans;
      },
      { timeoutMs: 60_000 },
    );
    const doomedId = claimed[0].workerId!;
    expect(claimed.every((scan) => scan.workerId === doomedId && scan.attempts === 1)).toBe(true);
    await stopProcess(doomed.child, "SIGKILL");

    const survivor = await startWorker(server, "survivor", {
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_CAPACITY: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
    });
    const finished = await waitFor(
      "the survivor to run both scans to the end",
      async () => {
        const scans = await prisma.scan.findMany({ where: { id: { in: scanIds } } });
        return scans.every((scan) => FINISHED.includes(scan.status)) && scans;
      },
      {
        timeoutMs: 180_000,
        describe: async () => ({
          scans: await prisma.scan.findMany({ where: { id: { in: scanIds } }, select: { status: true, attempts: true, workerId: true } }),
          log: survivor.output().slice(-2000),
        }),
      },
    );
    const survivorRow = await prisma.worker.findFirstOrThrow({ where: { name: "survivor" } });
    for (const scan of finished) {
      expect(scan).toMatchObject({ status: "SUCCEEDED", attempts: 2, workerId: survivorRow.id, errorCode: null });
      const events = await prisma.scanEvent.findMany({ where: { scanId: scan.id }, orderBy: { seq: "asc" } });
      const states = events.filter((event) => event.kind === "STATE").map((event) => event.code);
      expect(states).toEqual(["QUEUED", "STARTING", "ORPHANED_CLAIM", "STARTING", "RUNNING", "SUCCEEDED"]);
      const orphaned = events.find((event) => event.code === "ORPHANED_CLAIM")!;
      expect(orphaned.message).toContain(doomedId);
      expect(orphaned.data).toMatchObject({ from: "STARTING", to: "QUEUED" });
    }
    // The dead worker was never deregistered: it is simply stale.
    expect(await prisma.worker.findUniqueOrThrow({ where: { id: doomedId } })).toMatchObject({ deregisteredAt: null });

    expect(await stopProcess(survivor.child)).toBe(0);
  });
});
