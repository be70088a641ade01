/**
 * The whole service as `npm start` runs it: the API, the embedded worker and
 * local runners on the embedded database. A zip with one planted secret per
 * rule (and decoys) runs to completion; a subscription sees every transition;
 * the findings are exactly the planted ones; the SARIF log is valid.
 */
import { rm } from "node:fs/promises";
import path from "node:path";
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runVega, startVega, stopProcess } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { plantedSecretsTree } from "../support/planted-secrets.ts";
import { sarifValidator } from "../support/sarif-schema.ts";
import { submitScan } from "../support/uploads.ts";
import { connectWs, type WsConnection } from "../support/ws.ts";
import { buildZip } from "../support/zips.ts";

let dataDir: string;
let vega: ChildProcess;
let baseUrl: string;
let token: string;
let ws: WsConnection;

beforeAll(async () => {
  dataDir = await migratedDataDir("vega-e2e-");
  const env = { VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_WORKER_POLL_INTERVAL_SECONDS: "1" };
  // A fresh embedded database takes a while to initialise on a busy machine.
  const started = await startVega(["start"], env, /"msg":"runner launched"|"msg":"worker registered"/, { timeoutMs: 300_000 });
  vega = started.child;
  baseUrl = `http://127.0.0.1:${/"port":(\d+)/.exec(started.output())![1]}`;
  const minted = await runVega(["token", "--sub", "alice"], { VEGA_DATA_DIR: dataDir });
  token = minted.stdout.trim();
  ws = connectWs(`${baseUrl.replace("http", "ws")}/graphql`, token);
}, 320_000);

afterAll(async () => {
  await ws?.dispose();
  if (vega) expect(await stopProcess(vega)).toBe(0);
  await rm(dataDir, { recursive: true, force: true });
});

const graphql = async (query: string, variables: Record<string, unknown> = {}) => {
  const response = await fetch(`${baseUrl}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return response.json() as Promise<{ data: any; errors?: unknown[] }>;
};

describe("npm start runs a submitted scan to completion", () => {
  it("reports exactly the planted secrets, with every state change on a subscription, and valid SARIF", async () => {
    const changes = ws.subscribe<{ scanStateChanged: { scan: { id: string }; from: string | null; to: string } }>(
      "subscription { scanStateChanged { scan { id } from to } }",
    );
    const api = { graphqlUrl: `${baseUrl}/graphql` };
    // A first scan proves the subscription is live before the one under test is submitted.
    const warmUp = await submitScan(api, token, await buildZip([{ name: "README.md", data: "# hello\n" }]));
    const warmUpId = warmUp.body.data.submitScan.scan.id;
    await changes.nextMatching((change) => change.scanStateChanged.scan.id === warmUpId, { timeoutMs: 60_000 });

    const tree = plantedSecretsTree();
    const archive = await buildZip(Object.entries(tree.files).map(([name, data]) => ({ name, data })));
    const submitted = await submitScan(api, token, archive, { label: "planted" });
    expect(submitted.status).toBe(200);
    const scanId = submitted.body.data.submitScan.scan.id;

    const seen: [string | null, string][] = [];
    for (;;) {
      const change = await changes.nextMatching((event) => event.scanStateChanged.scan.id === scanId, { timeoutMs: 120_000 });
      seen.push([change.scanStateChanged.from, change.scanStateChanged.to]);
      if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(change.scanStateChanged.to)) break;
    }
    expect(seen).toEqual([
      [null, "QUEUED"],
      ["QUEUED", "STARTING"],
      ["STARTING", "RUNNING"],
      ["RUNNING", "SUCCEEDED"],
    ]);

    const result = await graphql(
      `query ($id: ID!) { scan(id: $id) { status findings(first: 100) { edges { node { ruleId path line snippet } } } } }`,
      { id: scanId },
    );
    const findings = result.data.scan.findings.edges.map((edge: any) => edge.node);
    const found = findings.map((finding: any) => `${finding.ruleId} ${finding.path}:${finding.line}`).sort();
    const planted = tree.expected.map((secret) => `${secret.ruleId} ${secret.path}:${secret.line}`).sort();
    expect(found).toEqual(planted);

    const sarifResponse = await fetch(`${baseUrl}/v1/scans/${scanId}/sarif`, { headers: { authorization: `Bearer ${token}` } });
    expect(sarifResponse.status).toBe(200);
    const sarif = await sarifResponse.json();
    const { validate } = sarifValidator();
    expect(validate(sarif), JSON.stringify(validate.errors?.slice(0, 3))).toBe(true);
    expect(sarif.runs[0].results).toHaveLength(planted.length);
  }, 300_000);
});
