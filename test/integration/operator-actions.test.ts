/**
 * What operators do to the fleet: pause and resume claiming (a real worker
 * claims nothing while paused, then runs the scan), retry a cancelled scan,
 * cancel a user's stuck scans in one call (their quota is free at once),
 * search every scan and read the queue's summary; each action audited, each
 * refused to non-operators with the right code, and the REST equivalents.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApiGate, type ApiGate } from "../support/api-gate.ts";
import { stopProcess } from "../support/cli.ts";
import { connectWs, watchSubscriptions, type WsConnection } from "../support/ws.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { startWorkerProcess, waitFor, waitForScanStatus, type WorkerProcess } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

let server: TestServer;
let gate: ApiGate;
let operator: string;
let alice: string;
let bob: string;
let archive: Buffer;
const workers: WorkerProcess[] = [];
const connections: WsConnection[] = [];

const QUOTA = 3;

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: String(QUOTA) });
  gate = await startApiGate(server.url);
  operator = await server.token("ops-olga", { groups: ["vega-ops"] });
  alice = await server.token("alice");
  bob = await server.token("bob");
  archive = await buildZip([{ name: "README.md", data: "# project\n" }]);
});
afterAll(async () => {
  await Promise.all(workers.splice(0).map((worker) => stopProcess(worker.child, "SIGKILL")));
  await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
  await gate?.close();
  await server?.close();
});

async function submit(token: string, label: string): Promise<string> {
  const response = await submitScan(server, token, archive, { label });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body.data.submitScan.scan.id;
}

const PAUSE = `mutation ($reason: String!) { pauseClaims(reason: $reason) { paused reason since by } }`;
const RESUME = `mutation { resumeClaims { paused reason since by } }`;
const CLAIMS_STATE = `{ ops { claimsPaused { paused reason since by } diagnostics { code summary } } }`;
const RETRY = `mutation ($id: ID!) { retryScan(id: $id) { id status owner { id } source { id } retryOf { id status } } }`;
const CANCEL_SCAN = `mutation ($id: ID!) { cancelScan(id: $id) { id status } }`;
const CANCEL_SCANS = `mutation ($filter: ScanCancelFilter!) { cancelScans(filter: $filter) { cancelled scanIds } }`;
const QUOTA_OF = `{ viewer { quota { activeScans remaining } } }`;
const OPS_SCANS = `query ($filter: OpsScanFilter, $first: Int, $after: String) {
  ops { scans(filter: $filter, first: $first, after: $after) { edges { node { id status owner { id } } } pageInfo { hasNextPage endCursor } } }
}`;
const SUMMARY = `{ ops { summary { counts { status count } oldestQueuedAgeSeconds throughput { bucketStart finished failed } } } }`;
const AUDIT = `{ ops { auditLog(first: 50) { edges { node { actor action target details } } } } }`;

const claimCalls = () => gate.calls.filter((call) => call.operationName === "ClaimScans").length;
const heartbeatCalls = () => gate.calls.filter((call) => call.operationName === "WorkerHeartbeat").length;

describe("pausing claims", () => {
  it("a live worker claims nothing for several polls while paused; after resume the scan succeeds", async () => {
    const worker = await startWorkerProcess("pause-worker", {
      VEGA_API_URL: gate.graphqlUrl,
      VEGA_WORKER_TOKEN: await server.token("worker-fleet", { scope: "worker" }),
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "30",
    });
    workers.push(worker);

    const paused = await server.gql(PAUSE, { reason: "database maintenance" }, operator);
    expect(paused.body.data.pauseClaims).toMatchObject({ paused: true, reason: "database maintenance", by: "ops-olga" });
    const scanId = await submit(alice, "waits-for-resume");

    // Several polls (claims answered empty) and heartbeats go by with the scan still queued.
    const claimsBefore = claimCalls();
    const heartbeatsBefore = heartbeatCalls();
    await waitFor("three claim polls while paused", () => claimCalls() >= claimsBefore + 3, { timeoutMs: 30_000 });
    await waitFor("a heartbeat while paused", () => heartbeatCalls() > heartbeatsBefore, { timeoutMs: 30_000 });
    const waiting = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
    expect(waiting).toMatchObject({ status: "QUEUED", attempts: 0, workerId: null });

    const state = await server.gql(CLAIMS_STATE, {}, operator);
    expect(state.body.data.ops.claimsPaused).toMatchObject({ paused: true, reason: "database maintenance", by: "ops-olga" });
    const diagnostic = state.body.data.ops.diagnostics.find((entry: { code: string }) => entry.code === "CLAIMS_PAUSED");
    expect(diagnostic.summary).toMatch(/paused by ops-olga .*database maintenance.*1 scan queued/);

    const resumed = await server.gql(RESUME, {}, operator);
    expect(resumed.body.data.resumeClaims).toEqual({ paused: false, reason: null, since: null, by: "ops-olga" });
    const finished = await waitForScanStatus(server.app.deps.prisma, scanId, ["SUCCEEDED", "FAILED", "CANCELLED"], { timeoutMs: 60_000 });
    expect(finished.status).toBe("SUCCEEDED");
    expect(finished.workerId).toBe(worker.workerId);
    // Stopped here, not at the end of the file: a worker left polling would claim the later tests'
    // scans, and a scan it is running still counts against its owner's quota while it is cancelled.
    workers.splice(workers.indexOf(worker), 1);
    expect(await stopProcess(worker.child)).toBe(0);
  }, 120_000);

  it("keeps the pause in the database, where every replica and a restart read it", async () => {
    await server.gql(PAUSE, { reason: "bad deploy" }, operator);
    const row = await server.app.deps.prisma.claimsPause.findUniqueOrThrow({ where: { id: "claims" } });
    expect(row).toMatchObject({ paused: true, reason: "bad deploy", by: "ops-olga" });
    const again = await server.gql(PAUSE, { reason: "bad deploy, still" }, operator);
    expect(new Date(again.body.data.pauseClaims.since)).toEqual(row.since);
    await server.gql(RESUME, {}, operator);
  });

  it("is audited, and refused to non-operators (403) and to anonymous callers (401)", async () => {
    expect(errorCodes(await server.gql(PAUSE, { reason: "x" }, alice))).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(RESUME, {}, alice))).toEqual(["FORBIDDEN"]);
    const anonymous = await server.gql(PAUSE, { reason: "x" });
    expect(errorCodes(anonymous)).toEqual(["UNAUTHENTICATED"]);
    expect(errorCodes(await server.gql(PAUSE, { reason: "  " }, operator))).toEqual(["BAD_USER_INPUT"]);
    const audit = await server.gql(AUDIT, {}, operator);
    const actions = audit.body.data.ops.auditLog.edges.map((edge: { node: { action: string } }) => edge.node.action);
    expect(actions).toEqual(expect.arrayContaining(["claims.pause", "claims.resume"]));
  });

  it("tells operators' subscriptions of every pause and resume, and refuses others' with FORBIDDEN", async () => {
    const subscription = `subscription { claimsPausedChanged { paused reason by } }`;
    const userConnection = connectWs(server.wsUrl, alice);
    connections.push(userConnection);
    await expect(userConnection.subscribe(subscription).next()).rejects.toMatchObject({ codes: ["FORBIDDEN"] });
    const connection = connectWs(server.wsUrl, operator);
    connections.push(connection);
    const watch = watchSubscriptions(server.app.deps.pubsub);
    const events = connection.subscribe<any>(subscription);
    await watch.until("claimsPausedChanged");
    watch.restore();
    await server.gql(PAUSE, { reason: "watched" }, operator);
    await server.gql(RESUME, {}, operator);
    expect((await events.next()).claimsPausedChanged).toEqual({ paused: true, reason: "watched", by: "ops-olga" });
    expect((await events.next()).claimsPausedChanged).toEqual({ paused: false, reason: null, by: "ops-olga" });
    events.unsubscribe();
  });

  it("has REST equivalents under /v1/ops/claims", async () => {
    const call = async (method: string, path: string, token = operator) => {
      const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
      return { status: response.status, body: (await response.json()) as any };
    };
    const pausedResponse = await call("POST", "/v1/ops/claims/pause?reason=window");
    expect(pausedResponse).toMatchObject({ status: 200, body: { claims: { paused: true, reason: "window", by: "ops-olga" } } });
    expect((await call("GET", "/v1/ops/claims")).body.claims.paused).toBe(true);
    expect((await call("POST", "/v1/ops/claims/pause")).status).toBe(400);
    expect((await call("POST", "/v1/ops/claims/resume", alice)).status).toBe(403);
    expect((await call("POST", "/v1/ops/claims/resume")).body.claims.paused).toBe(false);
    const summary = await call("GET", "/v1/ops/summary");
    expect(summary.status).toBe(200);
    expect(summary.body.summary.throughput).toHaveLength(288);
  });
});

describe("retrying a scan", () => {
  it("queues a new scan of the same source for the same owner, linked to the cancelled one", async () => {
    const original = await submit(bob, "to-retry");
    expect((await server.gql(CANCEL_SCAN, { id: original }, bob)).body.data.cancelScan.status).toBe("CANCELLED");
    const retried = await server.gql(RETRY, { id: original }, bob);
    const scan = retried.body.data.retryScan;
    expect(scan).toMatchObject({ status: "QUEUED", owner: { id: "bob" }, retryOf: { id: original, status: "CANCELLED" } });
    expect(scan.id).not.toBe(original);
    const originalRow = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: original } });
    expect(scan.source.id).toBe(originalRow.sourceArtifactId);
    // A queued scan is not retryable; another user's scan is not even visible.
    expect(errorCodes(await server.gql(RETRY, { id: scan.id }, bob))).toEqual(["CONFLICT"]);
    expect(errorCodes(await server.gql(RETRY, { id: original }, alice))).toEqual(["NOT_FOUND"]);
    await server.gql(CANCEL_SCAN, { id: scan.id }, bob);
  });

  it("counts against the owner's quota (QUOTA_EXCEEDED as for a submission), and an operator's retry is audited", async () => {
    const cancelled = await submit(bob, "retry-at-quota");
    await server.gql(CANCEL_SCAN, { id: cancelled }, bob);
    const filling = [];
    for (let index = 0; index < QUOTA; index++) filling.push(await submit(bob, `fill-${index}`));
    expect(errorCodes(await server.gql(RETRY, { id: cancelled }, operator))).toEqual(["QUOTA_EXCEEDED"]);
    await server.gql(CANCEL_SCAN, { id: filling[0] }, bob);
    const retried = await server.gql(RETRY, { id: cancelled }, operator);
    expect(retried.body.data.retryScan).toMatchObject({ owner: { id: "bob" }, retryOf: { id: cancelled } });
    const audit = await server.gql(AUDIT, {}, operator);
    const entry = audit.body.data.ops.auditLog.edges.find((edge: { node: { action: string } }) => edge.node.action === "scan.retry");
    expect(entry.node).toMatchObject({ actor: "ops-olga", target: `Scan:${cancelled}` });
  });

  it("answers CONFLICT once retention removed the source archive", async () => {
    const original = await submit(alice, "archive-gone");
    await server.gql(CANCEL_SCAN, { id: original }, alice);
    const row = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: original } });
    await server.app.deps.prisma.artifact.update({ where: { id: row.sourceArtifactId }, data: { deletedAt: new Date() } });
    const refused = await server.gql(RETRY, { id: original }, alice);
    expect(errorCodes(refused)).toEqual(["CONFLICT"]);
    expect(refused.body.errors![0].extensions!.reason).toBe("SOURCE_DELETED");
  });
});

describe("cancelling scans in bulk", () => {
  it("cancels a user's stuck scans in one call, each with its event, and frees their quota at once", async () => {
    const prisma = server.app.deps.prisma;
    // Whatever bob still has from the retry tests, then a full quota of scans that will not move (claims paused).
    await server.gql(PAUSE, { reason: "keep them stuck" }, operator);
    await server.gql(CANCEL_SCANS, { filter: { userId: "bob" } }, operator);
    const stuck = [];
    for (let index = 0; index < QUOTA; index++) stuck.push(await submit(bob, `stuck-${index}`));
    expect((await server.gql(QUOTA_OF, {}, bob)).body.data.viewer.quota).toEqual({ activeScans: QUOTA, remaining: 0 });
    expect((await submitScan(server, bob, archive)).body.errors?.[0]?.extensions?.code).toBe("QUOTA_EXCEEDED");
    const aliceScan = await submit(alice, "not-bobs");

    const result = await server.gql(CANCEL_SCANS, { filter: { userId: "bob", status: ["QUEUED"] } }, operator);
    expect(result.body.data.cancelScans.cancelled).toBe(QUOTA);
    expect([...result.body.data.cancelScans.scanIds].sort()).toEqual([...stuck].sort());
    expect((await server.gql(QUOTA_OF, {}, bob)).body.data.viewer.quota).toEqual({ activeScans: 0, remaining: QUOTA });
    expect((await prisma.scan.findUniqueOrThrow({ where: { id: aliceScan } })).status).toBe("QUEUED");
    for (const scanId of stuck) {
      const last = await prisma.scanEvent.findFirstOrThrow({ where: { scanId }, orderBy: { seq: "desc" } });
      expect(last).toMatchObject({ code: "CANCELLED", message: "Cancelled by operator ops-olga (bulk cancel)" });
    }
    expect((await submitScan(server, bob, archive)).status).toBe(200);

    const audit = await server.gql(AUDIT, {}, operator);
    const entry = audit.body.data.ops.auditLog.edges.find((edge: { node: { action: string } }) => edge.node.action === "scan.cancelBulk");
    expect(entry.node).toMatchObject({ actor: "ops-olga", details: { cancelled: QUOTA, filter: { userId: "bob" } } });
    await server.gql(CANCEL_SCANS, { filter: { userId: "bob" } }, operator);
    await server.gql(CANCEL_SCAN, { id: aliceScan }, alice);
    await server.gql(RESUME, {}, operator);
  });

  it("refuses a call without a criterion, finished statuses, and non-operators", async () => {
    expect(errorCodes(await server.gql(CANCEL_SCANS, { filter: {} }, operator))).toEqual(["BAD_USER_INPUT"]);
    expect(errorCodes(await server.gql(CANCEL_SCANS, { filter: { status: ["SUCCEEDED"] } }, operator))).toEqual(["BAD_USER_INPUT"]);
    expect(errorCodes(await server.gql(CANCEL_SCANS, { filter: { userId: "bob" } }, alice))).toEqual(["FORBIDDEN"]);
    const rest = await fetch(`${server.url}/v1/ops/scans/cancel?userId=nobody`, { method: "POST", headers: { authorization: `Bearer ${operator}` } });
    expect(await rest.json()).toEqual({ cancelled: 0, scanIds: [] });
  });
});

describe("searching scans and the summary", () => {
  it("pages through every scan matching the filter, newest first, for operators only", async () => {
    const prisma = server.app.deps.prisma;
    const expected = await prisma.scan.findMany({ where: { ownerId: "bob", status: "CANCELLED" }, orderBy: [{ createdAt: "desc" }, { id: "desc" }] });
    expect(expected.length).toBeGreaterThan(3);
    const seen: string[] = [];
    let after: string | null = null;
    for (;;) {
      const page: any = await server.gql(OPS_SCANS, { filter: { userId: "bob", status: ["CANCELLED"] }, first: 3, after }, operator);
      const connection = page.body.data.ops.scans;
      seen.push(...connection.edges.map((edge: { node: { id: string } }) => edge.node.id));
      if (!connection.pageInfo.hasNextPage) break;
      after = connection.pageInfo.endCursor;
    }
    expect(seen).toEqual(expected.map((scan) => scan.id));
    const none = await server.gql(OPS_SCANS, { filter: { errorCode: "NO_SUCH_CODE" } }, operator);
    expect(none.body.data.ops.scans.edges).toEqual([]);
    const future = await server.gql(OPS_SCANS, { filter: { createdAfter: new Date(Date.now() + 60_000).toISOString() } }, operator);
    expect(future.body.data.ops.scans.edges).toEqual([]);
    expect(errorCodes(await server.gql(OPS_SCANS, {}, alice))).toEqual(["FORBIDDEN"]);
  });

  it("counts scans by status as the database does, and gives 288 five-minute buckets with today's finished scans", async () => {
    const prisma = server.app.deps.prisma;
    const summary = (await server.gql(SUMMARY, {}, operator)).body.data.ops.summary;
    for (const { status, count } of summary.counts) expect(count, status).toBe(await prisma.scan.count({ where: { status } }));
    expect(summary.throughput).toHaveLength(288);
    const starts = summary.throughput.map((bucket: { bucketStart: string }) => Date.parse(bucket.bucketStart));
    expect(starts.every((start: number, index: number) => index === 0 || start - starts[index - 1] === 300_000)).toBe(true);
    expect(Date.now() - starts.at(-1)).toBeLessThan(300_000);
    const finished = summary.throughput.reduce((sum: number, bucket: { finished: number }) => sum + bucket.finished, 0);
    expect(finished).toBe(await prisma.scan.count({ where: { status: { in: ["SUCCEEDED", "FAILED", "CANCELLED"] } } }));
    expect(errorCodes(await server.gql(SUMMARY, {}, alice))).toEqual(["FORBIDDEN"]);
  });
});
