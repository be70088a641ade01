/**
 * The SARIF report of a scan that did not run to its end must not look clean:
 * code scanning closes every alert an upload does not repeat. Through a real
 * server, over REST and GraphQL.
 */
import type { ValidateFunction } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScanStatus } from "../../api/generated/prisma/client.ts";
import { insertScan } from "../support/fixtures.ts";
import { sarifValidator } from "../support/sarif-schema.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";

let server: TestServer;
let owner: string;
let validate: ValidateFunction;

beforeAll(async () => {
  server = await startTestServer();
  owner = await server.token("reporter");
  ({ validate } = sarifValidator());
});
afterAll(async () => {
  if (server) await expectServerStillUntouched(server);
  await server?.close();
});

const SCAN_SARIF = "query ($id: ID!) { scan(id: $id) { sarif } }";

const downloadSarif = (scanId: string) => fetch(`${server.url}/v1/scans/${scanId}/sarif`, { headers: { authorization: `Bearer ${owner}` } });

const withFindings = (status: ScanStatus) =>
  insertScan(server.app.deps.prisma, { ownerId: "reporter", status, findings: [{ severity: "HIGH" }, { severity: "LOW" }] });

describe("a scan that has not run to its end has no SARIF report", () => {
  it.each(["QUEUED", "STARTING", "RUNNING", "CANCELLED"] as const)("answers 409 CONFLICT for a %s scan, over REST and GraphQL", async (status) => {
    const scan = await withFindings(status);
    const response = await downloadSarif(scan.id);
    expect(response.status).toBe(409);
    const body = await response.json();
    expect(body.errors[0]).toMatchObject({ extensions: { code: "CONFLICT", status } });
    expect(body.errors[0].message).toMatch(new RegExp(`is ${status}: its SARIF report exists once the scan has succeeded`));
    const field = await server.gql(SCAN_SARIF, { id: scan.id }, owner);
    expect(field.status).toBe(409);
    expect(errorCodes(field)).toEqual(["CONFLICT"]);
    await expectServerUntouched(server);
  });
});

describe("a finished scan's report says how it ended", () => {
  it("gives a SUCCEEDED scan's results with executionSuccessful: true", async () => {
    const scan = await withFindings("SUCCEEDED");
    const response = await downloadSarif(scan.id);
    expect(response.status).toBe(200);
    const sarif = await response.json();
    expect(validate(sarif), JSON.stringify(validate.errors?.slice(0, 3))).toBe(true);
    expect(sarif.runs[0].results).toHaveLength(2);
    expect(sarif.runs[0].invocations).toEqual([{ executionSuccessful: true }]);
  });

  it("gives a FAILED scan's partial results with executionSuccessful: false and its error", async () => {
    const scan = await withFindings("FAILED");
    await server.app.deps.prisma.scan.update({
      where: { id: scan.id },
      data: { errorCode: "RUNNER_EXITED", errorMessage: "The runner task stopped: exit code 137" },
    });
    for (const sarif of [await (await downloadSarif(scan.id)).json(), (await server.gql(SCAN_SARIF, { id: scan.id }, owner)).body.data.scan.sarif]) {
      expect(validate(sarif), JSON.stringify(validate.errors?.slice(0, 3))).toBe(true);
      expect(sarif.runs[0].results).toHaveLength(2);
      expect(sarif.runs[0].invocations).toEqual([
        {
          executionSuccessful: false,
          toolExecutionNotifications: [
            { level: "error", message: { text: "The runner task stopped: exit code 137" }, descriptor: { id: "RUNNER_EXITED" } },
          ],
        },
      ]);
    }
  });
});
