import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runVega } from "../support/cli.ts";
import { ADD_FINDINGS, APPEND_EVENTS, CLAIM, COMPLETE, finding, registerTestWorker, REPORT_STARTED } from "../support/execution.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { buildZip } from "../support/zips.ts";

let server: TestServer;
let alice: string;

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "1000" });
  alice = await server.token("alice");
});
afterAll(() => server?.close());

async function queueScan(files: { name: string; data: string }[] = [{ name: "src/a.ts", data: "export {};\n" }]) {
  const response = await submitScan(server, alice, await buildZip(files));
  if (response.status !== 200) throw new Error(JSON.stringify(response.body));
  return response.body.data.submitScan.scan.id as string;
}

async function claimOne(worker: { id: string; token: string }) {
  const response = await server.gql(CLAIM, { workerId: worker.id, max: 1 }, worker.token);
  expect(response.body.errors).toBeUndefined();
  return response.body.data.claimScans[0];
}

const statusOf = async (scanId: string) => (await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } })).status;

describe("claiming scans", () => {
  it("moves the oldest queued scans to STARTING for the worker, counting an attempt, with a runner token", async () => {
    const first = await queueScan();
    const second = await queueScan();
    const worker = await registerTestWorker(server, "claimer");
    const response = await server.gql(CLAIM, { workerId: worker.id, max: 1 }, worker.token);
    const [claim] = response.body.data.claimScans;
    expect(claim.scan).toMatchObject({ id: first, status: "STARTING", attempts: 1 });
    expect(claim.attempt).toBe(1);
    expect(claim.runnerToken).toMatch(/^ey/);
    const row = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: first } });
    expect(row.workerId).toBe(worker.id);
    expect(await statusOf(second)).toBe("QUEUED");
    await server.gql(CLAIM, { workerId: worker.id, max: 10 }, worker.token);
  });

  it("never gives one scan to two workers claiming at once", async () => {
    const ids = new Set<string>();
    for (let index = 0; index < 30; index++) ids.add(await queueScan());
    const workers = await Promise.all([1, 2, 3].map((index) => registerTestWorker(server, `racer-${index}`)));
    const claimed: string[] = [];
    await Promise.all(
      workers.map(async (worker) => {
        for (;;) {
          const response = await server.gql(CLAIM, { workerId: worker.id, max: 2 }, worker.token);
          const batch = response.body.data.claimScans as { scan: { id: string } }[];
          if (batch.length === 0) return;
          claimed.push(...batch.map((claim) => claim.scan.id));
        }
      }),
    );
    expect(claimed.filter((id) => ids.has(id)).sort()).toEqual([...ids].sort());
    expect(new Set(claimed).size).toBe(claimed.length);
  });

  it("refuses a claim for another worker's id", async () => {
    const mine = await registerTestWorker(server, "mine");
    const theirs = await registerTestWorker(server, "theirs");
    const response = await server.gql(CLAIM, { workerId: theirs.id, max: 1 }, mine.token);
    expect(errorCodes(response)).toEqual(["FORBIDDEN"]);
  });
});

describe("runner reports", () => {
  it("stores findings once per fingerprint, also when a batch is sent twice", async () => {
    const scanId = await queueScan();
    const worker = await registerTestWorker(server, "dedupe");
    const claim = await claimOne(worker);
    expect(claim.scan.id).toBe(scanId);
    await server.gql(REPORT_STARTED, { scanId, taskId: "local:1" }, worker.token);
    const batch = [finding(0), finding(1), finding(1)];
    const first = await server.gql(ADD_FINDINGS, { scanId, findings: batch }, claim.runnerToken);
    expect(first.body.data.addFindings).toEqual({ added: 2, duplicates: 1 });
    const again = await server.gql(ADD_FINDINGS, { scanId, findings: batch }, claim.runnerToken);
    expect(again.body.data.addFindings).toEqual({ added: 0, duplicates: 3 });
    expect(await server.app.deps.prisma.finding.count({ where: { scanId } })).toBe(2);
  });

  it("does not let a runner token touch any other scan", async () => {
    const worker = await registerTestWorker(server, "isolation");
    const mine = await queueScan();
    const other = await queueScan();
    const claims = (await server.gql(CLAIM, { workerId: worker.id, max: 2 }, worker.token)).body.data.claimScans;
    const token = claims.find((claim: any) => claim.scan.id === mine).runnerToken;
    for (const [query, variables] of [
      [ADD_FINDINGS, { scanId: other, findings: [finding(9)] }],
      [APPEND_EVENTS, { scanId: other, events: [{ kind: "LOG", message: "hi" }] }],
      [COMPLETE, { scanId: other, input: { status: "SUCCEEDED" } }],
    ] as const) {
      expect(errorCodes(await server.gql(query, variables, token))).toEqual(["FORBIDDEN"]);
    }
    expect(errorCodes(await server.gql("query ($id: ID!) { scan(id: $id) { id } }", { id: other }, token))).toEqual(["NOT_FOUND"]);
    expect(errorCodes(await server.gql("{ scans { edges { node { id } } } }", {}, token))).toEqual(["FORBIDDEN"]);
  });
});

describe("cancelling a scan at each state", () => {
  const CANCEL = "mutation ($id: ID!) { cancelScan(id: $id) { status } }";

  it("cancels a queued scan at once", async () => {
    const scanId = await queueScan();
    expect((await server.gql(CANCEL, { id: scanId }, alice)).body.data.cancelScan.status).toBe("CANCELLED");
  });

  it("cancels a starting scan; the worker's later launch report is refused with CONFLICT", async () => {
    const worker = await registerTestWorker(server, "starting");
    const scanId = await queueScan();
    await server.gql(CLAIM, { workerId: worker.id, max: 100 }, worker.token);
    expect(await statusOf(scanId)).toBe("STARTING");
    expect((await server.gql(CANCEL, { id: scanId }, alice)).body.data.cancelScan.status).toBe("CANCELLED");
    expect(errorCodes(await server.gql(REPORT_STARTED, { scanId, taskId: "local:2" }, worker.token))).toEqual(["CONFLICT"]);
    expect(await statusOf(scanId)).toBe("CANCELLED");
  });

  it("cancels a running scan; the runner's later reports are refused and change nothing", async () => {
    const worker = await registerTestWorker(server, "running");
    const scanId = await queueScan();
    const claims = (await server.gql(CLAIM, { workerId: worker.id, max: 100 }, worker.token)).body.data.claimScans;
    const claim = claims.find((candidate: any) => candidate.scan.id === scanId);
    await server.gql(REPORT_STARTED, { scanId, taskId: "local:3" }, worker.token);
    expect((await server.gql(CANCEL, { id: scanId }, alice)).body.data.cancelScan.status).toBe("CANCELLED");
    const eventsBefore = await server.app.deps.prisma.scanEvent.count({ where: { scanId } });
    expect(errorCodes(await server.gql(ADD_FINDINGS, { scanId, findings: [finding(0)] }, claim.runnerToken))).toEqual(["CONFLICT"]);
    expect(errorCodes(await server.gql(APPEND_EVENTS, { scanId, events: [{ kind: "LOG", message: "late" }] }, claim.runnerToken))).toEqual([
      "CONFLICT",
    ]);
    expect(errorCodes(await server.gql(COMPLETE, { scanId, input: { status: "SUCCEEDED" } }, claim.runnerToken))).toEqual(["CONFLICT"]);
    expect(await statusOf(scanId)).toBe("CANCELLED");
    expect(await server.app.deps.prisma.scanEvent.count({ where: { scanId } })).toBe(eventsBefore);
    expect(await server.app.deps.prisma.finding.count({ where: { scanId } })).toBe(0);
  });
});

describe("the runner", () => {
  it("downloads, extracts and scans the archive, reports findings and completes the scan", async () => {
    const awsKey = "AKIA" + "Q3EGRZ7BXK4WNJ2T";
    const scanId = await queueScan([
      { name: "src/config.ts", data: `export const region = "eu-west-1";\nexport const accessKeyId = "${awsKey}";\n` },
      { name: "README.md", data: "# nothing to see\n" },
      { name: "node_modules/dep/index.js", data: `module.exports = "${awsKey}";\n` },
    ]);
    const worker = await registerTestWorker(server, "runner-host");
    const claims = (await server.gql(CLAIM, { workerId: worker.id, max: 100 }, worker.token)).body.data.claimScans;
    const claim = claims.find((candidate: any) => candidate.scan.id === scanId);
    await server.gql(REPORT_STARTED, { scanId, taskId: "local:4" }, worker.token);

    const result = await runVega(["runner"], {
      VEGA_API_URL: server.graphqlUrl,
      VEGA_SCAN_ID: scanId,
      VEGA_RUNNER_TOKEN: claim.runnerToken,
    });
    expect(result.code, result.stderr).toBe(0);
    const scan = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId }, include: { findings: true, events: true } });
    expect(scan.status).toBe("SUCCEEDED");
    expect(scan.findings.map((row) => [row.ruleId, row.path, row.line])).toContainEqual(["aws-access-key-id", "src/config.ts", 2]);
    for (const row of scan.findings) expect(row.snippet).not.toContain(awsKey);
    expect(scan.events.map((event) => event.code)).toEqual(expect.arrayContaining(["QUEUED", "STARTING", "RUNNING", "EXTRACTED", "ANALYZED", "SUCCEEDED"]));
    // The secret's end is stored for SARIF regions: 20 characters from column 29.
    expect(scan.findings.find((row) => row.ruleId === "aws-access-key-id")).toMatchObject({ line: 2, column: 29, endLine: 2, endColumn: 49 });
    // ...and answered by the API (Scan.findings reads through its page loader).
    const served = await server.gql(
      "query ($id: ID!) { scan(id: $id) { findings(first: 10) { edges { node { ruleId line column endLine endColumn } } } } }",
      { id: scanId },
      alice,
    );
    expect(served.body.data.scan.findings.edges.map((edge: any) => edge.node)).toContainEqual({
      ruleId: "aws-access-key-id",
      line: 2,
      column: 29,
      endLine: 2,
      endColumn: 49,
    });
    // What was not read is said, by reason: the node_modules directory.
    const analyzed = scan.events.find((event) => event.code === "ANALYZED")!;
    expect(analyzed.data).toMatchObject({ filesScanned: 2, filesSkipped: 0, skipped: { vendoredDirectories: 1, binaryFiles: 0, oversizedFiles: 0 } });
    expect(analyzed.message).toContain("not read: 1 vendored directory");
  });

  it("fails the scan with the archive's code when extraction finds what inspection could not", async () => {
    const scanId = await queueScan([{ name: "big.txt", data: "x".repeat(64 * 1024) }]);
    const worker = await registerTestWorker(server, "strict-runner");
    const claims = (await server.gql(CLAIM, { workerId: worker.id, max: 100 }, worker.token)).body.data.claimScans;
    const claim = claims.find((candidate: any) => candidate.scan.id === scanId);
    await server.gql(REPORT_STARTED, { scanId, taskId: "local:5" }, worker.token);
    const result = await runVega(["runner"], {
      VEGA_API_URL: server.graphqlUrl,
      VEGA_SCAN_ID: scanId,
      VEGA_RUNNER_TOKEN: claim.runnerToken,
      // The runner's own limit is lower than what the API accepted: it must stop at its limit.
      VEGA_MAX_ARCHIVE_UNCOMPRESSED_BYTES: "1024",
    });
    expect(result.code, result.stderr).toBe(0);
    const scan = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
    expect(scan).toMatchObject({ status: "FAILED", errorCode: "ARCHIVE_TOO_LARGE" });
  });
});

const PROGRESS = `mutation ($scanId: ID!, $input: ScanProgressInput!) {
  reportScanProgress(scanId: $scanId, input: $input) { phase filesDone filesTotal bytesDone bytesTotal findings updatedAt }
}`;
const RECOVER = `mutation ($workerId: ID!, $decisions: [RecoveryDecisionInput!]!) { recoverScans(workerId: $workerId, decisions: $decisions) { applied refused } }`;

const scanRow = (scanId: string) => server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
const stateCodes = async (scanId: string) =>
  (await server.app.deps.prisma.scanEvent.findMany({ where: { scanId }, orderBy: { seq: "asc" } })).filter((event) => event.kind === "STATE").map((event) => event.code);
const download = (artifactId: string, token: string) =>
  fetch(`${server.url}/v1/artifacts/${artifactId}`, { headers: { authorization: `Bearer ${token}` } });

describe("one runner per attempt", () => {
  it("refuses the token of an earlier claim once the scan was requeued and claimed again: events, findings, progress, completion, download", async () => {
    const scanId = await queueScan();
    const doomed = await registerTestWorker(server, "doomed-claimer");
    const first = await claimOne(doomed);
    expect(first).toMatchObject({ attempt: 1, scan: { id: scanId } });
    // The worker dies before it launches anything; another worker requeues its orphaned claim.
    await server.app.deps.prisma.worker.update({ where: { id: doomed.id }, data: { lastHeartbeatAt: new Date(Date.now() - 3600_000) } });
    const rescuer = await registerTestWorker(server, "rescuer");
    const requeued = await server.gql(
      RECOVER,
      { workerId: rescuer.id, decisions: [{ scanId, action: "REQUEUE", expectedStatus: "STARTING", code: "ORPHANED_CLAIM", reason: "orphaned" }] },
      rescuer.token,
    );
    expect(requeued.body.data.recoverScans).toEqual([{ applied: true, refused: null }]);
    // Back in the queue, the old claim is already void.
    expect(errorCodes(await server.gql(PROGRESS, { scanId, input: { phase: "DOWNLOADING", findings: 0 } }, first.runnerToken))).toEqual(["CONFLICT"]);
    const second = await claimOne(rescuer);
    expect(second).toMatchObject({ attempt: 2, scan: { id: scanId } });
    const eventsBefore = await server.app.deps.prisma.scanEvent.count({ where: { scanId } });

    const critical = { ...finding(1), ruleId: "private-key", severity: "CRITICAL" };
    for (const [query, variables] of [
      [APPEND_EVENTS, { scanId, events: [{ kind: "LOG", message: "attempt 1 is still here" }] }],
      [ADD_FINDINGS, { scanId, findings: [critical] }],
      [PROGRESS, { scanId, input: { phase: "ANALYZING", findings: 1 } }],
      [COMPLETE, { scanId, input: { status: "SUCCEEDED" } }],
    ] as const) {
      const response = await server.gql(query, variables, first.runnerToken);
      expect(errorCodes(response)).toEqual(["CONFLICT"]);
      expect(response.body.errors![0].message).toMatch(/claimed again \(attempt 2\); this runner's token is for attempt 1/);
    }
    const stale = await download(first.sourceArtifactId, first.runnerToken);
    expect(stale.status).toBe(409);
    expect((await stale.json()).errors[0].extensions.code).toBe("CONFLICT");
    expect(await server.app.deps.prisma.finding.count({ where: { scanId } })).toBe(0);
    expect(await server.app.deps.prisma.scanEvent.count({ where: { scanId } })).toBe(eventsBefore);
    expect(await scanRow(scanId)).toMatchObject({ status: "STARTING", attempts: 2, lastHeartbeatAt: null, progress: null });

    // The current claim's token works, and once the scan has ended it too is refused.
    expect((await download(second.sourceArtifactId, second.runnerToken)).status).toBe(200);
    expect((await server.gql(ADD_FINDINGS, { scanId, findings: [critical] }, second.runnerToken)).body.data.addFindings).toEqual({ added: 1, duplicates: 0 });
    expect((await server.gql(COMPLETE, { scanId, input: { status: "SUCCEEDED" } }, second.runnerToken)).body.data.completeScan.status).toBe("SUCCEEDED");
    expect((await download(second.sourceArtifactId, second.runnerToken)).status).toBe(409);
    expect(errorCodes(await server.gql(PROGRESS, { scanId, input: { phase: "REPORTING", findings: 1 } }, second.runnerToken))).toEqual(["CONFLICT"]);
  });

  it("refuses a runner token that names no claim attempt", async () => {
    const scanId = await queueScan();
    const claim = await claimOne(await registerTestWorker(server, "attemptless"));
    const legacy = await server.token(`runner:${scanId}`, { scope: "runner", scanId });
    expect(errorCodes(await server.gql(PROGRESS, { scanId, input: { phase: "DOWNLOADING", findings: 0 } }, legacy))).toEqual(["FORBIDDEN"]);
    expect(errorCodes(await server.gql(ADD_FINDINGS, { scanId, findings: [finding(0)] }, legacy))).toEqual(["FORBIDDEN"]);
    expect((await download(claim.sourceArtifactId, legacy)).status).toBe(403);
  });
});

describe("a runner that reports before its worker's launch report", () => {
  it("completes a STARTING scan: it goes through RUNNING to SUCCEEDED", async () => {
    const scanId = await queueScan();
    const claim = await claimOne(await registerTestWorker(server, "slow-reporter"));
    expect(await statusOf(scanId)).toBe("STARTING");

    const completed = await server.gql(COMPLETE, { scanId, input: { status: "SUCCEEDED" } }, claim.runnerToken);
    expect(completed.body).toEqual({ data: { completeScan: { id: scanId, status: "SUCCEEDED", errorCode: null } } });
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]);
    const [running] = await server.app.deps.prisma.scanEvent.findMany({ where: { scanId, code: "RUNNING" } });
    expect(running).toMatchObject({ data: { from: "STARTING", to: "RUNNING", by: "runner" } });
  });

  it("moves the scan to RUNNING with its first progress report; the worker's launch report then records the task", async () => {
    const scanId = await queueScan();
    const worker = await registerTestWorker(server, "late-launch-report");
    const claim = await claimOne(worker);

    const report = await server.gql(
      PROGRESS,
      { scanId, input: { phase: "DOWNLOADING", bytesDone: "0", bytesTotal: "6000000000", findings: 0 } },
      claim.runnerToken,
    );
    expect(report.body.data.reportScanProgress).toMatchObject({ phase: "DOWNLOADING", bytesDone: "0", bytesTotal: "6000000000", filesDone: null });
    const running = await scanRow(scanId);
    expect(running).toMatchObject({ status: "RUNNING", taskId: null, progress: { phase: "DOWNLOADING", bytesTotal: 6_000_000_000 } });
    expect(running.lastHeartbeatAt).not.toBeNull();

    // A launch report for an earlier claim is refused; this claim's succeeds and records the task.
    expect(errorCodes(await server.gql(`mutation { reportScanStarted(scanId: "${scanId}", taskId: "local:7", attempt: 2) { id } }`, {}, worker.token))).toEqual([
      "CONFLICT",
    ]);
    const started = await server.gql(
      `mutation ($scanId: ID!) { reportScanStarted(scanId: $scanId, taskId: "local:7", attempt: 1) { status taskId } }`,
      { scanId },
      worker.token,
    );
    expect(started.body).toEqual({ data: { reportScanStarted: { status: "RUNNING", taskId: "local:7" } } });
    expect(await stateCodes(scanId)).toEqual(["QUEUED", "STARTING", "RUNNING"]);
    expect(await server.app.deps.prisma.scanEvent.count({ where: { scanId, code: "TASK_STARTED" } })).toBe(1);
    // Said again (a retried call), it changes nothing; another task id is a conflict.
    expect((await server.gql(REPORT_STARTED, { scanId, taskId: "local:7" }, worker.token)).body.data.reportScanStarted.status).toBe("RUNNING");
    expect(errorCodes(await server.gql(REPORT_STARTED, { scanId, taskId: "local:8" }, worker.token))).toEqual(["CONFLICT"]);
    expect(await server.app.deps.prisma.scanEvent.count({ where: { scanId, code: "TASK_STARTED" } })).toBe(1);
  });
});

describe("progress reports", () => {
  it("refuses counts that cannot be (negative, done past total) and leaves the last report as it was", async () => {
    const scanId = await queueScan();
    const claim = await claimOne(await registerTestWorker(server, "bad-counts"));
    const good = { phase: "ANALYZING", filesDone: 3, filesTotal: 10, bytesDone: "300", findings: 1 };
    expect((await server.gql(PROGRESS, { scanId, input: good }, claim.runnerToken)).body.errors).toBeUndefined();
    for (const input of [
      { ...good, filesDone: 11 },
      { ...good, filesDone: -1 },
      { ...good, bytesDone: "-5" },
      { ...good, bytesDone: "100", bytesTotal: "99" },
      { ...good, findings: -2 },
      { ...good, bytesDone: "9007199254740993" },
    ]) {
      const response = await server.gql(PROGRESS, { scanId, input }, claim.runnerToken);
      expect(errorCodes(response), JSON.stringify(input)).toEqual(["BAD_USER_INPUT"]);
    }
    expect((await scanRow(scanId)).progress).toMatchObject({ phase: "ANALYZING", filesDone: 3, filesTotal: 10, bytesDone: 300, bytesTotal: null, findings: 1 });
  });
});
