import type { WorkerEventPayload, WorkerSnapshot } from "../pubsub.ts";
import { deregisterWorker, listWorkers, recordHeartbeat, registerWorker, workerLiveness } from "../services/workers.ts";
import { builder } from "./builder.ts";
import { OpsRef } from "./ops.ts";

// Worker is backed by a JSON-safe snapshot (not a Prisma row), so a subscription
// event resolves from its payload alone: no database read per subscriber.
export const WorkerRef = builder.objectRef<WorkerSnapshot>("Worker").implement({
  description: "A worker process in the registry.",
  fields: (t) => ({
    id: t.exposeID("id"),
    name: t.exposeString("name"),
    host: t.exposeString("host"),
    pid: t.exposeInt("pid"),
    version: t.exposeString("version"),
    capacity: t.exposeInt("capacity", { description: "Scans it runs at once." }),
    activeScans: t.exposeInt("activeScans", { description: "Scans it held at its last heartbeat." }),
    draining: t.exposeBoolean("draining", { description: "It takes no new scans (it is stopping)." }),
    startedAt: t.field({ type: "DateTime", resolve: (worker) => worker.startedAt }),
    lastHeartbeatAt: t.field({ type: "DateTime", resolve: (worker) => worker.lastHeartbeatAt }),
    deregisteredAt: t.field({ type: "DateTime", nullable: true, resolve: (worker) => worker.deregisteredAt }),
    secondsSinceHeartbeat: t.int({
      description: "Whole seconds since its last heartbeat, when read.",
      resolve: (worker, _args, ctx) => workerLiveness(worker.lastHeartbeatAt, ctx.deps.config.workerHeartbeatTtlSeconds).secondsSinceHeartbeat,
    }),
    stale: t.boolean({
      description: "Its last heartbeat is older than VEGA_WORKER_HEARTBEAT_TTL_SECONDS, when read.",
      resolve: (worker, _args, ctx) => workerLiveness(worker.lastHeartbeatAt, ctx.deps.config.workerHeartbeatTtlSeconds).stale,
    }),
  }),
});

const WorkerEventKindEnum = builder.enumType("WorkerEventKind", {
  values: {
    REGISTERED: { description: "A worker joined the registry." },
    HEARTBEAT: { description: "A worker reported in." },
    DRAINING: { description: "A worker's first heartbeat saying it takes no new scans." },
    DEREGISTERED: { description: "A worker left the registry." },
    STALE: { description: "A worker's last heartbeat got older than VEGA_WORKER_HEARTBEAT_TTL_SECONDS (reported once)." },
  } as const,
});

const WorkerEventRef = builder.objectRef<WorkerEventPayload>("WorkerEvent").implement({
  fields: (t) => ({
    kind: t.field({ type: WorkerEventKindEnum, resolve: (event) => event.kind }),
    at: t.field({ type: "DateTime", resolve: (event) => event.at }),
    worker: t.field({ type: WorkerRef, description: "The worker as it was when the event happened.", resolve: (event) => event.worker }),
  }),
});

const RegisterWorkerPayloadRef = builder
  .objectRef<{ worker: WorkerSnapshot; token: string | null }>("RegisterWorkerPayload")
  .implement({
    fields: (t) => ({
      worker: t.field({ type: WorkerRef, resolve: (payload) => payload.worker }),
      token: t.exposeString("token", {
        nullable: true,
        description:
          "A worker-session token bound to this worker: send it with every later call. " +
          "Null when the server verifies tokens against a JWKS and cannot mint them.",
      }),
    }),
  });

builder.objectField(OpsRef, "workers", (t) =>
  t.field({
    type: [WorkerRef],
    description: "Registered workers (not deregistered), by name.",
    authScopes: { operator: true },
    args: { includeStale: t.arg.boolean({ required: false, defaultValue: true }) },
    resolve: (_ops, args, ctx) => listWorkers(ctx.deps, { includeStale: args.includeStale ?? true }),
  }),
);

const RegisterWorkerInput = builder.inputType("RegisterWorkerInput", {
  fields: (t) => ({
    name: t.string({ required: true }),
    host: t.string({ required: true }),
    pid: t.int({ required: true }),
    version: t.string({ required: true }),
    capacity: t.int({ required: true }),
  }),
});

const WorkerHeartbeatInput = builder.inputType("WorkerHeartbeatInput", {
  fields: (t) => ({
    activeScans: t.int({ required: true }),
    draining: t.boolean({ required: true }),
  }),
});

builder.mutationField("registerWorker", (t) =>
  t.field({
    type: RegisterWorkerPayloadRef,
    authScopes: { worker: true },
    args: { input: t.arg({ type: RegisterWorkerInput, required: true }) },
    resolve: (_root, { input }, ctx) => registerWorker(ctx.deps, ctx.viewer!, input),
  }),
);

builder.mutationField("workerHeartbeat", (t) =>
  t.field({
    type: WorkerRef,
    description: "Reports a worker alive. A token bound to another worker answers FORBIDDEN; a deregistered worker CONFLICT.",
    authScopes: { worker: true },
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: WorkerHeartbeatInput, required: true }) },
    resolve: (_root, { id, input }, ctx) => recordHeartbeat(ctx.deps, ctx.viewer!, { workerId: String(id), report: input }),
  }),
);

builder.mutationField("deregisterWorker", (t) =>
  t.field({
    type: WorkerRef,
    authScopes: { worker: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => deregisterWorker(ctx.deps, ctx.viewer!, String(id)),
  }),
);

builder.subscriptionField("workerHeartbeats", (t) =>
  t.field({
    type: WorkerEventRef,
    description: "Every registry event: registrations, heartbeats, draining, deregistrations and stale reports. Operators only.",
    authScopes: { operator: true },
    subscribe: (_root, _args, ctx) => ctx.deps.pubsub.subscribe("workerEvent"),
    resolve: (event) => event,
  }),
);
