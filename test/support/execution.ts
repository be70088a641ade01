/** Drives the worker and runner side of the API by hand, for tests of scan execution. */
import { runVega } from "./cli.ts";
import type { TestServer } from "./server.ts";

export async function registerTestWorker(server: TestServer, name = "test-worker") {
  const deploymentToken = await server.token(`deploy-${name}`, { scope: "worker" });
  const response = await server.gql(
    `mutation ($input: RegisterWorkerInput!) { registerWorker(input: $input) { token worker { id } } }`,
    { input: { name, host: "test", pid: process.pid, version: "test", capacity: 4 } },
    deploymentToken,
  );
  if (response.body.errors) throw new Error(JSON.stringify(response.body.errors));
  return { id: response.body.data.registerWorker.worker.id as string, token: response.body.data.registerWorker.token as string };
}

export const CLAIM = `mutation ($workerId: ID!, $max: Int!) {
  claimScans(workerId: $workerId, max: $max) { attempt runnerToken sourceArtifactId scan { id status attempts } }
}`;

export const REPORT_STARTED = `mutation ($scanId: ID!, $taskId: String!) { reportScanStarted(scanId: $scanId, taskId: $taskId) { id status taskId } }`;

export const ADD_FINDINGS = `mutation ($scanId: ID!, $findings: [FindingInput!]!) { addFindings(scanId: $scanId, findings: $findings) { added duplicates } }`;

export const APPEND_EVENTS = `mutation ($scanId: ID!, $events: [ScanEventInput!]!) { appendScanEvents(scanId: $scanId, events: $events) { seq } }`;

export const COMPLETE = `mutation ($scanId: ID!, $input: CompleteScanInput!) { completeScan(scanId: $scanId, input: $input) { id status errorCode } }`;

export const finding = (index: number) => ({
  ruleId: "generic-secret",
  severity: "HIGH",
  path: `src/file-${index}.ts`,
  line: index + 1,
  column: 3,
  message: "A secret",
  snippet: "const key = \"abcd****\"",
  fingerprint: `fingerprint-${index}`,
});

/**
 * Claims a queued scan as a fresh worker would, reports it started, and runs
 * the real `vega runner` on it (with `env` on top); answers the runner's exit.
 */
export async function runScanWithRunner(server: TestServer, scanId: string, env: Record<string, string> = {}) {
  const worker = await registerTestWorker(server, `runner-for-${scanId.slice(0, 8)}`);
  const claims = (await server.gql(CLAIM, { workerId: worker.id, max: 100 }, worker.token)).body.data.claimScans;
  const claim = claims.find((candidate: { scan: { id: string } }) => candidate.scan.id === scanId);
  if (!claim) throw new Error(`scan ${scanId} was not claimable`);
  await server.gql(REPORT_STARTED, { scanId, taskId: "local:1" }, worker.token);
  return runVega(["runner"], { VEGA_API_URL: server.graphqlUrl, VEGA_SCAN_ID: scanId, VEGA_RUNNER_TOKEN: claim.runnerToken, ...env });
}
