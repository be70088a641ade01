/**
 * Stale-scan recovery against a real server (PGlite, or PostgreSQL with
 * VEGA_TEST_DATABASE_URL) and the ECS test endpoint, spoken to by the real
 * SDK: the stale sweep, the task watch, orphaned claims up to
 * ATTEMPTS_EXHAUSTED, recoverers racing each other, and the operator's
 * Mutation.recoverStaleScans. Crashed processes are in recovery-crash.test.ts,
 * the maintenance command in recovery-cli.test.ts.
 */
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createEcsLauncher } from "../../worker/launchers/ecs.ts";
import { createLocalLauncher } from "../../worker/launchers/local.ts";
import type { Launcher } from "../../shared/launcher.ts";
import { createApiClient } from "../../worker/api-client.ts";
import { createRecoveryStep } from "../../worker/recovery.ts";
import { ScanExecutionLoop } from "../../worker/scan-loop.ts";
import { startEcsEndpoint, type EcsEndpoint } from "../support/ecs-endpoint.ts";
import { CLAIM, REPORT_STARTED, registerTestWorker } from "../support/execution.ts";
import { ecsClientEnv, eventCountsByCode, insertScansInBulk, queueScan, setProcessEnv, testEcsLauncherOptions, waitFor } from "../support/recovery.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";

const HOUR = 3600_000;
const STALE_AFTER_SECONDS = 3600;
/** Started two hours ago, with the threshold at one: stale by any clock. */
const longAgo = () => new Date(Date.now() - 2 * HOUR);

const RECOVER_STALE = `mutation ($dryRun: Boolean) {
  recoverStaleScans(dryRun: $dryRun) { dryRun runningScansChecked orphanedClaimsFound applied decisions { scanId action code reason taskState } }
}`;
const RECOVER_SCANS = `mutation ($workerId: ID!, $decisions: [RecoveryDecisionInput!]!) {
  recoverScans(workerId: $workerId, decisions: $decisions) { scanId code action applied }
}`;

/** The API's launcher is ECS, pointed at the test endpoint through this process's AWS variables. */
const serverEnv = (extra: Record<string, string> = {}) => ({
  VEGA_LAUNCHER: "ecs",
  VEGA_ECS_CLUSTER: "vega",
  VEGA_ECS_TASK_DEFINITION: "vega-runner:1",
  VEGA_MAX_ACTIVE_SCANS_PER_USER: "1000",
  VEGA_SCAN_RUNNING_STALE_SECONDS: String(STALE_AFTER_SECONDS),
  // Past the age of every scan here: these tests are about the stale sweep (the timeout has tests of its own).
  VEGA_SCAN_TIMEOUT_SECONDS: String(4 * STALE_AFTER_SECONDS),
  ...extra,
});

let ecs: EcsEndpoint;
let restoreEnv: () => void;
const launchers: Launcher[] = [];

beforeAll(async () => {
  ecs = await startEcsEndpoint();
  restoreEnv = setProcessEnv(ecsClientEnv(ecs.url));
});
afterAll(async () => {
  for (const launcher of launchers.splice(0)) await launcher.close();
  restoreEnv?.();
  await ecs?.close();
});

/** The real ECS launcher (real SDK, retries off), as a worker would hold it: RunTask makes tasks the endpoint knows. */
function ecsLauncher(): Launcher {
  const launcher = createEcsLauncher({
    ...testEcsLauncherOptions,
    retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
  });
  launchers.push(launcher);
  return launcher;
}

/** A task ARN in the cluster that ECS has never heard of (or long forgotten). */
const unknownTaskArn = () => `arn:aws:ecs:us-east-1:123456789012:task/vega/${randomBytes(16).toString("hex")}`;

/**
 * Scans RUNNING as a worker makes them: submitted, claimed by a registered test
 * worker, launched as ECS tasks (RunTask through the real launcher), and
 * reported started with the tasks' ARNs.
 */
async function runningEcsScans(server: TestServer, userToken: string, count: number) {
  const scanIds: string[] = [];
  for (let index = 0; index < count; index++) scanIds.push(await queueScan(server, userToken));
  const worker = await registerTestWorker(server, `launcher-${randomBytes(3).toString("hex")}`);
  const claims: { attempt: number; runnerToken: string; scan: { id: string } }[] = [];
  while (claims.length < count) {
    const response = await server.gql(CLAIM, { workerId: worker.id, max: count - claims.length }, worker.token);
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.claimScans.length).toBeGreaterThan(0);
    claims.push(...response.body.data.claimScans);
  }
  expect(claims.map((claim) => claim.scan.id).sort()).toEqual([...scanIds].sort());
  const launcher = ecsLauncher();
  const taskArns: string[] = [];
  for (const scanId of scanIds) {
    const claim = claims.find((candidate) => candidate.scan.id === scanId)!;
    const { taskId } = await launcher.launch({ scanId, attempt: claim.attempt, apiUrl: server.graphqlUrl, runnerToken: claim.runnerToken });
    const response = await server.gql(REPORT_STARTED, { scanId, taskId }, worker.token);
    expect(response.body.errors).toBeUndefined();
    taskArns.push(taskId);
  }
  return { scanIds, taskArns, worker };
}

async function scanRow(server: TestServer, scanId: string) {
  return server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
}

async function eventsOf(server: TestServer, scanId: string) {
  return server.app.deps.prisma.scanEvent.findMany({ where: { scanId }, orderBy: { seq: "asc" } });
}

describe("the stale sweep, against ECS", () => {
  let server: TestServer;
  let alice: string;
  let operator: string;

  beforeAll(async () => {
    ecs.reset();
    server = await startTestServer(serverEnv());
    alice = await server.token("alice");
    operator = await server.token("ops-olga", { groups: ["vega-ops"] });
  });
  afterAll(() => server?.close());

  it("fails only the scans whose task is gone, each with one STALE_SCAN event naming the task and its end; the live one runs on with one warning", async () => {
    const { scanIds, taskArns } = await runningEcsScans(server, alice, 5);
    const [live, stopped, forgotten, youngStopped, youngForgotten] = scanIds;
    const [liveTask, stoppedTask, forgottenTask, youngStoppedTask, youngForgottenTask] = taskArns;
    ecs.setTaskState(liveTask, { lastStatus: "RUNNING" });
    ecs.setTaskState(stoppedTask, { lastStatus: "STOPPED", stopCode: "SpotInterruption", stoppedReason: "Your Spot Task was interrupted.", exitCode: 137 });
    ecs.setTaskState(forgottenTask, { lastStatus: "RUNNING" });
    ecs.forget(forgottenTask);
    ecs.setTaskState(youngStoppedTask, { lastStatus: "STOPPED", exitCode: 2 });
    ecs.forget(youngForgottenTask);
    await server.app.deps.prisma.scan.updateMany({ where: { id: { in: [live, stopped, forgotten] } }, data: { startedAt: longAgo() } });
    const eventsBefore = await eventCountsByCode(server.app.deps.prisma, scanIds);
    const describesBefore = ecs.calls("DescribeTasks");

    const first = await server.gql(RECOVER_STALE, { dryRun: false }, operator);
    expect(first.body.errors).toBeUndefined();
    const sweep = first.body.data.recoverStaleScans;
    expect(sweep).toMatchObject({ dryRun: false, runningScansChecked: 5, orphanedClaimsFound: 0, applied: 4 });
    const decided = Object.fromEntries(sweep.decisions.map((decision: any) => [decision.scanId, [decision.action, decision.code, decision.taskState]]));
    expect(decided).toEqual({
      [live]: ["WARN", "STALE_SCAN_TASK_ALIVE", "RUNNING"],
      [stopped]: ["FAIL", "STALE_SCAN", "STOPPED"],
      [forgotten]: ["FAIL", "STALE_SCAN", "MISSING"],
      // The task watch: a young scan whose task stopped died without reporting.
      [youngStopped]: ["FAIL", "RUNNER_EXITED", "STOPPED"],
    });
    // Five tasks of one cluster: one DescribeTasks call; recovery never stops a task.
    expect(ecs.calls("DescribeTasks") - describesBefore).toBe(1);
    expect(ecs.calls("StopTask")).toBe(0);

    expect(await scanRow(server, stopped)).toMatchObject({ status: "FAILED", errorCode: "STALE_SCAN" });
    const [stoppedEvent] = (await eventsOf(server, stopped)).filter((event) => event.code === "STALE_SCAN");
    expect(stoppedEvent).toMatchObject({ kind: "ERROR" });
    expect(stoppedEvent.message).toContain(stoppedTask);
    expect(stoppedEvent.message).toContain("SpotInterruption");
    expect(stoppedEvent.data).toMatchObject({
      from: "RUNNING",
      to: "FAILED",
      task: { taskId: stoppedTask, state: "STOPPED", stopCode: "SpotInterruption", stoppedReason: "Your Spot Task was interrupted.", exitCode: 137 },
    });

    expect(await scanRow(server, forgotten)).toMatchObject({ status: "FAILED", errorCode: "STALE_SCAN" });
    const [forgottenEvent] = (await eventsOf(server, forgotten)).filter((event) => event.code === "STALE_SCAN");
    expect(forgottenEvent.message).toContain(forgottenTask);
    expect(forgottenEvent.message).toMatch(/no longer known/);
    expect(forgottenEvent.data).toMatchObject({ task: { taskId: forgottenTask, state: "MISSING", exitCode: null } });

    expect(await scanRow(server, youngStopped)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_EXITED" });
    const [exitedEvent] = (await eventsOf(server, youngStopped)).filter((event) => event.code === "RUNNER_EXITED");
    expect(exitedEvent.data).toMatchObject({ task: { taskId: youngStoppedTask, state: "STOPPED", stopCode: "EssentialContainerExited", exitCode: 2 } });

    const liveRow = await scanRow(server, live);
    expect(liveRow).toMatchObject({ status: "RUNNING", errorCode: null });
    expect(liveRow.staleWarnedAt).not.toBeNull();
    const [warning] = (await eventsOf(server, live)).filter((event) => event.code === "STALE_SCAN_TASK_ALIVE");
    expect(warning).toMatchObject({ kind: "WARNING" });
    expect(warning.message).toContain(liveTask);

    // ECS can lag right after RunTask: a young scan whose task it does not know yet is left alone.
    expect(await scanRow(server, youngForgotten)).toMatchObject({ status: "RUNNING", errorCode: null, staleWarnedAt: null });

    const second = await server.gql(RECOVER_STALE, { dryRun: false }, operator);
    expect(second.body.data.recoverStaleScans).toMatchObject({ runningScansChecked: 2, applied: 0, decisions: [] });
    expect((await scanRow(server, live)).status).toBe("RUNNING");

    const added = await eventCountsByCode(server.app.deps.prisma, scanIds);
    for (const [code, count] of Object.entries(eventsBefore)) added[code] -= count;
    expect(Object.fromEntries(Object.entries(added).filter(([, count]) => count !== 0))).toEqual({
      STALE_SCAN: 2,
      RUNNER_EXITED: 1,
      STALE_SCAN_TASK_ALIVE: 1,
    });
  });

  it("stops the task of a hung runner and of a scan past its timeout (StopTask), then fails them; a dry run stops nothing", async () => {
    const { scanIds, taskArns } = await runningEcsScans(server, alice, 3);
    const [hung, timedOut, healthy] = scanIds;
    for (const taskArn of taskArns) ecs.setTaskState(taskArn, { lastStatus: "RUNNING" });
    const prisma = server.app.deps.prisma;
    await prisma.scan.update({ where: { id: hung }, data: { lastHeartbeatAt: new Date(Date.now() - 600_000) } });
    await prisma.scan.update({ where: { id: timedOut }, data: { startedAt: new Date(Date.now() - 5 * HOUR), lastHeartbeatAt: new Date() } });
    await prisma.scan.update({ where: { id: healthy }, data: { lastHeartbeatAt: new Date() } });
    const stopsBefore = ecs.calls("StopTask");

    const dry = (await server.gql(RECOVER_STALE, { dryRun: true }, operator)).body.data.recoverStaleScans;
    const mine = (sweep: any) =>
      Object.fromEntries(sweep.decisions.filter((decision: any) => scanIds.includes(decision.scanId)).map((decision: any) => [decision.scanId, [decision.action, decision.code]]));
    expect(mine(dry)).toEqual({ [hung]: ["STOP_AND_FAIL", "RUNNER_HUNG"], [timedOut]: ["STOP_AND_FAIL", "SCAN_TIMEOUT"] });
    expect(ecs.calls("StopTask")).toBe(stopsBefore);

    const real = (await server.gql(RECOVER_STALE, { dryRun: false }, operator)).body.data.recoverStaleScans;
    expect(mine(real)).toEqual(mine(dry));
    const stops = ecs.requests.filter((request) => request.operation === "StopTask").slice(stopsBefore);
    expect(stops.map((request) => request.body.task).sort()).toEqual([taskArns[0], taskArns[1]].sort());
    expect(stops.find((request) => request.body.task === taskArns[0])!.body.reason).toMatch(/^RUNNER_HUNG: /);
    expect(stops.every((request) => request.body.reason.length <= 255)).toBe(true);
    expect(ecs.tasks.get(taskArns[0])).toMatchObject({ lastStatus: "STOPPED", stopCode: "UserInitiated" });
    expect(await scanRow(server, hung)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_HUNG" });
    expect(await scanRow(server, timedOut)).toMatchObject({ status: "FAILED", errorCode: "SCAN_TIMEOUT" });
    expect(await scanRow(server, healthy)).toMatchObject({ status: "RUNNING", errorCode: null });
    expect(ecs.tasks.get(taskArns[2])!.lastStatus).toBe("RUNNING");
  });

  it("reads a task that is stopping as alive: the runner may still be writing", async () => {
    const { scanIds, taskArns } = await runningEcsScans(server, alice, 1);
    ecs.setTaskState(taskArns[0], { lastStatus: "DEACTIVATING" });
    await server.app.deps.prisma.scan.update({ where: { id: scanIds[0] }, data: { startedAt: longAgo() } });
    const sweep = (await server.gql(RECOVER_STALE, {}, operator)).body.data.recoverStaleScans;
    expect(sweep.decisions.filter((decision: any) => decision.scanId === scanIds[0])).toEqual([
      expect.objectContaining({ action: "WARN", code: "STALE_SCAN_TASK_ALIVE", taskState: "RUNNING" }),
    ]);
    expect((await scanRow(server, scanIds[0])).status).toBe("RUNNING");
  });
});

describe("orphaned claims", () => {
  let server: TestServer;
  let alice: string;
  const silent = pino({ level: "silent" });

  beforeAll(async () => {
    server = await startTestServer(serverEnv({ VEGA_SCAN_MAX_ATTEMPTS: "3" }));
    alice = await server.token("alice");
  });
  afterAll(() => server?.close());

  let recoverer: { id: string; token: string } | undefined;

  /**
   * Another worker's recovery step (worker/recovery.ts), run in this process against the server: always the
   * same live worker, which heartbeats first, so that it holds the recovery lease and sweeps others' claims.
   */
  async function recoverAsAnotherWorker() {
    recoverer ??= await registerTestWorker(server, `recoverer-${randomBytes(3).toString("hex")}`);
    const heartbeat = await server.gql(
      `mutation ($id: ID!) { workerHeartbeat(id: $id, input: { activeScans: 0, draining: false }) { id } }`,
      { id: recoverer.id },
      recoverer.token,
    );
    expect(heartbeat.body.errors).toBeUndefined();
    const api = createApiClient({ url: server.graphqlUrl, token: () => recoverer!.token });
    const launcher = createLocalLauncher({ command: [process.execPath, "-e", ""] });
    try {
      await createRecoveryStep(launcher, silent)(api, recoverer.id);
    } finally {
      await launcher.close();
    }
  }

  const makeStale = (workerId: string) =>
    server.app.deps.prisma.worker.update({ where: { id: workerId }, data: { lastHeartbeatAt: new Date(Date.now() - HOUR) } });

  async function claimWith(workerName: string, scanId: string) {
    const worker = await registerTestWorker(server, workerName);
    const response = await server.gql(CLAIM, { workerId: worker.id, max: 1 }, worker.token);
    expect(response.body.data.claimScans.map((claim: any) => claim.scan.id)).toEqual([scanId]);
    return { worker, attempt: response.body.data.claimScans[0].attempt as number };
  }

  it("leaves a claim alone while its worker heartbeats, requeues it once the worker is stale, and fails it with ATTEMPTS_EXHAUSTED after VEGA_SCAN_MAX_ATTEMPTS claims", async () => {
    const scanId = await queueScan(server, alice);

    const first = await claimWith("claimer-1", scanId);
    expect(first.attempt).toBe(1);
    await recoverAsAnotherWorker();
    expect(await scanRow(server, scanId)).toMatchObject({ status: "STARTING", workerId: first.worker.id });

    await makeStale(first.worker.id);
    await recoverAsAnotherWorker();
    expect(await scanRow(server, scanId)).toMatchObject({ status: "QUEUED", workerId: null, taskId: null, attempts: 1 });

    const second = await claimWith("claimer-2", scanId);
    expect(second.attempt).toBe(2);
    // Deregistered counts as gone, stale or not.
    await server.app.deps.prisma.worker.update({ where: { id: second.worker.id }, data: { deregisteredAt: new Date() } });
    await recoverAsAnotherWorker();
    expect(await scanRow(server, scanId)).toMatchObject({ status: "QUEUED", attempts: 2 });

    const third = await claimWith("claimer-3", scanId);
    expect(third.attempt).toBe(3);
    await makeStale(third.worker.id);
    await recoverAsAnotherWorker();
    const failed = await scanRow(server, scanId);
    expect(failed).toMatchObject({ status: "FAILED", errorCode: "ATTEMPTS_EXHAUSTED", attempts: 3 });
    expect(failed.errorMessage).toContain("limit 3");

    // Nothing more happens to it.
    await recoverAsAnotherWorker();
    const events = await eventsOf(server, scanId);
    expect(events.map((event) => event.code)).toEqual([
      "QUEUED",
      "STARTING",
      "ORPHANED_CLAIM",
      "STARTING",
      "ORPHANED_CLAIM",
      "STARTING",
      "ATTEMPTS_EXHAUSTED",
    ]);
    expect(events[2]).toMatchObject({ kind: "STATE", data: { from: "STARTING", to: "QUEUED" } });
    expect(events[2].message).toContain(first.worker.id);
    expect(events[6]).toMatchObject({ kind: "ERROR", data: { from: "STARTING", to: "FAILED" } });
  });

  it("a worker whose launch outlived its claim stops the runner it started rather than run a scan claimed by another", async () => {
    const scanId = await queueScan(server, alice);
    const slow = await registerTestWorker(server, "slow-launcher");
    const taskArn = unknownTaskArn();
    let finishLaunch!: () => void;
    let launchCalled!: () => void;
    const launching = new Promise<void>((resolve) => (launchCalled = resolve));
    const stopped: string[] = [];
    // A launcher whose RunTask answers only when the test says so.
    const launcher: Launcher = {
      kind: "ecs",
      launch: () => {
        launchCalled();
        return new Promise((resolve) => (finishLaunch = () => resolve({ taskId: taskArn })));
      },
      stop: async (taskId) => void stopped.push(taskId),
      describe: async (taskIds) => new Map(taskIds.map((taskId) => [taskId, { taskId, state: "RUNNING" as const }])),
      close: async () => {},
    };
    const lines: { msg: string }[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const loop = new ScanExecutionLoop({ capacity: 1, pollIntervalSeconds: 3600, runnerApiUrl: server.graphqlUrl }, launcher, () => slow.id, log);
    loop.start(createApiClient({ url: server.graphqlUrl, token: () => slow.token }));
    try {
      await launching;
      expect(await scanRow(server, scanId)).toMatchObject({ status: "STARTING", workerId: slow.id, attempts: 1 });
      await makeStale(slow.id);
      await recoverAsAnotherWorker();
      const fast = await claimWith("fast-claimer", scanId);
      expect(fast.attempt).toBe(2);

      finishLaunch();
      await waitFor("the slow worker to hear that its claim is gone", async () =>
        lines.some((line) => /stopping its runner|could not report the launch/.test(line.msg)),
      );
      expect(stopped).toEqual([taskArn]);
      expect(await scanRow(server, scanId)).toMatchObject({ status: "STARTING", workerId: fast.worker.id, attempts: 2, taskId: null });
    } finally {
      await loop.stop();
    }
  });
});

describe("recoverers racing each other", () => {
  let server: TestServer;
  let operator: string;

  beforeAll(async () => {
    ecs.reset();
    server = await startTestServer(serverEnv());
    operator = await server.token("ops-olga", { groups: ["vega-ops"] });
  });
  afterAll(() => server?.close());

  async function expectOneTransitionAndEventEach(scanIds: string[], code: string) {
    const prisma = server.app.deps.prisma;
    expect(await prisma.scan.count({ where: { id: { in: scanIds }, status: "FAILED", errorCode: code } })).toBe(scanIds.length);
    const events = await prisma.scanEvent.groupBy({
      by: ["scanId"],
      where: { scanId: { in: scanIds }, code },
      _count: { _all: true },
    });
    expect(events).toHaveLength(scanIds.length);
    expect(events.every((group) => group._count._all === 1)).toBe(true);
    const failures = await prisma.scanEvent.count({ where: { scanId: { in: scanIds }, data: { path: ["to"], equals: "FAILED" } } });
    expect(failures).toBe(scanIds.length);
  }

  it("three workers sending the same 300 decisions at once, each in its own order: 300 transitions and 300 events, no deadlock", async () => {
    const prisma = server.app.deps.prisma;
    const taskIds = Array.from({ length: 300 }, unknownTaskArn);
    const scanIds = await insertScansInBulk(prisma, { ownerId: "bulk-owner", taskIds, startedAt: longAgo() });
    const decisions = scanIds.map((scanId, index) => ({
      scanId,
      action: "FAIL",
      expectedStatus: "RUNNING",
      code: "STALE_SCAN",
      reason: `task ${taskIds[index]} is gone`,
      task: { taskId: taskIds[index], state: "MISSING" },
    }));
    const workers = await Promise.all([1, 2, 3].map((index) => registerTestWorker(server, `racer-${index}`)));
    // Orders differ between recoverers (their candidates were listed at other moments): on PostgreSQL,
    // row locks taken in plan order would deadlock here.
    const orders = [decisions, [...decisions].reverse(), decisions.map((_, index) => decisions[(index * 7) % decisions.length])];
    expect(new Set(orders[2].map((decision) => decision.scanId)).size).toBe(300);

    const responses = await Promise.all(
      workers.map((worker, index) => server.gql(RECOVER_SCANS, { workerId: worker.id, decisions: orders[index] }, worker.token)),
    );

    for (const response of responses) expect(response.body.errors).toBeUndefined();
    const appliedBy = new Map<string, number>();
    for (const response of responses) {
      expect(response.body.data.recoverScans).toHaveLength(300);
      for (const outcome of response.body.data.recoverScans) if (outcome.applied) appliedBy.set(outcome.scanId, (appliedBy.get(outcome.scanId) ?? 0) + 1);
    }
    expect(appliedBy.size).toBe(300);
    expect([...appliedBy.values()].every((count) => count === 1)).toBe(true);
    await expectOneTransitionAndEventEach(scanIds, "STALE_SCAN");
    expect(await eventCountsByCode(prisma, scanIds)).toEqual({ STALE_SCAN: 300 });
  });

  it("three workers warning about the same 100 long-running live scans at once, in their own orders: one warning each", async () => {
    const prisma = server.app.deps.prisma;
    const taskIds = Array.from({ length: 100 }, unknownTaskArn);
    const scanIds = await insertScansInBulk(prisma, { ownerId: "warned-owner", taskIds, startedAt: longAgo() });
    const decisions = scanIds.map((scanId, index) => ({
      scanId,
      action: "WARN",
      expectedStatus: "RUNNING",
      code: "STALE_SCAN_TASK_ALIVE",
      reason: "still running",
      task: { taskId: taskIds[index], state: "RUNNING" },
    }));
    const orders = [decisions, [...decisions].reverse(), decisions.map((_, index) => decisions[(index * 3) % decisions.length])];
    const workers = await Promise.all([1, 2, 3].map((index) => registerTestWorker(server, `warner-${index}`)));

    const responses = await Promise.all(
      workers.map((worker, index) => server.gql(RECOVER_SCANS, { workerId: worker.id, decisions: orders[index] }, worker.token)),
    );

    for (const response of responses) expect(response.body.errors).toBeUndefined();
    const applied = responses.flatMap((response) => response.body.data.recoverScans).filter((outcome: any) => outcome.applied);
    expect(applied).toHaveLength(100);
    expect(await eventCountsByCode(prisma, scanIds)).toEqual({ STALE_SCAN_TASK_ALIVE: 100 });
    expect(await prisma.scan.count({ where: { id: { in: scanIds }, status: "RUNNING", staleWarnedAt: { not: null } } })).toBe(100);
    // Out of the way of the sweeps below: their unknown tasks would read as gone.
    await prisma.scan.updateMany({ where: { id: { in: scanIds } }, data: { status: "CANCELLED" } });
  });

  it("three recoverStaleScans sweeps at once over 300 gone tasks and 30 live ones: 300 failures, 30 warnings, nothing doubled", async () => {
    const prisma = server.app.deps.prisma;
    const launcher = ecsLauncher();
    const started = await Promise.all(
      Array.from({ length: 130 }, (_, index) =>
        launcher.launch({ scanId: `racing-${index}`, attempt: 1, apiUrl: server.graphqlUrl, runnerToken: "unused" }),
      ),
    );
    const stoppedTasks = started.slice(0, 100).map((result) => result.taskId);
    const liveTasks = started.slice(100).map((result) => result.taskId);
    for (const taskArn of stoppedTasks) ecs.setTaskState(taskArn, { lastStatus: "STOPPED", exitCode: 137, stopCode: "SpotInterruption" });
    for (const taskArn of liveTasks) ecs.setTaskState(taskArn, { lastStatus: "RUNNING" });
    const goneTasks = [...stoppedTasks, ...Array.from({ length: 200 }, unknownTaskArn)];
    const goneIds = await insertScansInBulk(prisma, { ownerId: "sweep-owner", taskIds: goneTasks, startedAt: longAgo() });
    const liveIds = await insertScansInBulk(prisma, { ownerId: "sweep-owner", taskIds: liveTasks, startedAt: longAgo() });
    const describesBefore = ecs.calls("DescribeTasks");

    const responses = await Promise.all([1, 2, 3].map(() => server.gql(RECOVER_STALE, { dryRun: false }, operator)));

    for (const response of responses) expect(response.body.errors).toBeUndefined();
    const applied = responses.reduce((sum, response) => sum + response.body.data.recoverStaleScans.applied, 0);
    expect(applied).toBe(330);
    // At most 330 tasks per sweep, 100 per DescribeTasks: four calls each at most (fewer for a sweep that
    // listed its candidates after another had already failed some).
    const describes = ecs.requests.filter((request) => request.operation === "DescribeTasks").slice(describesBefore);
    expect(describes.length).toBeGreaterThanOrEqual(3);
    expect(describes.length).toBeLessThanOrEqual(3 * 4);
    expect(describes.every((request) => request.body.tasks.length <= 100)).toBe(true);
    await expectOneTransitionAndEventEach(goneIds, "STALE_SCAN");
    expect(await eventCountsByCode(prisma, goneIds)).toEqual({ STALE_SCAN: 300 });
    expect(await eventCountsByCode(prisma, liveIds)).toEqual({ STALE_SCAN_TASK_ALIVE: 30 });
    expect(await prisma.scan.count({ where: { id: { in: liveIds }, status: "RUNNING", staleWarnedAt: { not: null } } })).toBe(30);
  });

  it("workers and sweeps racing over the same stale scans and orphaned claims: one transition and one event each", async () => {
    const prisma = server.app.deps.prisma;
    const taskIds = Array.from({ length: 200 }, unknownTaskArn);
    const runningIds = await insertScansInBulk(prisma, { ownerId: "mixed-owner", taskIds, startedAt: longAgo() });
    const orphanedIds = await insertScansInBulk(prisma, {
      ownerId: "mixed-owner",
      taskIds: Array.from({ length: 100 }, () => null),
      status: "STARTING",
      startedAt: longAgo(),
    });
    const decisions = [
      ...runningIds.map((scanId, index) => ({
        scanId,
        action: "FAIL",
        expectedStatus: "RUNNING",
        code: "STALE_SCAN",
        reason: "gone",
        task: { taskId: taskIds[index], state: "MISSING" },
      })),
      ...orphanedIds.map((scanId) => ({ scanId, action: "REQUEUE", expectedStatus: "STARTING", code: "ORPHANED_CLAIM", reason: "orphaned" })),
    ];
    const workers = await Promise.all([1, 2].map((index) => registerTestWorker(server, `mixed-${index}`)));

    const responses = await Promise.all([
      ...workers.map((worker) => server.gql(RECOVER_SCANS, { workerId: worker.id, decisions }, worker.token)),
      server.gql(RECOVER_STALE, { dryRun: false }, operator),
      server.gql(RECOVER_STALE, { dryRun: false }, operator),
    ]);

    for (const response of responses) expect(response.body.errors).toBeUndefined();
    await expectOneTransitionAndEventEach(runningIds, "STALE_SCAN");
    expect(await eventCountsByCode(prisma, runningIds)).toEqual({ STALE_SCAN: 200 });
    expect(await eventCountsByCode(prisma, orphanedIds)).toEqual({ ORPHANED_CLAIM: 100 });
    expect(await prisma.scan.count({ where: { id: { in: orphanedIds }, status: "QUEUED", workerId: null } })).toBe(100);
    // They are queued again: take them out of the way of later tests.
    await prisma.scan.updateMany({ where: { id: { in: orphanedIds } }, data: { status: "CANCELLED" } });
  });
});

describe("Mutation.recoverStaleScans", () => {
  let server: TestServer;
  let operator: string;

  beforeAll(async () => {
    server = await startTestServer(serverEnv());
    operator = await server.token("ops-olga", { groups: ["vega-ops"] });
  });
  afterAll(() => server?.close());
  afterEach(() => server.app.deps.prisma.auditEntry.deleteMany({ where: { action: "scan.recoverStale" } }));

  it("is refused to users and workers, and does nothing for them", async () => {
    const scanIds = await insertScansInBulk(server.app.deps.prisma, { ownerId: "alice", taskIds: [unknownTaskArn()], startedAt: longAgo() });
    const user = await server.token("alice");
    const worker = await server.token("deploy", { scope: "worker" });
    for (const token of [user, worker]) {
      for (const dryRun of [true, false]) {
        const response = await server.gql(RECOVER_STALE, { dryRun }, token);
        expect(errorCodes(response)).toEqual(["FORBIDDEN"]);
        expect(response.status).toBe(403);
      }
    }
    expect(errorCodes(await server.gql(RECOVER_STALE, { dryRun: true }))).toEqual(["UNAUTHENTICATED"]);
    expect(await scanRow(server, scanIds[0])).toMatchObject({ status: "RUNNING" });
    expect(await server.app.deps.prisma.auditEntry.count({ where: { action: "scan.recoverStale" } })).toBe(0);
    await server.app.deps.prisma.scan.update({ where: { id: scanIds[0] }, data: { status: "CANCELLED" } });
  });

  it("with dryRun reports what it would do and changes nothing; without, applies it; both are audited", async () => {
    const prisma = server.app.deps.prisma;
    const taskIds = [unknownTaskArn(), unknownTaskArn()];
    const scanIds = await insertScansInBulk(prisma, { ownerId: "alice", taskIds, startedAt: longAgo() });
    const before = await prisma.scan.findMany({ where: { id: { in: scanIds } }, orderBy: { id: "asc" } });

    const dry = await server.gql(RECOVER_STALE, { dryRun: true }, operator);
    expect(dry.body.errors).toBeUndefined();
    expect(dry.body.data.recoverStaleScans).toMatchObject({ dryRun: true, runningScansChecked: 2, applied: 0 });
    expect(dry.body.data.recoverStaleScans.decisions.map((decision: any) => [decision.scanId, decision.action, decision.code]).sort()).toEqual(
      scanIds.map((scanId) => [scanId, "FAIL", "STALE_SCAN"]).sort(),
    );
    expect(await prisma.scan.findMany({ where: { id: { in: scanIds } }, orderBy: { id: "asc" } })).toEqual(before);
    expect(await prisma.scanEvent.count({ where: { scanId: { in: scanIds } } })).toBe(0);
    const [dryAudit] = await prisma.auditEntry.findMany({ where: { action: "scan.recoverStale" } });
    expect(dryAudit).toMatchObject({ actor: "ops-olga", details: { dryRun: true, decisions: 2, applied: 0 } });

    const real = await server.gql(RECOVER_STALE, { dryRun: false }, operator);
    expect(real.body.data.recoverStaleScans).toMatchObject({ dryRun: false, applied: 2 });
    expect(await prisma.scan.count({ where: { id: { in: scanIds }, status: "FAILED", errorCode: "STALE_SCAN" } })).toBe(2);
    const audits = await prisma.auditEntry.findMany({ where: { action: "scan.recoverStale" }, orderBy: { at: "asc" } });
    expect(audits.map((entry) => entry.details)).toEqual([
      { dryRun: true, decisions: 2, applied: 0 },
      { dryRun: false, decisions: 2, applied: 2 },
    ]);
    // The operator can read it back in the audit log.
    const log = await server.gql("{ ops { auditLog(first: 10) { edges { node { actor action details } } } } }", {}, operator);
    expect(log.body.data.ops.auditLog.edges.map((edge: any) => edge.node)).toEqual(
      expect.arrayContaining([{ actor: "ops-olga", action: "scan.recoverStale", details: { dryRun: false, decisions: 2, applied: 2 } }]),
    );
  });
});

describe("recovery decisions are checked by the API", () => {
  let server: TestServer;
  let alice: string;

  beforeAll(async () => {
    server = await startTestServer(serverEnv());
    alice = await server.token("alice");
  });
  afterAll(() => server?.close());

  const fail = (scanId: string, code = "RUNNER_EXITED") => ({ scanId, action: "FAIL", expectedStatus: "RUNNING", code, reason: "rogue worker says so" });

  /** A RUNNING scan held by a live worker, whose runner has just reported. */
  async function healthyScan() {
    const scanId = await queueScan(server, alice);
    const holder = await registerTestWorker(server, `holder-${randomBytes(3).toString("hex")}`);
    const [claim] = (await server.gql(CLAIM, { workerId: holder.id, max: 1 }, holder.token)).body.data.claimScans;
    expect(claim.scan.id).toBe(scanId);
    await server.gql(REPORT_STARTED, { scanId, taskId: unknownTaskArn() }, holder.token);
    const progress = await server.gql(
      `mutation ($scanId: ID!) { reportScanProgress(scanId: $scanId, input: { phase: ANALYZING, findings: 0 }) { phase } }`,
      { scanId },
      claim.runnerToken,
    );
    expect(progress.body.errors).toBeUndefined();
    return { scanId, holder };
  }

  it("refuses, and audits, a worker's decision on a live worker's healthy scan; the scan runs on", async () => {
    const prisma = server.app.deps.prisma;
    const { scanId, holder } = await healthyScan();
    const rogue = await registerTestWorker(server, "rogue");

    const response = await server.gql(RECOVER_SCANS, { workerId: rogue.id, decisions: [fail(scanId)] }, rogue.token);

    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.recoverScans).toEqual([{ scanId, code: "RUNNER_EXITED", action: "FAIL", applied: false }]);
    const refused = await server.gql(RECOVER_SCANS.replace("applied }", "applied refused }"), { workerId: rogue.id, decisions: [fail(scanId)] }, rogue.token);
    expect(refused.body.data.recoverScans[0].refused).toContain(`held by live worker ${holder.id}`);
    expect(await scanRow(server, scanId)).toMatchObject({ status: "RUNNING", errorCode: null });
    expect((await eventsOf(server, scanId)).map((event) => event.code)).not.toContain("RUNNER_EXITED");
    const audits = await prisma.auditEntry.findMany({ where: { action: "scan.recoverRefused" }, orderBy: { at: "asc" } });
    expect(audits).toHaveLength(2);
    expect(audits[0]).toMatchObject({
      actor: "deploy-rogue",
      target: `Worker:${rogue.id}`,
      details: { workerId: rogue.id, refused: 1, decisions: [{ scanId, action: "FAIL", code: "RUNNER_EXITED" }] },
    });

    // Its own worker may.
    const own = await server.gql(RECOVER_SCANS, { workerId: holder.id, decisions: [fail(scanId)] }, holder.token);
    expect(own.body.data.recoverScans).toEqual([{ scanId, code: "RUNNER_EXITED", action: "FAIL", applied: true }]);
  });

  it("lets any worker apply a decision once the scan's worker is stale, or the scan is past the heartbeat TTL, the timeout or the stale threshold", async () => {
    const prisma = server.app.deps.prisma;
    const longAgoBy = (seconds: number) => new Date(Date.now() - seconds * 1000);
    const staleWorker = await healthyScan();
    await prisma.worker.update({ where: { id: staleWorker.holder.id }, data: { lastHeartbeatAt: longAgoBy(3600) } });
    const silent = await healthyScan();
    await prisma.scan.update({ where: { id: silent.scanId }, data: { lastHeartbeatAt: longAgoBy(600) } });
    const timedOut = await healthyScan();
    await prisma.scan.update({ where: { id: timedOut.scanId }, data: { startedAt: longAgoBy(5 * 3600) } });
    const healthy = await healthyScan();
    const other = await registerTestWorker(server, "another-worker");

    const response = await server.gql(
      RECOVER_SCANS,
      { workerId: other.id, decisions: [fail(staleWorker.scanId), fail(silent.scanId, "RUNNER_HUNG"), fail(timedOut.scanId, "SCAN_TIMEOUT"), fail(healthy.scanId)] },
      other.token,
    );

    expect(response.body.data.recoverScans.map((outcome: any) => outcome.applied)).toEqual([true, true, true, false]);
    expect(await scanRow(server, healthy.scanId)).toMatchObject({ status: "RUNNING" });
    expect(await scanRow(server, silent.scanId)).toMatchObject({ status: "FAILED", errorCode: "RUNNER_HUNG" });
  });

  it("refuses to requeue the starting claim of a live worker", async () => {
    const scanId = await queueScan(server, alice);
    const claimer = await registerTestWorker(server, "live-claimer");
    await server.gql(CLAIM, { workerId: claimer.id, max: 1 }, claimer.token);
    const other = await registerTestWorker(server, "impatient");
    const response = await server.gql(
      RECOVER_SCANS,
      { workerId: other.id, decisions: [{ scanId, action: "REQUEUE", expectedStatus: "STARTING", code: "ORPHANED_CLAIM", reason: "mine now" }] },
      other.token,
    );
    expect(response.body.data.recoverScans[0]).toMatchObject({ applied: false });
    expect(await scanRow(server, scanId)).toMatchObject({ status: "STARTING", workerId: claimer.id });
  });
});

describe("one worker at a time sweeps the scans of others", () => {
  let server: TestServer;
  const silent = pino({ level: "silent" });

  beforeAll(async () => {
    ecs.reset();
    server = await startTestServer(serverEnv());
  });
  afterAll(() => server?.close());

  const CANDIDATES = `query ($workerId: ID!) { recoveryCandidates(workerId: $workerId) { sweepsOthers running { id } orphaned { id } } }`;
  const heartbeat = (worker: { id: string; token: string }) =>
    server.gql(`mutation ($id: ID!) { workerHeartbeat(id: $id, input: { activeScans: 0, draining: false }) { id } }`, { id: worker.id }, worker.token);

  it("three live workers recovering at once: one holds the lease and describes the dead worker's tasks, in one DescribeTasks call", async () => {
    const prisma = server.app.deps.prisma;
    const dead = await registerTestWorker(server, "dead-worker");
    await prisma.worker.update({ where: { id: dead.id }, data: { lastHeartbeatAt: new Date(Date.now() - HOUR) } });
    const launcher = ecsLauncher();
    const tasks = await Promise.all(
      Array.from({ length: 30 }, (_, index) => launcher.launch({ scanId: `leased-${index}`, attempt: 1, apiUrl: server.graphqlUrl, runnerToken: "unused" })),
    );
    for (const { taskId } of tasks) ecs.setTaskState(taskId, { lastStatus: "STOPPED", exitCode: 137 });
    const scanIds = await insertScansInBulk(prisma, {
      ownerId: "lease-owner",
      taskIds: tasks.map((task) => task.taskId),
      startedAt: new Date(Date.now() - 60_000),
      workerId: dead.id,
    });
    const workers = await Promise.all([1, 2, 3].map((index) => registerTestWorker(server, `sweeper-${index}`)));
    const describesBefore = ecs.calls("DescribeTasks");

    await Promise.all(
      workers.map((worker) => createRecoveryStep(ecsLauncher(), silent)(createApiClient({ url: server.graphqlUrl, token: () => worker.token }), worker.id)),
    );

    expect(ecs.calls("DescribeTasks") - describesBefore).toBe(1);
    expect(await prisma.scan.count({ where: { id: { in: scanIds }, status: "FAILED", errorCode: "RUNNER_EXITED" } })).toBe(30);
    const views = await Promise.all(workers.map(async (worker) => (await server.gql(CANDIDATES, { workerId: worker.id }, worker.token)).body.data.recoveryCandidates));
    expect(views.filter((view) => view.sweepsOthers)).toHaveLength(1);
  });

  it("passes the lease on when its holder goes stale or drains, and keeps it with a holder that polls", async () => {
    const prisma = server.app.deps.prisma;
    const first = await registerTestWorker(server, "lease-first");
    const second = await registerTestWorker(server, "lease-second");
    await prisma.recoveryLease.deleteMany();
    const sweeps = async (worker: { id: string; token: string }) =>
      (await server.gql(CANDIDATES, { workerId: worker.id }, worker.token)).body.data.recoveryCandidates.sweepsOthers as boolean;

    expect(await sweeps(first)).toBe(true);
    expect(await sweeps(second)).toBe(false);
    expect(await sweeps(first)).toBe(true);

    await prisma.worker.update({ where: { id: first.id }, data: { lastHeartbeatAt: new Date(Date.now() - HOUR) } });
    expect(await sweeps(second)).toBe(true);
    // The stale one comes back: the lease stays with the worker that has it.
    await heartbeat(first);
    expect(await sweeps(first)).toBe(false);

    await server.gql(`mutation ($id: ID!) { workerHeartbeat(id: $id, input: { activeScans: 0, draining: true }) { id } }`, { id: second.id }, second.token);
    expect(await sweeps(first)).toBe(true);
    expect(await sweeps(second)).toBe(false);
  });

  it("lists to a worker without the lease only the running scans it holds", async () => {
    const prisma = server.app.deps.prisma;
    await prisma.recoveryLease.deleteMany();
    const holder = await registerTestWorker(server, "lease-holder");
    const plain = await registerTestWorker(server, "lease-less");
    expect((await server.gql(CANDIDATES, { workerId: holder.id }, holder.token)).body.data.recoveryCandidates.sweepsOthers).toBe(true);
    const [own] = await insertScansInBulk(prisma, { ownerId: "lease-owner", taskIds: [unknownTaskArn()], startedAt: new Date(), workerId: plain.id });
    await insertScansInBulk(prisma, { ownerId: "lease-owner", taskIds: [null], status: "STARTING", startedAt: new Date(Date.now() - HOUR), workerId: null });

    const view = (await server.gql(CANDIDATES, { workerId: plain.id }, plain.token)).body.data.recoveryCandidates;
    expect(view).toEqual({ sweepsOthers: false, running: [{ id: own }], orphaned: [] });
  });
});
