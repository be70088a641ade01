import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runVega } from "./support/cli.ts";
import { ADD_FINDINGS, APPEND_EVENTS, CLAIM, COMPLETE, finding, registerTestWorker, REPORT_STARTED } from "./support/execution.ts";
import { errorCodes, startTestServer, type TestServer } from "./support/server.ts";
import { submitScan } from "./support/uploads.ts";
import { buildZip } from "./support/zips.ts";

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
