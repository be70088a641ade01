/**
 * Archive edges through a real server and a real runner: nothing to scan,
 * names the file system cannot hold, and data that does not match its CRC-32
 * are refused with ARCHIVE_INVALID, and no error a user reads names a path of
 * the server's or the runner's machine.
 */
import { readdir } from "node:fs/promises";
import os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runScanWithRunner } from "../support/execution.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";
import { submitScan } from "../support/uploads.ts";
import { buildRawZip, buildZip, buildZipWithEntryName, deflated } from "../support/zips.ts";

let server: TestServer;
let alice: string;

beforeAll(async () => {
  server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "1000" });
  alice = await server.token("alice");
});
afterAll(async () => {
  if (server) await expectServerStillUntouched(server);
  await server?.close();
});

async function stored() {
  const { prisma } = server.app.deps;
  const files = await readdir(server.config.artifactStoreDir, { recursive: true, withFileTypes: true });
  return { scans: await prisma.scan.count(), artifacts: await prisma.artifact.count(), files: files.filter((entry) => entry.isFile()).length };
}

/** Runs the real `vega runner` on the scan; answers the scan as it ended. */
async function runScan(scanId: string) {
  const result = await runScanWithRunner(server, scanId);
  expect(result.code, result.stderr).toBe(0);
  return server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
}

describe("an upload with nothing to scan, or names no file system holds, is refused at submission", () => {
  it.each([
    ["an archive without entries", () => buildZip([]), /^Invalid archive: the archive contains no files$/],
    ["an archive of directories alone", () => buildZip([{ directory: "src/" }, { directory: "src/lib/" }]), /contains no files/],
    ["a 0-byte upload", () => Buffer.alloc(0), /^Invalid archive: empty upload/],
    ["a path component over 255 bytes", () => buildZipWithEntryName(`src/${"x".repeat(256)}.ts`), /path segment longer than 255 bytes/],
    ["a path over 4096 bytes", () => buildZipWithEntryName(`${"d/".repeat(2100)}f.ts`), /name longer than 3584 bytes/],
    ["a path under 4096 bytes that leaves no room for the extraction directory", () => buildZipWithEntryName(`${"d/".repeat(2000)}f`), /name longer than 3584 bytes/],
  ])("refuses %s with 422 ARCHIVE_INVALID and stores nothing", async (_shape, build, message) => {
    const before = await stored();
    const response = await submitScan(server, alice, await build());
    expect(response.status).toBe(422);
    expect(response.code).toBe("ARCHIVE_INVALID");
    expect(response.body.errors[0].message).toMatch(message);
    expect(JSON.stringify(response.body)).not.toContain(server.dataDir);
    expect(await stored()).toEqual(before);
    await expectServerUntouched(server);
  });
});

describe("the runner checks what inspection cannot", () => {
  it("fails a scan whose entry does not match its CRC-32 with ARCHIVE_INVALID, naming no path of the runner", async () => {
    const corrupt = buildRawZip([
      { name: "src/ok.ts", data: Buffer.from("export {};\n") },
      { name: "src/key.ts", ...deflated("export const key = 1;\n".repeat(50)), crc32: 0x12345678 },
    ]);
    const response = await submitScan(server, alice, corrupt);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    const scan = await runScan(response.body.data.submitScan.scan.id);
    expect(scan).toMatchObject({ status: "FAILED", errorCode: "ARCHIVE_INVALID" });
    expect(scan.errorMessage).toMatch(/CRC-32 mismatch: the entry declares 0x12345678, its data has 0x[0-9a-f]{8} \(entry "src\/key\.ts"\)/);
    expect(scan.errorMessage).not.toContain(os.tmpdir());
    await expectServerUntouched(server);
  });

  // 1,791 nested directories to create, scan and remove: the slowest runner of the file.
  it("extracts and scans a name at the bound: what inspection accepts, the runner can write", async () => {
    const name = `${"d/".repeat(1791)}ff`;
    const response = await submitScan(server, alice, await buildZip([{ name, data: "export const fine = true;\n" }]));
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    const scan = await runScan(response.body.data.submitScan.scan.id);
    expect(scan, JSON.stringify(scan)).toMatchObject({ status: "SUCCEEDED", errorCode: null });
  }, 240_000);
});
