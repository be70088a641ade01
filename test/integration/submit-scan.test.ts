import { readdir } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../support/server.ts";
import { multipartBody, submitScan, submitScanChunked } from "../support/uploads.ts";
import {
  buildCorruptCentralDirectoryZip,
  buildDeclaredEntryCountZip,
  buildDeclaredSizeZip,
  buildDuplicateZip,
  buildEncryptedZip,
  buildManyFilesZip,
  buildNotAZip,
  buildOverlappingZip,
  buildSymlinkZip,
  buildTruncatedZip,
  buildZip,
  buildZipWithEntryName,
} from "../support/zips.ts";

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({
    VEGA_MAX_ARCHIVE_ENTRIES: "100",
    VEGA_MAX_ARCHIVE_UNCOMPRESSED_BYTES: String(64 * 1024 * 1024),
    VEGA_MAX_SOURCE_BYTES: String(8 * 1024 * 1024),
    VEGA_MAX_ACTIVE_SCANS_PER_USER: "1000",
  });
});
afterAll(() => server?.close());

/** Files anywhere in the artifact store, temporary ones included. */
async function storedFiles(): Promise<string[]> {
  const root = server.config.artifactStoreDir;
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

async function counts() {
  const prisma = server.app.deps.prisma;
  return {
    scans: await prisma.scan.count(),
    artifacts: await prisma.artifact.count(),
    events: await prisma.scanEvent.count(),
    files: (await storedFiles()).length,
  };
}

let before: Awaited<ReturnType<typeof counts>>;

describe("submitting a scan", () => {
  it("queues a scan with its artifact and QUEUED event, and stores the file", async () => {
    const token = await server.token("alice");
    const archive = await buildZip([{ name: "src/index.ts", data: "export const answer = 42;\n" }]);
    const response = await submitScan(server, token, archive, { label: "first" });
    expect(response.status).toBe(200);
    const scan = response.body.data.submitScan.scan;
    expect(scan).toMatchObject({ status: "QUEUED", label: "first" });

    const row = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scan.id }, include: { sourceArtifact: true, events: true } });
    expect(row.sourceArtifact).toMatchObject({ kind: "SOURCE", sizeBytes: BigInt(archive.length), entryCount: 1 });
    expect(row.events.map((event) => event.code)).toEqual(["QUEUED"]);
    expect((await storedFiles()).some((file) => file.endsWith(row.sourceArtifact.storageKey))).toBe(true);
  });

  it("accepts an archive of many entries within the limit", async () => {
    // VEGA_MAX_ARCHIVE_ENTRIES is 100 here: exactly at the limit is within it.
    const archive = buildManyFilesZip(100);
    const response = await submitScan(server, await server.token("alice"), archive);
    expect(response.status).toBe(200);
    const scan = response.body.data.submitScan.scan;
    expect(scan.status).toBe("QUEUED");
    const row = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scan.id }, include: { sourceArtifact: true } });
    expect(row.sourceArtifact).toMatchObject({ entryCount: 100, sizeBytes: BigInt(archive.length) });
  });
});

describe("refusals leave nothing behind", () => {
  afterEach(async () => {
    expect(await counts()).toEqual(before);
  });

  const refusals: [string, () => Buffer | Promise<Buffer>, string, number, RegExp?][] = [
    ["more entries than VEGA_MAX_ARCHIVE_ENTRIES", () => buildManyFilesZip(101), "ARCHIVE_TOO_MANY_ENTRIES", 413],
    ["an end record declaring ten million entries", () => buildDeclaredEntryCountZip(), "ARCHIVE_TOO_MANY_ENTRIES", 413],
    ["declared uncompressed bytes over the limit", () => buildDeclaredSizeZip(65 * 1024 * 1024), "ARCHIVE_TOO_LARGE", 413],
    ["a file that is not a zip", () => buildNotAZip(), "ARCHIVE_INVALID", 422],
    ["a truncated zip", () => buildTruncatedZip(), "ARCHIVE_INVALID", 422],
    ["a corrupt central directory", () => buildCorruptCentralDirectoryZip(), "ARCHIVE_INVALID", 422],
    ["an absolute entry name", () => buildZipWithEntryName("/etc/passwd"), "ARCHIVE_INVALID", 422, /\/etc\/passwd/],
    ["an entry with a .. segment", () => buildZipWithEntryName("src/../../escape.ts"), "ARCHIVE_INVALID", 422, /\.\./],
    ["a backslash in a name", () => buildZipWithEntryName("src\\evil.ts"), "ARCHIVE_INVALID", 422],
    ["a NUL in a name", () => buildZipWithEntryName("src/a\u0000.ts"), "ARCHIVE_INVALID", 422],
    ["an encrypted entry", () => buildEncryptedZip(), "ARCHIVE_INVALID", 422],
    ["a symlink entry", () => buildSymlinkZip(), "ARCHIVE_INVALID", 422],
    ["duplicate names", () => buildDuplicateZip(), "ARCHIVE_INVALID", 422],
    ["overlapping entries (the zip bomb)", () => buildOverlappingZip(), "ARCHIVE_INVALID", 422],
  ];

  it.each(refusals)("refuses %s", async (_name, build, code, status, message) => {
    before = await counts();
    const response = await submitScan(server, await server.token("alice"), await build());
    expect(response.status).toBe(status);
    expect(response.code).toBe(code);
    if (message) expect(response.body.errors[0].message).toMatch(message);
  });

  it("refuses an upload whose Content-Length is over VEGA_MAX_SOURCE_BYTES before reading its body", async () => {
    before = await counts();
    // fetch declares a FormData body's length: the header alone refuses it.
    const oversized = new Blob([new Uint8Array(9 * 1024 * 1024)]);
    const response = await submitScan(server, await server.token("alice"), oversized);
    expect(response.status).toBe(413);
    expect(response.code).toBe("SOURCE_TOO_LARGE");
  });

  it("refuses an upload over VEGA_MAX_SOURCE_BYTES cut off mid-stream, leaving no partial file", async () => {
    before = await counts();
    // Chunked, with no Content-Length: the limit can only be found while the file streams to disk.
    // 64 MiB offered against a limit of 8 MiB: far more than the socket buffers between the two hold.
    const offered = 64 * 1024 * 1024;
    const response = await submitScanChunked(server, await server.token("alice"), offered);
    expect(response.status).toBe(413);
    expect(response.code).toBe("SOURCE_TOO_LARGE");
    // The refusal came while the client was still sending, not after the whole body was read.
    expect(response.sentBytes).toBeLessThan(offered);
    // afterEach: no scan, artifact or event, and no file (temporary or stored) is left.
  });

  it("refuses a multipart request without a preflight header (CSRF), before running it", async () => {
    before = await counts();
    const archive = await buildZip([{ name: "a.ts", data: "x" }]);
    const token = await server.token("alice");
    // No preflight header at all (a plain cross-site form can send multipart), and one sent empty.
    const withoutHeader = await fetch(server.graphqlUrl, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: multipartBody(archive) });
    const withEmptyHeader = await submitScan(server, token, archive, { headers: { "apollo-require-preflight": "" } });
    for (const response of [{ status: withoutHeader.status, body: await withoutHeader.json() }, withEmptyHeader]) {
      expect(response.status).toBe(400);
      expect(response.body.errors[0].extensions.code).toBe("BAD_USER_INPUT");
      expect(response.body.errors[0].message).toMatch(/CSRF/);
      expect(response.body.data).toBeUndefined();
    }
    // The same request with the header is accepted: the header is what decides.
    const withHeader = await submitScan(server, token, archive);
    expect(withHeader.status).toBe(200);
    before = await counts();
  });

  it("refuses an unauthenticated upload with 401 and a workspace the caller is not in with 404", async () => {
    before = await counts();
    const archive = await buildZip([{ name: "a.ts", data: "x" }]);
    expect((await submitScan(server, undefined, archive)).status).toBe(401);
    const response = await submitScan(server, await server.token("mallory"), archive, {
      workspaceId: "00000000-0000-4000-8000-000000000000",
    });
    expect(response.status).toBe(404);
    expect(response.code).toBe("NOT_FOUND");
  });
});
