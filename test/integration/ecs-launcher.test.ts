import { ECSClient, ListTasksCommand, RunTaskCommand, type ListTasksCommandInput } from "@aws-sdk/client-ecs";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createEcsLauncher, parseCapacityProviders, runTaskClientToken, type EcsLauncherOptions, type LauncherLogger } from "../../worker/launchers/ecs.ts";
import { LaunchFailedError, type LaunchRequest } from "../../shared/launcher.ts";
import { startEcsEndpoint, type EcsEndpoint } from "../support/ecs-endpoint.ts";

const TASK_ARN = /^arn:aws:ecs:us-east-1:123456789012:task\/vega\/[0-9a-f]{32}$/;
const CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone";

let ecs: EcsEndpoint;
const clients: ECSClient[] = [];

beforeAll(async () => {
  ecs = await startEcsEndpoint();
});
afterAll(async () => {
  await ecs.close();
});
beforeEach(() => ecs.reset());
afterEach(() => {
  for (const client of clients.splice(0)) client.destroy();
});

/** The real SDK client, pointed at the endpoint; the launcher's own retry policy is the only one. */
function sdkClient(url = ecs.url): ECSClient {
  const client = new ECSClient({
    endpoint: url,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" },
    maxAttempts: 1,
  });
  clients.push(client);
  return client;
}

// pino's logger is what the worker passes: this checks the type fits.
const quietLogger: LauncherLogger = pino({ level: "silent" });

function ecsLauncher(overrides: Partial<EcsLauncherOptions> = {}) {
  return createEcsLauncher({
    cluster: "vega",
    taskDefinition: "vega-runner:7",
    containerName: "runner",
    launchType: "FARGATE",
    capacityProviders: [],
    subnets: ["subnet-aaa", "subnet-bbb"],
    securityGroups: ["sg-123"],
    assignPublicIp: false,
    client: sdkClient(),
    retry: { attempts: 4, baseDelayMs: 1, maxDelayMs: 2 },
    logger: quietLogger,
    ...overrides,
  });
}

const scan = (scanId: string, attempt = 1): LaunchRequest => ({
  scanId,
  attempt,
  apiUrl: "http://api.internal:4000/graphql",
  runnerToken: `runner-token-for-${scanId}`,
});

const runTaskBodies = () => ecs.requests.filter((r) => r.operation === "RunTask").map((r) => r.body);

describe("launching a runner task", () => {
  it("sends RunTask with the cluster, task definition, awsvpc network, scan environment, startedBy and tags", async () => {
    const { taskId } = await ecsLauncher().launch(scan("scan-0001"));

    expect(taskId).toMatch(TASK_ARN);
    const [request] = ecs.requests;
    expect(request.operation).toBe("RunTask");
    expect(request.headers["x-amz-target"]).toBe("AmazonEC2ContainerServiceV20141113.RunTask");
    expect(request.headers["content-type"]).toBe("application/x-amz-json-1.1");
    expect(request.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/us-east-1\/ecs\/aws4_request/);
    expect(request.body).toEqual({
      cluster: "vega",
      taskDefinition: "vega-runner:7",
      count: 1,
      launchType: "FARGATE",
      networkConfiguration: {
        awsvpcConfiguration: { subnets: ["subnet-aaa", "subnet-bbb"], securityGroups: ["sg-123"], assignPublicIp: "DISABLED" },
      },
      overrides: {
        containerOverrides: [
          {
            name: "runner",
            environment: [
              { name: "VEGA_SCAN_ID", value: "scan-0001" },
              { name: "VEGA_API_URL", value: "http://api.internal:4000/graphql" },
              { name: "VEGA_RUNNER_TOKEN", value: "runner-token-for-scan-0001" },
            ],
          },
        ],
      },
      startedBy: "scan-0001",
      tags: [
        { key: "vega:scan-id", value: "scan-0001" },
        { key: "vega:attempt", value: "1" },
      ],
      enableECSManagedTags: true,
      propagateTags: "TASK_DEFINITION",
      clientToken: "scan-0001-1",
    });

    const task = ecs.tasks.get(taskId)!;
    expect(task.startedBy).toBe("scan-0001");
    expect(task.lastStatus).toBe("PROVISIONING");
    expect(task.containers.map((c) => c.name)).toEqual(["runner"]);
  });

  it("replaces the launch type with the capacity provider strategy when one is configured", async () => {
    await ecsLauncher({ capacityProviders: ["FARGATE_SPOT:3", "FARGATE:1:1"], subnets: [], assignPublicIp: true }).launch(scan("scan-spot"));

    const [body] = runTaskBodies();
    expect(body.capacityProviderStrategy).toEqual([
      { capacityProvider: "FARGATE_SPOT", weight: 3 },
      { capacityProvider: "FARGATE", weight: 1, base: 1 },
    ]);
    expect(body).not.toHaveProperty("launchType");
    expect(body).not.toHaveProperty("networkConfiguration");
  });

  it("asks for a public IP when configured", async () => {
    await ecsLauncher({ assignPublicIp: true, securityGroups: [] }).launch(scan("scan-public"));

    expect(runTaskBodies()[0].networkConfiguration).toEqual({ awsvpcConfiguration: { subnets: ["subnet-aaa", "subnet-bbb"], assignPublicIp: "ENABLED" } });
  });

  it("refuses a malformed capacity provider entry when it is created", () => {
    expect(() => ecsLauncher({ capacityProviders: ["FARGATE_SPOT:lots"] })).toThrow(/NAME\[:weight\[:base\]\]/);
    expect(parseCapacityProviders(["FARGATE"])).toEqual([{ capacityProvider: "FARGATE", weight: 1 }]);
  });

  it("keeps clientToken and startedBy within ECS's limits for any scan id", async () => {
    const longScanId = `scan with spaces/and=symbols,commas&more-${"x".repeat(300)}`;
    const { taskId } = await ecsLauncher().launch(scan(longScanId, 3));

    const [body] = runTaskBodies();
    expect(taskId).toMatch(TASK_ARN);
    expect(body.clientToken).toMatch(/^[0-9a-f]{64}$/);
    expect(body.clientToken).toBe(runTaskClientToken(longScanId, 3));
    expect(body.startedBy).toHaveLength(128);
    expect(body.startedBy).toMatch(/^[A-Za-z0-9_/-]+$/);
    expect(body.tags[0].value).toHaveLength(256);
    expect(body.tags[0].value).toMatch(/^scan with spaces\/and=symbols_commas_more-x+$/);
    expect(body.overrides.containerOverrides[0].environment[0]).toEqual({ name: "VEGA_SCAN_ID", value: longScanId });
  });

  it("lets a test react to the launch as ECS would (onRunTask)", async () => {
    ecs.onRunTask((task) => {
      ecs.setTaskState(task.taskArn, { lastStatus: "RUNNING" });
    });
    const launcher = ecsLauncher();
    const { taskId } = await launcher.launch(scan("scan-hooked"));

    expect((await launcher.describe([taskId])).get(taskId)).toEqual({ taskId, state: "RUNNING" });
  });
});

describe("a launch is idempotent per scan attempt", () => {
  it("starts one task when a restarted worker launches the same attempt again", async () => {
    const first = await ecsLauncher().launch(scan("scan-again"));
    const second = await ecsLauncher().launch(scan("scan-again"));

    expect(second.taskId).toBe(first.taskId);
    expect(ecs.tasks.size).toBe(1);
    expect(runTaskBodies().map((b) => b.clientToken)).toEqual(["scan-again-1", "scan-again-1"]);
  });

  it("does not call ECS again for an attempt this launcher already started", async () => {
    const launcher = ecsLauncher();
    const [a, b] = await Promise.all([launcher.launch(scan("scan-twice")), launcher.launch(scan("scan-twice"))]);
    const c = await launcher.launch(scan("scan-twice"));

    expect(new Set([a.taskId, b.taskId, c.taskId]).size).toBe(1);
    expect(ecs.calls("RunTask")).toBe(1);
  });

  it("starts a new task for the next attempt of the same scan", async () => {
    const launcher = ecsLauncher();
    const first = await launcher.launch(scan("scan-retry", 1));
    const second = await launcher.launch(scan("scan-retry", 2));

    expect(second.taskId).not.toBe(first.taskId);
    expect(runTaskBodies().map((b) => b.clientToken)).toEqual(["scan-retry-1", "scan-retry-2"]);
  });
});

describe("one task per scan: a re-claimed scan's earlier tasks are stopped before it is launched again", () => {
  const stopBodies = () => ecs.requests.filter((r) => r.operation === "StopTask").map((r) => r.body);

  it("lists the scan's tasks by startedBy alone, stops those of earlier attempts, then starts the new one", async () => {
    // Attempt 1 was launched by a worker that died; its task still runs.
    const { taskId: orphan } = await ecsLauncher().launch(scan("scan-reclaimed", 1));
    ecs.setTaskState(orphan, { lastStatus: "RUNNING" });
    const before = ecs.requests.length;

    const { taskId } = await ecsLauncher().launch(scan("scan-reclaimed", 2));

    const calls = ecs.requests.slice(before);
    expect(calls.map((call) => call.operation)).toEqual(["ListTasks", "DescribeTasks", "StopTask", "RunTask"]);
    // ECS: "When you specify startedBy as the filter, it must be the only filter that you use."
    expect(calls[0].body).toEqual({ cluster: "vega", startedBy: "scan-reclaimed" });
    expect(calls[1].body).toEqual({ cluster: "vega", tasks: [orphan], include: ["TAGS"] });
    expect(stopBodies()).toEqual([{ cluster: "vega", task: orphan, reason: "superseded: scan scan-reclaimed was claimed again (attempt 2)" }]);
    expect(ecs.tasks.get(orphan)).toMatchObject({ lastStatus: "STOPPED", stopCode: "UserInitiated" });
    expect(ecs.tasks.get(taskId)).toMatchObject({ desiredStatus: "RUNNING" });
    expect(taskId).not.toBe(orphan);
  });

  it("pages through ListTasks and stops every task of earlier attempts", async () => {
    const client = sdkClient();
    for (let page = 0; page < 12; page++) {
      await client.send(
        new RunTaskCommand({
          cluster: "vega",
          taskDefinition: "vega-runner:7",
          count: 10,
          launchType: "FARGATE",
          startedBy: "scan-many",
          tags: [
            { key: "vega:scan-id", value: "scan-many" },
            { key: "vega:attempt", value: String(1 + (page % 2)) },
          ],
        }),
      );
    }
    const earlier = [...ecs.tasks.keys()];

    await ecsLauncher().launch(scan("scan-many", 3));

    expect(ecs.calls("ListTasks")).toBe(2);
    expect(ecs.requests.filter((r) => r.operation === "DescribeTasks").map((r) => r.body.tasks.length)).toEqual([100, 20]);
    expect(stopBodies().map((body) => body.task).sort()).toEqual(earlier.sort());
    expect(earlier.every((arn) => ecs.tasks.get(arn)!.lastStatus === "STOPPED")).toBe(true);
  });

  it("keeps the task of the attempt being launched (a restarted worker launching it again) and another scan's", async () => {
    // "scan.x" and "scan_x" have the same startedBy; only the vega:scan-id tag tells them apart.
    const { taskId: otherScans } = await ecsLauncher().launch(scan("scan.x", 1));
    const { taskId: first } = await ecsLauncher().launch(scan("scan_x", 2));

    const { taskId: again } = await ecsLauncher().launch(scan("scan_x", 2));

    expect(again).toBe(first);
    expect(stopBodies()).toEqual([]);
    expect(ecs.tasks.get(otherScans)!.desiredStatus).toBe("RUNNING");
    expect(ecs.tasks.size).toBe(2);
  });

  it("launches nothing when it cannot tell whether an earlier attempt still runs", async () => {
    ecs.throttleNext(10, "ListTasks");
    const error = await ecsLauncher().launch(scan("scan-unknowable", 2)).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(LaunchFailedError);
    expect(error).toMatchObject({ reason: "ListTasksFailed" });
    expect(ecs.calls("ListTasks")).toBe(4);
    expect(ecs.calls("RunTask")).toBe(0);
  });

  it("asks nothing of ListTasks for a first attempt", async () => {
    await ecsLauncher().launch(scan("scan-first", 1));
    expect(ecs.calls("ListTasks")).toBe(0);
  });
});

describe("the test endpoint's ListTasks, as ECS documents it", () => {
  const list = (input: ListTasksCommandInput) => sdkClient().send(new ListTasksCommand(input));

  it("lists tasks whose desired status is RUNNING by default, STOPPED on request, none for PENDING", async () => {
    const launcher = ecsLauncher();
    const { taskId: running } = await launcher.launch(scan("list-a"));
    const { taskId: stopped } = await launcher.launch(scan("list-b"));
    await launcher.stop(stopped, "done");

    expect((await list({ cluster: "vega" })).taskArns).toEqual([running]);
    expect((await list({ cluster: "vega", desiredStatus: "STOPPED" })).taskArns).toEqual([stopped]);
    expect((await list({ cluster: "vega", desiredStatus: "PENDING" })).taskArns).toEqual([]);
    expect((await list({ cluster: "vega", startedBy: "list-a" })).taskArns).toEqual([running]);
    expect((await list({ cluster: "vega", family: "vega-runner" })).taskArns).toEqual([running]);
    expect((await list({ cluster: "other" })).taskArns).toEqual([]);
  });

  it("refuses startedBy with another filter, and maxResults outside 1 to 100", async () => {
    for (const input of [
      { cluster: "vega", startedBy: "x", family: "vega-runner" },
      { cluster: "vega", startedBy: "x", desiredStatus: "STOPPED" as const },
      { cluster: "vega", maxResults: 0 },
      { cluster: "vega", maxResults: 101 },
    ]) {
      await expect(list(input)).rejects.toMatchObject({ name: "InvalidParameterException" });
    }
  });

  it("pages with maxResults and nextToken", async () => {
    const launcher = ecsLauncher();
    const launched = [];
    for (let index = 0; index < 5; index++) launched.push((await launcher.launch(scan(`page-${index}`))).taskId);
    const first = await list({ cluster: "vega", maxResults: 2 });
    const second = await list({ cluster: "vega", maxResults: 2, nextToken: first.nextToken });
    const third = await list({ cluster: "vega", maxResults: 2, nextToken: second.nextToken });

    expect([...first.taskArns!, ...second.taskArns!, ...third.taskArns!]).toEqual(launched);
    expect(third.nextToken).toBeUndefined();
  });
});

describe("a refused launch is retried, and never starts a second task", () => {
  it("retries a throttled RunTask with the same clientToken", async () => {
    ecs.throttleNext(2, "RunTask");
    const { taskId } = await ecsLauncher().launch(scan("scan-throttled"));

    expect(taskId).toMatch(TASK_ARN);
    expect(runTaskBodies().map((b) => b.clientToken)).toEqual(["scan-throttled-1", "scan-throttled-1", "scan-throttled-1"]);
    expect(ecs.tasks.size).toBe(1);
  });

  it("keeps the clientToken when ECS started the task but the response was lost", async () => {
    ecs.serverErrorNext(1, "RunTask", { afterHandling: true });
    const { taskId } = await ecsLauncher().launch(scan("scan-lost-response"));

    expect(ecs.calls("RunTask")).toBe(2);
    expect(new Set(runTaskBodies().map((b) => b.clientToken))).toEqual(new Set(["scan-lost-response-1"]));
    expect([...ecs.tasks.keys()]).toEqual([taskId]);
  });

  it("retries placement failures and starts the task once capacity returns", async () => {
    ecs.failNextRunTasks(2, { reason: CAPACITY });
    const { taskId } = await ecsLauncher().launch(scan("scan-capacity"));

    expect([...ecs.tasks.keys()]).toEqual([taskId]);
    // A `failures` answer started nothing; ECS replays a used token's original result, so each round has its own.
    expect(runTaskBodies().map((b) => b.clientToken)).toEqual(["scan-capacity-1", "scan-capacity-1-r2", "scan-capacity-1-r3"]);
  });

  it("fails with ECS's reason and detail once the attempts are used up", async () => {
    ecs.failNextRunTasks(10, { reason: "RESOURCE:MEMORY", detail: "No container instance has 2048 MiB free" });
    const error = await ecsLauncher().launch(scan("scan-no-memory")).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(LaunchFailedError);
    expect(error).toMatchObject({ reason: "RESOURCE:MEMORY", detail: "No container instance has 2048 MiB free" });
    expect((error as Error).message).toContain("RESOURCE:MEMORY");
    expect(ecs.calls("RunTask")).toBe(4);
    expect(ecs.tasks.size).toBe(0);
  });

  it("fails with ThrottlingException when ECS throttles every try", async () => {
    ecs.throttleNext(10, "RunTask");
    const error = await ecsLauncher().launch(scan("scan-always-throttled")).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(LaunchFailedError);
    expect(error).toMatchObject({ reason: "ThrottlingException", detail: "Rate exceeded" });
    expect(ecs.calls("RunTask")).toBe(4);
  });

  it("does not retry a refusal that retrying cannot fix", async () => {
    const strict = await startEcsEndpoint({ clusters: ["vega"] });
    try {
      const error = await ecsLauncher({ cluster: "no-such-cluster", client: sdkClient(strict.url) })
        .launch(scan("scan-bad-cluster"))
        .catch((e: unknown) => e);

      expect(error).toBeInstanceOf(LaunchFailedError);
      expect(error).toMatchObject({ reason: "ClusterNotFoundException", detail: "Cluster not found." });
      expect(strict.calls("RunTask")).toBe(1);
    } finally {
      await strict.close();
    }
  });
});

describe("stopping a runner task", () => {
  it("calls StopTask with the task's cluster and the reason, cut to ECS's 255 characters", async () => {
    const launcher = ecsLauncher();
    const { taskId } = await launcher.launch(scan("scan-stop"));
    const reason = `cancelled by operator: ${"because ".repeat(60)}`;
    await launcher.stop(taskId, reason);

    const stop = ecs.requests.find((r) => r.operation === "StopTask")!;
    expect(stop.body).toEqual({ cluster: "vega", task: taskId, reason: reason.slice(0, 255) });
    const status = (await launcher.describe([taskId])).get(taskId);
    expect(status).toMatchObject({ state: "STOPPED", stopCode: "UserInitiated", stoppedReason: reason.slice(0, 255) });
  });

  it("treats a task ECS no longer knows as already stopped", async () => {
    const launcher = ecsLauncher();
    const { taskId } = await launcher.launch(scan("scan-forgotten"));
    ecs.forget(taskId);

    await expect(launcher.stop(taskId, "cleanup")).resolves.toBeUndefined();
    expect(ecs.calls("StopTask")).toBe(1);
  });

  it("retries a throttled StopTask", async () => {
    const launcher = ecsLauncher();
    const { taskId } = await launcher.launch(scan("scan-stop-throttled"));
    ecs.throttleNext(1, "StopTask");
    await launcher.stop(taskId, "cancelled");

    expect(ecs.calls("StopTask")).toBe(2);
    expect(ecs.tasks.get(taskId)!.lastStatus).toBe("STOPPED");
  });
});

describe("describing runner tasks", () => {
  it("asks at most 100 tasks per DescribeTasks and maps every ECS state", async () => {
    const launcher = ecsLauncher();
    const launched = await Promise.all(Array.from({ length: 250 }, (_, i) => launcher.launch(scan(`scan-many-${i}`))));
    const ids = launched.map((l) => l.taskId);
    const [pending, running, stopping, exited, userStopped, forgotten] = ids;
    ecs.setTaskState(running, { lastStatus: "RUNNING" });
    ecs.setTaskState(stopping, { lastStatus: "STOPPING", stopCode: "SpotInterruption" });
    ecs.setTaskState(exited, { lastStatus: "STOPPED", exitCode: 3 });
    ecs.setTaskState(userStopped, { lastStatus: "STOPPED", stopCode: "SpotInterruption", stoppedReason: "Your Spot Task was interrupted.", exitCode: 143 });
    ecs.forget(forgotten);
    const unknown = "arn:aws:ecs:us-east-1:123456789012:task/vega/00000000000000000000000000000000";

    const statuses = await launcher.describe([...ids, unknown]);

    const describeCalls = ecs.requests.filter((r) => r.operation === "DescribeTasks");
    expect(describeCalls.map((r) => r.body.tasks.length)).toEqual([100, 100, 51]);
    expect(describeCalls.every((r) => r.body.cluster === "vega")).toBe(true);
    expect(statuses.size).toBe(251);
    expect(statuses.get(pending)).toEqual({ taskId: pending, state: "PENDING" });
    expect(statuses.get(running)).toEqual({ taskId: running, state: "RUNNING" });
    // The runner may still be writing its last events while ECS stops the task.
    expect(statuses.get(stopping)).toEqual({ taskId: stopping, state: "RUNNING" });
    expect(statuses.get(exited)).toEqual({
      taskId: exited,
      state: "STOPPED",
      stopCode: "EssentialContainerExited",
      stoppedReason: "Essential container in task exited",
      exitCode: 3,
      stoppedAt: expect.any(Date),
    });
    expect(statuses.get(userStopped)).toMatchObject({
      state: "STOPPED",
      stopCode: "SpotInterruption",
      stoppedReason: "Your Spot Task was interrupted.",
      exitCode: 143,
    });
    expect(statuses.get(forgotten)).toEqual({ taskId: forgotten, state: "MISSING" });
    expect(statuses.get(unknown)).toEqual({ taskId: unknown, state: "MISSING" });
  });

  it("makes no call for no tasks", async () => {
    expect((await ecsLauncher().describe([])).size).toBe(0);
    expect(ecs.requests).toHaveLength(0);
  });

  it("retries a throttled DescribeTasks", async () => {
    const launcher = ecsLauncher();
    const { taskId } = await launcher.launch(scan("scan-describe-throttled"));
    ecs.throttleNext(2, "DescribeTasks");

    expect((await launcher.describe([taskId])).get(taskId)?.state).toBe("PENDING");
    expect(ecs.calls("DescribeTasks")).toBe(3);
  });
});

describe("the SDK's own configuration chain", () => {
  it("reaches the endpoint named by AWS_ENDPOINT_URL_ECS when no endpoint or client is given", async () => {
    const names = ["AWS_ENDPOINT_URL_ECS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"];
    const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
    process.env.AWS_ENDPOINT_URL_ECS = ecs.url;
    process.env.AWS_ACCESS_KEY_ID = "AKIDFROMENV";
    process.env.AWS_SECRET_ACCESS_KEY = "secret-from-env";
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS;
    const launcher = ecsLauncher({ client: undefined, region: "us-east-1" });
    try {
      const { taskId } = await launcher.launch(scan("scan-env-endpoint"));

      expect(taskId).toMatch(TASK_ARN);
      expect(ecs.requests[0].headers.authorization).toContain("Credential=AKIDFROMENV/");
    } finally {
      await launcher.close();
      for (const name of names) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    }
  });
});
