import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../support/server.ts";

let server: TestServer;
let operator: string;
let user: string;
beforeAll(async () => {
  server = await startTestServer();
  operator = await server.token("ops-olga", { groups: ["vega-ops"] });
  user = await server.token("mallory", { groups: ["developers"] });
});
afterAll(() => server?.close());

async function rest(method: string, path: string, token?: string) {
  const response = await fetch(`${server.url}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: response.status, headers: response.headers, body: (await response.json()) as any };
}

const PATHS = [
  ["GET", "/v1/ops/limits"],
  ["GET", "/v1/ops/workers"],
  ["GET", "/v1/ops/cleanup"],
  ["POST", "/v1/ops/cleanup"],
  ["GET", "/v1/ops/diagnostics"],
] as const;

describe("authentication and the operator scope", () => {
  it.each(PATHS)("%s %s answers 401 UNAUTHENTICATED without a token, or with a bad one", async (method, path) => {
    for (const token of [undefined, "not-a-jwt"]) {
      const response = await rest(method, path, token);
      expect(response.status).toBe(401);
      expect(response.headers.get("content-type")).toMatch(/^application\/json/);
      expect(response.body).toEqual({ errors: [{ message: expect.any(String), extensions: expect.objectContaining({ code: "UNAUTHENTICATED" }) }] });
    }
  });

  it.each(PATHS)("%s %s answers 403 FORBIDDEN to a user outside VEGA_OPS_GROUPS", async (method, path) => {
    const response = await rest(method, path, user);
    expect(response.status).toBe(403);
    expect(response.body.errors).toEqual([{ message: expect.stringMatching(/^Not allowed/), extensions: expect.objectContaining({ code: "FORBIDDEN" }) }]);
  });

  it("starts no cleanup for a refused POST", async () => {
    await rest("POST", "/v1/ops/cleanup", user);
    expect(await server.app.deps.prisma.cleanupRun.count()).toBe(0);
  });
});

describe("GET /v1/ops/limits", () => {
  it("answers every limit, as GraphQL's ops.limits does", async () => {
    const response = await rest("GET", "/v1/ops/limits", operator);
    expect(response.status).toBe(200);
    expect(response.headers.get("x-request-id")).toBeTruthy();
    expect(response.body.limits).toMatchObject({
      maxActiveScansPerUser: 4,
      maxSessionsPerWorkspace: 20,
      maxSourceBytes: "2147483648",
      maxArchiveEntries: 50000,
      maxArchiveUncompressedBytes: "5368709120",
      workerHeartbeatTtlSeconds: 60,
      scanRunningStaleSeconds: 21600,
    });
    const graphql = await server.gql(`{ ops { limits { maxActiveScansPerUser maxSourceBytes workerHeartbeatTtlSeconds } } }`, {}, operator);
    expect(response.body.limits).toMatchObject(graphql.body.data.ops.limits);
  });
});

describe("GET /v1/ops/workers", () => {
  it("answers the registry, stale workers flagged; ?includeStale=false leaves them out", async () => {
    const prisma = server.app.deps.prisma;
    const live = await prisma.worker.create({ data: { name: "a-live", host: "h1", pid: 1, version: "1", capacity: 2 } });
    const stale = await prisma.worker.create({
      data: { name: "b-stale", host: "h2", pid: 2, version: "1", capacity: 2, lastHeartbeatAt: new Date(Date.now() - 3600_000) },
    });
    try {
      const all = await rest("GET", "/v1/ops/workers", operator);
      expect(all.status).toBe(200);
      expect(all.body.workers.map((worker: { id: string; stale: boolean }) => [worker.id, worker.stale])).toEqual([
        [live.id, false],
        [stale.id, true],
      ]);
      expect(all.body.workers[1]).toMatchObject({ name: "b-stale", host: "h2", pid: 2, capacity: 2, deregisteredAt: null, lastHeartbeatAt: expect.any(String) });

      const fresh = await rest("GET", "/v1/ops/workers?includeStale=false", operator);
      expect(fresh.body.workers.map((worker: { id: string }) => worker.id)).toEqual([live.id]);
    } finally {
      await prisma.worker.deleteMany({ where: { id: { in: [live.id, stale.id] } } });
    }
  });

  it("refuses a malformed parameter with 400 BAD_USER_INPUT", async () => {
    const response = await rest("GET", "/v1/ops/workers?includeStale=maybe", operator);
    expect(response.status).toBe(400);
    expect(response.body.errors[0]).toMatchObject({ message: expect.stringContaining("includeStale"), extensions: { code: "BAD_USER_INPUT" } });
  });
});

describe("/v1/ops/cleanup", () => {
  it("POST starts a run (202) and GET shows it running, then finished, with its counts", async () => {
    const before = await rest("GET", "/v1/ops/cleanup", operator);
    expect(before.status).toBe(200);
    expect(before.body).toEqual({ cleanup: { running: null, lastRun: null, nextScheduledAt: null, intervalSeconds: 0, runs: [] } });

    const iterator = server.app.deps.pubsub.subscribe("cleanupRunUpdated")[Symbol.asyncIterator]();
    const firstEvent = iterator.next();
    const started = await rest("POST", "/v1/ops/cleanup?dryRun=true", operator);
    expect(started.status).toBe(202);
    expect(started.body.cleanupRun).toMatchObject({
      status: "RUNNING",
      dryRun: true,
      trigger: "OPERATOR",
      triggeredBy: "ops-olga",
      bytesFreed: "0",
      finishedAt: null,
    });
    const id = started.body.cleanupRun.id;
    // Its start, then its finish.
    await firstEvent;
    await iterator.next();
    await iterator.return?.();

    const after = await rest("GET", "/v1/ops/cleanup", operator);
    expect(after.body.cleanup).toMatchObject({
      running: null,
      lastRun: { id, status: "SUCCEEDED", counts: { artifacts: 0, orphanFiles: 0, uploadTemps: 0, sessions: 0, workers: 0 }, bytesFreed: "0" },
    });
    expect(after.body.cleanup.runs.map((run: { id: string }) => run.id)).toEqual([id]);

    const [audit] = await server.app.deps.prisma.auditEntry.findMany({ where: { action: "cleanup.trigger" } });
    expect(audit).toMatchObject({ actor: "ops-olga", target: `CleanupRun:${id}`, details: { dryRun: true, outcome: "started" } });
  });

  it("refuses ?dryRun=perhaps with 400", async () => {
    const response = await rest("POST", "/v1/ops/cleanup?dryRun=perhaps", operator);
    expect(response.status).toBe(400);
    expect(response.body.errors[0].extensions.code).toBe("BAD_USER_INPUT");
  });
});

describe("GET /v1/ops/diagnostics", () => {
  it("answers the runbook's findings ([] on a healthy system)", async () => {
    const response = await rest("GET", "/v1/ops/diagnostics", operator);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ diagnostics: [] });
  });
});

describe("other paths and methods", () => {
  it("answers 404 NOT_FOUND, with Allow for a known path", async () => {
    const wrongMethod = await rest("DELETE", "/v1/ops/cleanup", operator);
    expect(wrongMethod.status).toBe(404);
    expect(wrongMethod.headers.get("allow")).toBe("GET, POST");
    expect(wrongMethod.body.errors[0].extensions.code).toBe("NOT_FOUND");
    const unknown = await rest("GET", "/v1/ops/nothing", operator);
    expect(unknown.status).toBe(404);
    expect(unknown.body.errors[0].extensions.code).toBe("NOT_FOUND");
  });
});
