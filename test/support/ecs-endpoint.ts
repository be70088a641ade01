/**
 * A stand-in for the ECS API, speaking the JSON 1.1 protocol exactly as the real
 * `@aws-sdk/client-ecs` sends it: POST `/`, `X-Amz-Target:
 * AmazonEC2ContainerServiceV20141113.<Operation>`, `Content-Type:
 * application/x-amz-json-1.1`, timestamps as epoch seconds, errors as JSON with
 * `__type` and `message`. Point a client at it with `endpoint: ecs.url` or with
 * `AWS_ENDPOINT_URL_ECS`; the signature is not checked.
 *
 * Operations: RunTask, DescribeTasks, StopTask, ListTasks. Behaviour copied from
 * ECS where the launcher depends on it:
 * - RunTask honours `clientToken` per cluster for as long as the endpoint lives:
 *   the same token with the same parameters returns the ORIGINAL result (the same
 *   tasks, or the same `failures`) and starts nothing; the same token with other
 *   parameters is a ConflictException. ECS documents "the original request's
 *   result is returned"; replaying `failures` too is the strict reading of that.
 * - DescribeTasks takes 1..100 tasks (InvalidParameterException otherwise);
 *   unknown or forgotten ones come back in `failures` with reason MISSING.
 * - StopTask of an unknown task is InvalidParameterException "The referenced task
 *   was not found."; stopping a stopped task returns it unchanged.
 * - `startedBy` (128 of [A-Za-z0-9_/-]), `clientToken` (64 of ASCII 33-126) and
 *   the StopTask `reason` (255) are validated as ECS does.
 */
import { randomBytes, randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

const TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113.";
const REGION = "us-east-1";
const ACCOUNT = "123456789012";
const DESCRIBE_TASKS_LIMIT = 100;

export type EcsTaskLastStatus =
  | "PROVISIONING"
  | "PENDING"
  | "ACTIVATING"
  | "RUNNING"
  | "DEACTIVATING"
  | "STOPPING"
  | "DEPROVISIONING"
  | "STOPPED";

export interface EcsKeyValue {
  name: string;
  value: string;
}

export interface EcsContainer {
  containerArn: string;
  taskArn: string;
  name: string;
  lastStatus: EcsTaskLastStatus;
  exitCode?: number;
  reason?: string;
  networkInterfaces: Array<{ attachmentId: string; privateIpv4Address: string }>;
}

export interface EcsFailure {
  arn?: string;
  reason: string;
  detail?: string;
}

/** A task as the endpoint holds it: the fields of ECS's `Task`, with Dates for timestamps. */
export interface EcsTask {
  taskArn: string;
  clusterArn: string;
  taskDefinitionArn: string;
  lastStatus: EcsTaskLastStatus;
  desiredStatus: "RUNNING" | "STOPPED";
  launchType?: string;
  capacityProviderName?: string;
  platformVersion?: string;
  availabilityZone: string;
  group: string;
  startedBy?: string;
  tags: Array<{ key: string; value?: string }>;
  overrides: Record<string, unknown>;
  containers: EcsContainer[];
  attachments: Array<Record<string, unknown>>;
  cpu?: string;
  memory?: string;
  version: number;
  createdAt: Date;
  pullStartedAt?: Date;
  pullStoppedAt?: Date;
  startedAt?: Date;
  stoppingAt?: Date;
  executionStoppedAt?: Date;
  stoppedAt?: Date;
  stopCode?: string;
  stoppedReason?: string;
  /** The RunTask request that started it (not part of ECS's shape). */
  runTaskRequest: Record<string, any>;
}

export interface EcsRequest {
  operation: string;
  body: any;
  headers: http.IncomingHttpHeaders;
  at: Date;
}

export interface TaskStateChange {
  lastStatus: EcsTaskLastStatus;
  /** Default for STOPPED: EssentialContainerExited. */
  stopCode?: string;
  /** Default for STOPPED: "Essential container in task exited". */
  stoppedReason?: string;
  /** Set on every container of the task. */
  exitCode?: number;
}

export type RunTaskHandler = (task: EcsTask, request: Record<string, any>) => void | Promise<void>;
export type StopTaskHandler = (task: EcsTask, reason: string | undefined) => void | Promise<void>;

export interface EcsEndpointOptions {
  /** Clusters that exist; others answer ClusterNotFoundException. Default: every cluster exists. */
  clusters?: string[];
  /** lastStatus of a task RunTask just started. Default PROVISIONING (Fargate's first state). */
  initialStatus?: EcsTaskLastStatus;
}

export interface EcsEndpoint {
  url: string;
  /** Every request received, throttled ones included, in order. */
  readonly requests: EcsRequest[];
  /** Tasks by ARN. */
  readonly tasks: Map<string, EcsTask>;
  setTaskState(taskArn: string, change: TaskStateChange): EcsTask;
  /** ECS no longer knows the task (as an hour after it stopped): it comes back MISSING. */
  forget(taskArn: string): void;
  /** The next `count` RunTask calls with a new clientToken start nothing and return this failure. */
  failNextRunTasks(count: number, failure: EcsFailure): void;
  /** The next `count` requests (of `operation`, when given) answer ThrottlingException. */
  throttleNext(count: number, operation?: string): void;
  /**
   * The next `count` requests (of `operation`, when given) answer ServerException (HTTP 500).
   * With `afterHandling`, the request takes effect first (a RunTask starts its task) and only
   * the response is lost: what a client sees when a connection drops after ECS acted.
   */
  serverErrorNext(count: number, operation?: string, options?: { afterHandling?: boolean }): void;
  /** Requests received for one operation. */
  calls(operation: string): number;
  /** Called for each task RunTask starts, before the response is sent; returns an unsubscribe. */
  onRunTask(handler: RunTaskHandler): () => void;
  /** Called when StopTask stops a running task; returns an unsubscribe. */
  onStopTask(handler: StopTaskHandler): () => void;
  /** Forgets tasks, tokens, requests, queued failures and handlers. */
  reset(): void;
  close(): Promise<void>;
}

class EcsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const clusterName = (cluster: unknown): string => {
  if (typeof cluster !== "string" || cluster === "") return "default";
  return cluster.startsWith("arn:") ? cluster.slice(cluster.indexOf("cluster/") + "cluster/".length) : cluster;
};
const clusterArnOf = (name: string) => `arn:aws:ecs:${REGION}:${ACCOUNT}:cluster/${name}`;
const taskIdOf = (taskArn: string) => taskArn.slice(taskArn.lastIndexOf("/") + 1);
const epochSeconds = (date: Date) => date.getTime() / 1000;

/** Stable JSON for comparing two RunTask requests (key order does not matter). */
const canonical = (value: unknown): string => {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
};

interface QueuedError {
  remaining: number;
  operation?: string;
  afterHandling: boolean;
  make: () => EcsError;
}

interface TokenRecord {
  fingerprint: string;
  taskArns: string[];
  failures: EcsFailure[];
}

export async function startEcsEndpoint(options: EcsEndpointOptions = {}): Promise<EcsEndpoint> {
  const requests: EcsRequest[] = [];
  const tasks = new Map<string, EcsTask>();
  const tokens = new Map<string, TokenRecord>();
  let queuedFailures: Array<{ remaining: number; failure: EcsFailure }> = [];
  let queuedErrors: QueuedError[] = [];
  let runTaskHandlers: RunTaskHandler[] = [];
  let stopTaskHandlers: StopTaskHandler[] = [];
  const knownClusters = options.clusters ? new Set(options.clusters.map(clusterName)) : undefined;

  const requireCluster = (cluster: unknown): string => {
    const name = clusterName(cluster);
    if (knownClusters && !knownClusters.has(name)) throw new EcsError("ClusterNotFoundException", "Cluster not found.");
    return name;
  };

  const findTask = (cluster: string, reference: string): EcsTask | undefined => {
    const id = taskIdOf(reference);
    const task = tasks.get(reference) ?? tasks.get(`arn:aws:ecs:${REGION}:${ACCOUNT}:task/${cluster}/${id}`);
    return task && task.clusterArn === clusterArnOf(cluster) ? task : undefined;
  };

  const toWire = (task: EcsTask, withTags: boolean) => {
    const { runTaskRequest: _request, tags, ...fields } = task;
    const wire: Record<string, unknown> = { ...fields, containers: task.containers.map((c) => ({ ...c })) };
    for (const key of ["createdAt", "pullStartedAt", "pullStoppedAt", "startedAt", "stoppingAt", "executionStoppedAt", "stoppedAt"] as const) {
      const value = task[key];
      wire[key] = value ? epochSeconds(value) : undefined;
    }
    if (withTags) wire.tags = tags;
    return JSON.parse(JSON.stringify(wire));
  };

  const applyState = (task: EcsTask, change: TaskStateChange) => {
    const now = new Date();
    task.version += 1;
    task.lastStatus = change.lastStatus;
    if (change.lastStatus === "RUNNING") {
      task.pullStartedAt ??= now;
      task.pullStoppedAt ??= now;
      task.startedAt ??= now;
    }
    if (["DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"].includes(change.lastStatus)) {
      task.desiredStatus = "STOPPED";
      task.stoppingAt ??= now;
      task.stopCode = change.stopCode ?? task.stopCode ?? "EssentialContainerExited";
      task.stoppedReason = change.stoppedReason ?? task.stoppedReason ?? "Essential container in task exited";
    }
    if (change.lastStatus === "STOPPED") {
      task.executionStoppedAt ??= now;
      task.stoppedAt ??= now;
    }
    const containerStatus: EcsTaskLastStatus =
      change.lastStatus === "STOPPED" || change.lastStatus === "DEPROVISIONING"
        ? "STOPPED"
        : change.lastStatus === "RUNNING" || change.lastStatus === "DEACTIVATING" || change.lastStatus === "STOPPING"
          ? "RUNNING"
          : "PENDING";
    for (const container of task.containers) {
      container.lastStatus = containerStatus;
      if (change.exitCode !== undefined) container.exitCode = change.exitCode;
    }
  };

  const createTask = (cluster: string, request: Record<string, any>): EcsTask => {
    const taskArn = `arn:aws:ecs:${REGION}:${ACCOUNT}:task/${cluster}/${randomBytes(16).toString("hex")}`;
    const definition = String(request.taskDefinition);
    const taskDefinitionArn = definition.startsWith("arn:")
      ? definition
      : `arn:aws:ecs:${REGION}:${ACCOUNT}:task-definition/${definition.includes(":") ? definition : `${definition}:1`}`;
    const family = taskDefinitionArn.slice(taskDefinitionArn.lastIndexOf("/") + 1).split(":")[0];
    const overrides = request.overrides ?? {};
    const containerNames: string[] = (overrides.containerOverrides ?? []).map((o: { name: string }) => o.name);
    const strategy: Array<{ capacityProvider: string }> | undefined = request.capacityProviderStrategy;
    const launchType: string | undefined = strategy?.length ? undefined : (request.launchType ?? "EC2");
    const awsvpc = request.networkConfiguration?.awsvpcConfiguration;
    const attachmentId = randomUUID();
    const fargate = launchType === "FARGATE" || (strategy ?? []).some((s) => s.capacityProvider.startsWith("FARGATE"));
    return {
      taskArn,
      clusterArn: clusterArnOf(cluster),
      taskDefinitionArn,
      lastStatus: options.initialStatus ?? "PROVISIONING",
      desiredStatus: "RUNNING",
      launchType: launchType ?? (fargate ? "FARGATE" : undefined),
      capacityProviderName: strategy?.[0]?.capacityProvider,
      platformVersion: fargate ? "1.4.0" : undefined,
      availabilityZone: `${REGION}a`,
      group: request.group ?? `family:${family}`,
      startedBy: request.startedBy,
      tags: request.tags ?? [],
      overrides: { containerOverrides: [], inferenceAcceleratorOverrides: [], ...overrides },
      containers: (containerNames.length > 0 ? containerNames : ["main"]).map((name) => ({
        containerArn: `arn:aws:ecs:${REGION}:${ACCOUNT}:container/${cluster}/${taskIdOf(taskArn)}/${randomUUID()}`,
        taskArn,
        name,
        lastStatus: "PENDING",
        networkInterfaces: awsvpc ? [{ attachmentId, privateIpv4Address: "10.0.1.23" }] : [],
      })),
      attachments: awsvpc
        ? [
            {
              id: attachmentId,
              type: "ElasticNetworkInterface",
              status: "PRECREATED",
              details: [{ name: "subnetId", value: awsvpc.subnets?.[0] }],
            },
          ]
        : [],
      cpu: fargate ? "1024" : undefined,
      memory: fargate ? "2048" : undefined,
      version: 1,
      createdAt: new Date(),
      runTaskRequest: request,
    };
  };

  const invoke = (what: string, call: () => void | Promise<void>) => {
    const report = (error: unknown) => console.error(`ecs-endpoint: ${what} handler failed`, error);
    try {
      Promise.resolve(call()).catch(report);
    } catch (error) {
      report(error);
    }
  };

  const validateRunTask = (body: Record<string, any>) => {
    if (typeof body.taskDefinition !== "string" || body.taskDefinition === "") {
      throw new EcsError("ClientException", "TaskDefinition can not be blank.");
    }
    const count = body.count ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 10) {
      throw new EcsError("InvalidParameterException", "instanceCount should be between 1-10 for RunTask.");
    }
    if (body.launchType && body.capacityProviderStrategy?.length) {
      throw new EcsError("InvalidParameterException", "Specifying both a launch type and capacity provider strategy is not supported.");
    }
    if (body.clientToken !== undefined && !/^[\x21-\x7e]{1,64}$/.test(body.clientToken)) {
      throw new EcsError("InvalidParameterException", "clientToken must be 1-64 ASCII characters in the range 33-126.");
    }
    if (body.startedBy !== undefined && !/^[A-Za-z0-9_/-]{1,128}$/.test(body.startedBy)) {
      throw new EcsError("InvalidParameterException", "startedBy must be up to 128 letters, numbers, hyphens, forward slashes and underscores.");
    }
    for (const tag of body.tags ?? []) {
      const allowed = /^[\p{L}\p{Z}\p{N}_.:/=+@-]*$/u;
      const value = tag.value ?? "";
      if (typeof tag.key !== "string" || tag.key.length === 0 || tag.key.length > 128 || value.length > 256) {
        throw new EcsError("InvalidParameterException", "Tag keys must be 1-128 characters and values at most 256.");
      }
      if (!allowed.test(tag.key) || !allowed.test(value) || /^aws:/i.test(tag.key)) {
        throw new EcsError("InvalidParameterException", "Tags may only contain letters, numbers, spaces and _ . : / = + - @, and not begin with aws:.");
      }
    }
  };

  const runTask = (body: Record<string, any>) => {
    const cluster = requireCluster(body.cluster);
    validateRunTask(body);
    const { clientToken, ...parameters } = body;
    const fingerprint = canonical(parameters);
    const tokenKey = clientToken === undefined ? undefined : `${cluster}\n${clientToken}`;
    const previous = tokenKey ? tokens.get(tokenKey) : undefined;
    if (previous) {
      if (previous.fingerprint !== fingerprint) {
        throw new EcsError(
          "ConflictException",
          "The RunTask request could not be processed due to conflicts. The provided clientToken is already in use with a different parameter.",
        );
      }
      const replayed = previous.taskArns.flatMap((arn) => (tasks.has(arn) ? [toWire(tasks.get(arn)!, true)] : []));
      return { tasks: replayed, failures: previous.failures };
    }

    const count: number = body.count ?? 1;
    const queued = queuedFailures[0];
    if (queued) {
      queued.remaining -= 1;
      if (queued.remaining <= 0) queuedFailures.shift();
      const failures = Array.from({ length: count }, () => ({ ...queued.failure }));
      if (tokenKey) tokens.set(tokenKey, { fingerprint, taskArns: [], failures });
      return { tasks: [], failures };
    }

    const started = Array.from({ length: count }, () => createTask(cluster, body));
    for (const task of started) tasks.set(task.taskArn, task);
    if (tokenKey) tokens.set(tokenKey, { fingerprint, taskArns: started.map((t) => t.taskArn), failures: [] });
    // State changes a handler makes synchronously show in this response; its async work carries on after it.
    for (const task of started) for (const handler of runTaskHandlers) invoke("onRunTask", () => handler(task, body));
    return { tasks: started.map((task) => toWire(task, true)), failures: [] };
  };

  const describeTasks = (body: Record<string, any>) => {
    const cluster = requireCluster(body.cluster);
    const references: unknown = body.tasks;
    if (!Array.isArray(references) || references.length === 0) {
      throw new EcsError("InvalidParameterException", "Tasks cannot be empty.");
    }
    if (references.length > DESCRIBE_TASKS_LIMIT) {
      throw new EcsError("InvalidParameterException", `Tasks cannot be longer than ${DESCRIBE_TASKS_LIMIT}.`);
    }
    const withTags = Array.isArray(body.include) && body.include.includes("TAGS");
    const found: unknown[] = [];
    const failures: EcsFailure[] = [];
    for (const reference of references as string[]) {
      const task = findTask(cluster, reference);
      if (task) found.push(toWire(task, withTags));
      else failures.push({ arn: reference, reason: "MISSING" });
    }
    return { tasks: found, failures };
  };

  const stopTask = (body: Record<string, any>) => {
    const cluster = requireCluster(body.cluster);
    if (typeof body.task !== "string" || body.task === "") throw new EcsError("InvalidParameterException", "Task can not be blank.");
    if (typeof body.reason === "string" && body.reason.length > 255) {
      throw new EcsError("InvalidParameterException", "Reason cannot be longer than 255 characters.");
    }
    const task = findTask(cluster, body.task);
    if (!task) throw new EcsError("InvalidParameterException", "The referenced task was not found.");
    if (task.lastStatus !== "STOPPED") {
      applyState(task, {
        lastStatus: "STOPPED",
        stopCode: "UserInitiated",
        stoppedReason: body.reason ?? "Task stopped by user",
        // A process ended by the SIGTERM that StopTask sends exits 128 + 15.
        exitCode: 143,
      });
      for (const handler of stopTaskHandlers) invoke("onStopTask", () => handler(task, body.reason));
    }
    return { task: toWire(task, false) };
  };

  /**
   * ListTasks as ECS documents it: tasks whose desired status is `desiredStatus`
   * (default RUNNING; PENDING is accepted and matches nothing, since ECS never
   * sets it), filtered by family, launch type, service (the task's group) or
   * container instance; `startedBy` "must be the only filter that you use";
   * pages of `maxResults` (1 to 100, default 100) with an opaque `nextToken`.
   */
  const listTasks = (body: Record<string, any>) => {
    const cluster = requireCluster(body.cluster);
    if (body.desiredStatus !== undefined && !["RUNNING", "PENDING", "STOPPED"].includes(body.desiredStatus)) {
      throw new EcsError("InvalidParameterException", "desiredStatus must be one of RUNNING, PENDING, STOPPED.");
    }
    const otherFilters = ["family", "serviceName", "containerInstance", "launchType", "desiredStatus"].filter((name) => body[name] !== undefined);
    if (body.startedBy !== undefined && otherFilters.length > 0) {
      throw new EcsError("InvalidParameterException", `startedBy must be the only filter; ${otherFilters.join(", ")} given too.`);
    }
    if (body.maxResults !== undefined && (!Number.isInteger(body.maxResults) || body.maxResults < 1 || body.maxResults > 100)) {
      throw new EcsError("InvalidParameterException", "maxResults must be between 1 and 100.");
    }
    let start = 0;
    if (body.nextToken !== undefined) {
      start = Number(Buffer.from(String(body.nextToken), "base64url").toString());
      if (!Number.isSafeInteger(start) || start < 0) throw new EcsError("InvalidParameterException", "Invalid nextToken.");
    }
    const desiredStatus = body.desiredStatus ?? "RUNNING";
    const family: string | undefined = body.family;
    const matching = [...tasks.values()].filter(
      (task) =>
        task.clusterArn === clusterArnOf(cluster) &&
        task.desiredStatus === desiredStatus &&
        (body.startedBy === undefined || task.startedBy === body.startedBy) &&
        (family === undefined || task.taskDefinitionArn.includes(`task-definition/${family}:`)) &&
        (body.launchType === undefined || task.launchType === body.launchType) &&
        (body.serviceName === undefined || task.group === `service:${body.serviceName}`) &&
        // Fargate tasks have no container instance: that filter matches none of them.
        body.containerInstance === undefined,
    );
    const pageSize = body.maxResults ?? 100;
    const page = matching.slice(start, start + pageSize);
    const nextToken = start + pageSize < matching.length ? Buffer.from(String(start + pageSize)).toString("base64url") : undefined;
    return { taskArns: page.map((task) => task.taskArn), nextToken };
  };

  const operations: Record<string, (body: Record<string, any>) => unknown> = {
    RunTask: runTask,
    DescribeTasks: describeTasks,
    StopTask: stopTask,
    ListTasks: listTasks,
  };

  const takeQueuedError = (operation: string): QueuedError | undefined => {
    const index = queuedErrors.findIndex((queued) => queued.operation === undefined || queued.operation === operation);
    if (index < 0) return undefined;
    const queued = queuedErrors[index];
    queued.remaining -= 1;
    if (queued.remaining <= 0) queuedErrors.splice(index, 1);
    return queued;
  };

  const send = (res: http.ServerResponse, status: number, payload: unknown) => {
    const text = JSON.stringify(payload);
    res.writeHead(status, {
      "content-type": "application/x-amz-json-1.1",
      "content-length": Buffer.byteLength(text),
      "x-amzn-requestid": randomUUID(),
    });
    res.end(text);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const target = String(req.headers["x-amz-target"] ?? "");
    const operation = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : target;
    let body: any;
    try {
      body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
    } catch {
      requests.push({ operation, body: undefined, headers: req.headers, at: new Date() });
      send(res, 400, { __type: "SerializationException", message: "Request body is not valid JSON." });
      return;
    }
    requests.push({ operation, body, headers: req.headers, at: new Date() });

    try {
      if (req.method !== "POST" || !target.startsWith(TARGET_PREFIX) || !operations[operation]) {
        throw new EcsError("UnknownOperationException", `Unknown operation ${JSON.stringify(target)}.`);
      }
      if (!String(req.headers["content-type"] ?? "").startsWith("application/x-amz-json-1.1")) {
        throw new EcsError("SerializationException", "Expected Content-Type application/x-amz-json-1.1.");
      }
      const queued = takeQueuedError(operation);
      if (queued && !queued.afterHandling) throw queued.make();
      const result = await operations[operation](body);
      if (queued) throw queued.make();
      send(res, 200, result);
    } catch (error) {
      if (error instanceof EcsError) send(res, error.status, { __type: error.type, message: error.message });
      else send(res, 500, { __type: "ServerException", message: error instanceof Error ? error.message : String(error) });
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((error) => {
      if (!res.headersSent) send(res, 500, { __type: "ServerException", message: String(error) });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    tasks,
    setTaskState(taskArn, change) {
      const task = tasks.get(taskArn);
      if (!task) throw new Error(`ecs-endpoint: no task ${taskArn}`);
      applyState(task, change);
      return task;
    },
    forget(taskArn) {
      tasks.delete(taskArn);
    },
    failNextRunTasks(count, failure) {
      if (count > 0) queuedFailures.push({ remaining: count, failure });
    },
    throttleNext(count, operation) {
      if (count > 0) {
        queuedErrors.push({ remaining: count, operation, afterHandling: false, make: () => new EcsError("ThrottlingException", "Rate exceeded") });
      }
    },
    serverErrorNext(count, operation, { afterHandling = false } = {}) {
      if (count > 0) {
        queuedErrors.push({
          remaining: count,
          operation,
          afterHandling,
          make: () => new EcsError("ServerException", "Service Unavailable. Please try again later.", 500),
        });
      }
    },
    calls(operation) {
      return requests.filter((request) => request.operation === operation).length;
    },
    onRunTask(handler) {
      runTaskHandlers.push(handler);
      return () => {
        runTaskHandlers = runTaskHandlers.filter((h) => h !== handler);
      };
    },
    onStopTask(handler) {
      stopTaskHandlers.push(handler);
      return () => {
        stopTaskHandlers = stopTaskHandlers.filter((h) => h !== handler);
      };
    },
    reset() {
      requests.length = 0;
      tasks.clear();
      tokens.clear();
      queuedFailures = [];
      queuedErrors = [];
      runTaskHandlers = [];
      stopTaskHandlers = [];
    },
    async close() {
      // The SDK keeps connections alive; without this, close() waits for them to time out.
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
}
