/**
 * A real `vega worker` with VEGA_LAUNCHER=ecs: its ECS client (the real SDK,
 * configured by AWS_ENDPOINT_URL_ECS, AWS_REGION and fake credentials) talks to
 * the test ECS endpoint, which plays ECS and starts the real `vega runner` for
 * each task with the task's overridden environment.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { defaultEcsRetry } from "../../worker/launchers/ecs.ts";
import { stopProcess } from "../support/cli.ts";
import { startEcsEndpoint, type EcsEndpoint, type EcsTask } from "../support/ecs-endpoint.ts";
import { overriddenEnvironment, runEcsTasksAsRunners, type EcsRunners } from "../support/ecs-runners.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { awsKeysFile, jwtClaims, scanEvents, startWorkerProcess, waitFor, waitForScanStatus, within, type WorkerProcess } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

const CANCEL = "mutation ($id: ID!) { cancelScan(id: $id) { id status } }";
const TASK_ARN = /^arn:aws:ecs:us-east-1:123456789012:task\/vega\/[0-9a-f]{32}$/;

let server: TestServer;
let ecs: EcsEndpoint;
let worker: WorkerProcess;
let alice: string;
let runners: EcsRunners | undefined;

beforeAll(async () => {
  ecs = await startEcsEndpoint({ clusters: ["vega"] });
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "20" });
  alice = await server.token("alice");
  worker = await startWorkerProcess("ecs-worker", {
    VEGA_API_URL: server.graphqlUrl,
    VEGA_WORKER_TOKEN: await server.token("ecs-fleet", { scope: "worker" }),
    VEGA_WORKER_CAPACITY: "2",
    VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
    VEGA_LAUNCHER: "ecs",
    VEGA_ECS_CLUSTER: "vega",
    VEGA_ECS_TASK_DEFINITION: "vega-runner:7",
    VEGA_ECS_SUBNETS: "subnet-aaa,subnet-bbb",
    VEGA_ECS_SECURITY_GROUPS: "sg-123,sg-456",
    VEGA_ECS_ASSIGN_PUBLIC_IP: "true",
    // The SDK's own configuration chain, as on a machine with an IAM role and a VPC endpoint.
    AWS_ENDPOINT_URL_ECS: ecs.url,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "AKIDVEGAWORKERTEST",
    AWS_SECRET_ACCESS_KEY: "not-a-real-secret-access-key",
  });
});
beforeEach(() => ecs.reset());
afterEach(async () => {
  await runners?.close();
  runners = undefined;
});
afterAll(async () => {
  if (worker) expect(await stopProcess(worker.child, "SIGTERM")).toBe(0);
  await server?.close();
  await ecs?.close();
});

async function submit(files: { name: string; data: string }[]) {
  const submitted = await submitScan(server, alice, await buildZip(files));
  expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
  return submitted.body.data.submitScan.scan.id as string;
}

const runTasksOf = (scanId: string) =>
  ecs.requests.filter((request) => request.operation === "RunTask" && request.body.startedBy === scanId);
const tasksOf = (scanId: string): EcsTask[] => [...ecs.tasks.values()].filter((task) => task.startedBy === scanId);
async function cancel(scanId: string) {
  const response = await server.gql(CANCEL, { id: scanId }, alice);
  expect(response.body).toEqual({ data: { cancelScan: { id: scanId, status: "CANCELLED" } } });
}

const stateCodes = async (scanId: string) =>
  (await scanEvents(server.app.deps.prisma, scanId)).filter((event) => event.kind === "STATE").map((event) => event.code);

describe("a worker with the ECS launcher runs a scan as an ECS task", () => {
  it("sends RunTask with the configured cluster, network, overrides and tags, and the task's runner completes the scan", async () => {
    runners = runEcsTasksAsRunners(ecs);
    const scanId = await submit([{ name: "src/index.ts", data: "export {};\n" }, awsKeysFile(2)]);

    const scan = await waitForScanStatus(server.app.deps.prisma, scanId, ["SUCCEEDED", "FAILED", "CANCELLED"], { timeoutMs: 120_000 });
    const [task] = tasksOf(scanId);
    expect(scan.status, runners.output(task?.taskArn)).toBe("SUCCEEDED");

    const requests = runTasksOf(scanId);
    expect(requests).toHaveLength(1);
    const [{ body, headers }] = requests;
    // Signed by the SDK with the credentials and region of the worker's environment.
    expect(headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDVEGAWORKERTEST\/\d{8}\/us-east-1\/ecs\/aws4_request/);
    expect(body).toEqual({
      cluster: "vega",
      taskDefinition: "vega-runner:7",
      count: 1,
      launchType: "FARGATE",
      networkConfiguration: {
        awsvpcConfiguration: { subnets: ["subnet-aaa", "subnet-bbb"], securityGroups: ["sg-123", "sg-456"], assignPublicIp: "ENABLED" },
      },
      overrides: {
        containerOverrides: [
          {
            name: "runner",
            environment: [
              { name: "VEGA_SCAN_ID", value: scanId },
              { name: "VEGA_API_URL", value: server.graphqlUrl },
              { name: "VEGA_RUNNER_TOKEN", value: expect.any(String) },
            ],
          },
        ],
      },
      startedBy: scanId,
      tags: [
        { key: "vega:scan-id", value: scanId },
        { key: "vega:attempt", value: "1" },
      ],
      enableECSManagedTags: true,
      propagateTags: "TASK_DEFINITION",
      clientToken: `${scanId}-1`,
    });
    expect(body.clientToken.length).toBeLessThanOrEqual(64);

    // The runner's token is bound to this one scan.
    const runnerToken = overriddenEnvironment(task).VEGA_RUNNER_TOKEN;
    const claims = jwtClaims(runnerToken);
    expect(claims).toMatchObject({ sub: `runner:${scanId}`, vega_scope: "runner", vega_scan_id: scanId });
    expect(claims.exp).toBeGreaterThan(Date.now() / 1000);
    expect(claims).not.toHaveProperty("vega_worker_id");

    expect(task.taskArn).toMatch(TASK_ARN);
    expect(scan).toMatchObject({ taskId: task.taskArn, attempts: 1, errorCode: null });
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]);
    const running = (await scanEvents(server.app.deps.prisma, scanId)).find((event) => event.code === "RUNNING")!;
    expect(running.data).toMatchObject({ taskId: task.taskArn });
    expect(await server.app.deps.prisma.finding.count({ where: { scanId, ruleId: "aws-access-key-id" } })).toBe(2);

    // The runner exits once the scan is complete, and the task stops with its exit code.
    const stopped = await waitFor("the runner task to stop", () => (task.lastStatus === "STOPPED" ? task : undefined));
    expect(stopped.containers[0].exitCode).toBe(0);
  }, 180_000);

  it("fails the scan with LAUNCH_FAILED and ECS's reason when every RunTask answers with failures", async () => {
    const failure = { reason: "RESOURCE:MEMORY", detail: "No container instance met all of its requirements" };
    ecs.failNextRunTasks(1000, failure);
    const scanId = await submit([{ name: "src/index.ts", data: "export {};\n" }]);

    const scan = await waitForScanStatus(server.app.deps.prisma, scanId, ["SUCCEEDED", "FAILED", "CANCELLED"], { timeoutMs: 120_000 });
    expect(scan).toMatchObject({ status: "FAILED", errorCode: "LAUNCH_FAILED", attempts: 1, taskId: null });
    expect(scan.errorMessage).toContain("RESOURCE:MEMORY");

    const events = await scanEvents(server.app.deps.prisma, scanId);
    const launchFailed = events.filter((event) => event.code === "LAUNCH_FAILED");
    expect(launchFailed).toHaveLength(1);
    expect(launchFailed[0]).toMatchObject({ kind: "ERROR", data: failure });
    expect(launchFailed[0].message).toContain("RESOURCE:MEMORY");
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING"]);
    expect(events.at(-1)!.code).toBe("LAUNCH_FAILED");

    // Every try of the launcher was refused, each round with a token of its own, and nothing started.
    const tokens = runTasksOf(scanId).map((request) => request.body.clientToken as string);
    expect(tokens).toHaveLength(defaultEcsRetry.attempts);
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(tokens.every((token) => token.startsWith(`${scanId}-1`) && token.length <= 64)).toBe(true);
    expect(tasksOf(scanId)).toEqual([]);
  }, 180_000);
});

describe("cancelling a scan whose ECS task runs", () => {
  it("stops the task with StopTask, and the scan stays CANCELLED", async () => {
    let cancelledId: string | undefined;
    // The cancelled scan's task stays RUNNING with nothing behind it; later tasks run the real runner.
    runners = runEcsTasksAsRunners(ecs, (task) => overriddenEnvironment(task).VEGA_SCAN_ID !== cancelledId);
    let onStop!: (stop: { task: EcsTask; reason: string | undefined }) => void;
    const stopped = new Promise<{ task: EcsTask; reason: string | undefined }>((resolve) => (onStop = resolve));
    ecs.onStopTask((task, reason) => onStop({ task, reason }));

    cancelledId = await submit([{ name: "src/index.ts", data: "export {};\n" }]);
    const running = await waitForScanStatus(server.app.deps.prisma, cancelledId, ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"], {
      timeoutMs: 120_000,
    });
    expect(running.status).toBe("RUNNING");
    const taskArn = running.taskId!;
    expect(taskArn).toMatch(TASK_ARN);
    expect(ecs.tasks.get(taskArn)!.lastStatus).toBe("RUNNING");

    await cancel(cancelledId);

    const stop = await within(stopped, "the worker's StopTask", { details: () => JSON.stringify(worker.logLines().slice(-20)) });
    expect(stop.task.taskArn).toBe(taskArn);
    const stopRequests = ecs.requests.filter((request) => request.operation === "StopTask");
    expect(stopRequests.map((request) => request.body)).toEqual([{ cluster: "vega", task: taskArn, reason: "scan cancelled" }]);
    expect(ecs.tasks.get(taskArn)).toMatchObject({ lastStatus: "STOPPED", stopCode: "UserInitiated", stoppedReason: "scan cancelled" });

    // A later scan runs to completion: the worker polled (recovery included) again since it stopped the task.
    const laterId = await submit([{ name: "src/later.ts", data: "export {};\n" }]);
    expect((await waitForScanStatus(server.app.deps.prisma, laterId, ["SUCCEEDED", "FAILED", "CANCELLED"], { timeoutMs: 120_000 })).status).toBe(
      "SUCCEEDED",
    );
    const [laterTask] = tasksOf(laterId);
    expect((await waitFor("the later runner task to stop", () => (laterTask.lastStatus === "STOPPED" ? laterTask : undefined))).containers[0].exitCode).toBe(0);

    const after = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: cancelledId } });
    expect(after).toMatchObject({ status: "CANCELLED", errorCode: null, taskId: taskArn });
    expect(await stateCodes(cancelledId)).toEqual(["QUEUED", "STARTING", "RUNNING", "CANCELLED"]);
    expect((await scanEvents(server.app.deps.prisma, cancelledId)).at(-1)!.code).toBe("CANCELLED");
    expect(ecs.requests.filter((request) => request.operation === "StopTask" && request.body.task === taskArn)).toHaveLength(1);
  }, 240_000);

  it("still stops a task that DescribeTasks briefly did not know (ECS is eventually consistent after RunTask)", async () => {
    runners = runEcsTasksAsRunners(ecs, () => false);
    let onStop!: (task: EcsTask) => void;
    const stopped = new Promise<EcsTask>((resolve) => (onStop = resolve));
    ecs.onStopTask((task) => onStop(task));

    const scanId = await submit([{ name: "src/index.ts", data: "export {};\n" }]);
    const running = await waitForScanStatus(server.app.deps.prisma, scanId, ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"], { timeoutMs: 120_000 });
    expect(running.status).toBe("RUNNING");
    const taskArn = running.taskId!;

    // DescribeTasks answers MISSING for the task for a while, as ECS may right after RunTask.
    const task = ecs.tasks.get(taskArn)!;
    const describedBefore = ecs.requests.length;
    ecs.forget(taskArn);
    // Three DescribeTasks of it since: the worker's reconciliation has seen MISSING at least once, to its end.
    await waitFor("the worker to describe the task three times", () => {
      const describes = ecs.requests.slice(describedBefore).filter((request) => request.operation === "DescribeTasks" && request.body.tasks.includes(taskArn));
      return describes.length >= 3;
    });
    ecs.tasks.set(taskArn, task);

    await cancel(scanId);
    const stop = await within(stopped, "the worker's StopTask", { timeoutMs: 30_000, details: () => JSON.stringify(worker.logLines().slice(-20)) });
    expect(stop.taskArn).toBe(taskArn);
    expect(ecs.tasks.get(taskArn)).toMatchObject({ lastStatus: "STOPPED", stopCode: "UserInitiated" });
    expect((await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } })).status).toBe("CANCELLED");
  }, 240_000);
});
