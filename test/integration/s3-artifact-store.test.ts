/**
 * The S3 artifact store against a real S3 server (s3rver, in a process of the
 * test's on an ephemeral port). Every stored object's bytes are read back and
 * hashed: s3rver answers success while storing a flexible-checksum body's
 * `aws-chunked` framing, so the SDK's answer alone proves nothing.
 */
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { readdir, readlink, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { openConfiguredArtifactStore, type ArtifactStore } from "../../api/services/artifact-store.ts";
import { startCleanup } from "../../api/services/cleanup-runs.ts";
import { openS3ArtifactStore } from "../../api/services/s3-artifact-store.ts";
import { removeOrphanFiles } from "../../api/hardening/cleanup/store-files.ts";
import { loadConfig } from "../../shared/config.ts";
import { runScanWithRunner, registerTestWorker, CLAIM, REPORT_STARTED } from "../support/execution.ts";
import { startS3Server, type S3Server } from "../support/s3.ts";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { buildNotAZip, buildZip } from "../support/zips.ts";

const PREFIX = "vega-test/artifacts";

let s3: S3Server;
let server: TestServer;
let alice: string;

beforeAll(async () => {
  s3 = await startS3Server();
  // The SDK takes credentials and the region from its standard chain: here, the environment.
  for (const [name, value] of Object.entries(s3.env(PREFIX))) if (name.startsWith("AWS_")) vi.stubEnv(name, value);
  server = await startTestServer({ ...s3.env(PREFIX), VEGA_ARTIFACT_RETENTION_SECONDS: "3600", VEGA_MAX_ACTIVE_SCANS_PER_USER: "50" });
  alice = await server.token("alice");
}, 180_000);
afterAll(async () => {
  await server?.close();
  await s3?.stop();
  vi.unstubAllEnvs();
});
beforeEach(async () => {
  const prisma = server.app.deps.prisma;
  await prisma.scan.deleteMany({});
  await prisma.artifact.deleteMany({});
  const objects = await s3.keys();
  await server.app.deps.artifacts.deleteMany(objects.map((object) => object.key.slice(`${PREFIX}/`.length)));
});

const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");
const store = (): ArtifactStore => server.app.deps.artifacts;
const objectKey = (storageKey: string) => `${PREFIX}/${storageKey}`;

async function submitted(files: Array<{ name: string; data: string }>) {
  const archive = await buildZip(files);
  const response = await submitScan(server, alice, archive);
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  const scanId = response.body.data.submitScan.scan.id as string;
  const scan = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId }, include: { sourceArtifact: true } });
  return { scanId, archive, artifact: scan.sourceArtifact };
}

describe("uploads into the S3 store", () => {
  it("keeps an accepted archive as one object with exactly the uploaded bytes, and no temporary file", async () => {
    const { archive, artifact } = await submitted([{ name: "src/a.ts", data: "export const a = 1;\n".repeat(1000) }]);

    expect(store().kind).toBe("s3");
    expect(await s3.keys(`${PREFIX}/`)).toEqual([{ key: objectKey(artifact.storageKey), size: archive.length }]);
    expect(await s3.sha256Of(objectKey(artifact.storageKey))).toBe(sha256(archive));
    expect(artifact.sha256).toBe(sha256(archive));
    expect(await readdir(store().tmpDir)).toEqual([]);
  });

  it("stores a multipart upload (larger than one part) byte for byte", async () => {
    // Incompressible content: the archive is larger than the 16 MiB part size.
    const noise = createHash("sha512");
    const chunks: string[] = [];
    for (let i = 0; i < 300_000; i++) chunks.push(noise.update(String(i)).copy().digest("base64"));
    const { archive, artifact } = await submitted([{ name: "data/noise.txt", data: chunks.join("\n") }]);

    expect(archive.length).toBeGreaterThan(16 * 1024 * 1024);
    expect(await s3.sha256Of(objectKey(artifact.storageKey))).toBe(sha256(archive));
  });

  it("creates no object for a refused upload", async () => {
    const response = await submitScan(server, alice, buildNotAZip());

    expect(response.code).toBe("ARCHIVE_INVALID");
    expect(await s3.keys()).toEqual([]);
    expect(await readdir(store().tmpDir)).toEqual([]);
  });
});

/**
 * An HTTP hop in front of s3rver that answers UploadPart requests of one part number with a 500 (S3's
 * InternalError), `failures` times, and records the requests it saw, in order.
 */
async function startFaultyHop(target: string, failing: { partNumber: string; failures: number }) {
  const seen: string[] = [];
  const hop = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", target);
    const name = `${req.method} ${url.searchParams.has("uploadId") ? (url.searchParams.get("partNumber") ?? "uploadId") : url.search || "-"}`;
    seen.push(name);
    if (url.searchParams.get("partNumber") === failing.partNumber && failing.failures > 0) {
      failing.failures--;
      req.resume();
      req.on("end", () => {
        res.writeHead(500, { "content-type": "application/xml" });
        res.end("<Error><Code>InternalError</Code><Message>injected by the test</Message></Error>");
      });
      return;
    }
    const forwarded = http.request(url, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forwarded.on("error", () => res.destroy());
    req.pipe(forwarded);
  });
  hop.listen(0, "127.0.0.1");
  await once(hop, "listening");
  return {
    endpoint: `http://127.0.0.1:${(hop.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((resolve) => hop.close(() => resolve())),
  };
}

/** Descriptors of this process open on `file`. */
async function descriptorsOn(file: string) {
  const links = await Promise.all((await readdir("/proc/self/fd")).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  return links.filter((link) => link === file).length;
}

describe("multipart commits into the S3 store", () => {
  const THREE_PARTS = 40 * 1024 * 1024;

  async function commitThrough(hop: { endpoint: string }) {
    const hopStore = await openS3ArtifactStore({ bucket: s3.bucket, prefix: `${PREFIX}/`, tmpDir: store().tmpDir, endpoint: hop.endpoint, forcePathStyle: true });
    const tempPath = hopStore.tempPath("upload");
    const bytes = randomBytes(THREE_PARTS);
    await writeFile(tempPath, bytes);
    const committed = await hopStore.commit(tempPath, "sources").then(
      (storageKey) => ({ storageKey }),
      (error: unknown) => ({ error }),
    );
    hopStore.client.destroy();
    return { tempPath, bytes, committed };
  }

  it("sends a part again after a server error, from the file, and stores the exact bytes", async () => {
    const hop = await startFaultyHop(s3.endpoint, { partNumber: "2", failures: 1 });
    try {
      const { bytes, committed, tempPath } = await commitThrough(hop);

      expect(committed).toHaveProperty("storageKey");
      const { storageKey } = committed as { storageKey: string };
      expect(await s3.sha256Of(objectKey(storageKey))).toBe(sha256(bytes));
      expect(hop.seen.filter((request) => request === "PUT 2")).toHaveLength(2);
      expect(await descriptorsOn(tempPath)).toBe(0);
      await expect(readdir(store().tmpDir)).resolves.toEqual([]);
    } finally {
      await hop.close();
    }
  });

  it("aborts the multipart upload once its parts in flight settled when a part keeps failing, and keeps no object", async () => {
    const hop = await startFaultyHop(s3.endpoint, { partNumber: "2", failures: Infinity });
    try {
      const { committed, tempPath } = await commitThrough(hop);

      expect(committed).toHaveProperty("error");
      expect(hop.seen.filter((request) => request === "PUT 2")).toHaveLength(4);
      // The abort comes last: no part is sent after it, and no completion before or after it.
      expect(hop.seen.at(-1)).toBe("DELETE uploadId");
      expect(hop.seen).not.toContain("POST uploadId");
      expect(await s3.keys(`${PREFIX}/sources/`)).toEqual([]);
      // The temporary file stays for the caller (the upload path removes it), with no descriptor left open on it.
      expect(await descriptorsOn(tempPath)).toBe(0);
      await rm(tempPath, { force: true });
    } finally {
      await hop.close();
    }
  });
});

describe("the runner with the S3 store", () => {
  it("downloads its archive through a presigned URL, checks it and completes the scan with its findings", async () => {
    const awsKey = "AKIA" + "Q3EGRZ7BXK4WNJ2T";
    const { scanId } = await submitted([{ name: "src/config.ts", data: `export const accessKeyId = "${awsKey}";\n` }]);

    const result = await runScanWithRunner(server, scanId);

    expect(result.code, result.stderr).toBe(0);
    const scan = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId }, include: { findings: true } });
    expect(scan.status).toBe("SUCCEEDED");
    expect(scan.findings.map((row) => [row.ruleId, row.path])).toContainEqual(["aws-access-key-id", "src/config.ts"]);
  });

  it("hands the runner of the current claim a short-lived URL to the exact bytes, and no one else", async () => {
    const { scanId, archive } = await submitted([{ name: "src/b.ts", data: "export const b = 2;\n" }]);
    const worker = await registerTestWorker(server, "presign-worker");
    const claim = (await server.gql(CLAIM, { workerId: worker.id, max: 10 }, worker.token)).body.data.claimScans.find(
      (candidate: { scan: { id: string } }) => candidate.scan.id === scanId,
    );
    await server.gql(REPORT_STARTED, { scanId, taskId: "local:1" }, worker.token);
    const query = `query ($scanId: ID!) { sourceDownload(scanId: $scanId) { url withToken expiresAt sha256 } }`;

    const answer = await server.gql(query, { scanId }, claim.runnerToken);

    const download = answer.body.data.sourceDownload;
    expect(download).toMatchObject({ withToken: false, sha256: sha256(archive) });
    expect(download.url.startsWith(`${s3.endpoint}/${s3.bucket}/`)).toBe(true);
    const expiresInSeconds = (Date.parse(download.expiresAt) - Date.now()) / 1000;
    expect(expiresInSeconds).toBeGreaterThan(0);
    expect(expiresInSeconds).toBeLessThanOrEqual(server.config.artifactUrlTtlSeconds);
    const fetched = Buffer.from(await (await fetch(download.url)).arrayBuffer());
    expect(sha256(fetched)).toBe(sha256(archive));
    // The URL's signature covers the key: the same URL for another key reads nothing.
    const tampered = download.url.replace(/sources\/[^?]+/, "sources/2000-01/someone-else");
    expect((await fetch(tampered)).ok).toBe(false);
    expect(errorCodes(await server.gql(query, { scanId }, alice))).toEqual(["FORBIDDEN"]);
  });
});

describe("cleanup on the S3 store", () => {
  async function finishedLongAgo(scanId: string) {
    const scan = await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
    await server.app.deps.prisma.artifact.update({ where: { id: scan.sourceArtifactId }, data: { createdAt: new Date(Date.now() - 4 * 3600_000) } });
    await server.app.deps.prisma.scan.update({
      where: { id: scanId },
      data: { status: "SUCCEEDED", startedAt: new Date(Date.now() - 3 * 3600_000), finishedAt: new Date(Date.now() - 2 * 3600_000) },
    });
  }

  async function runCleanup(dryRun: boolean) {
    const start = await startCleanup(server.app.deps, { trigger: "CLI", triggeredBy: "test", dryRun, jobs: ["artifacts", "orphanFiles"] });
    if (start.outcome !== "started") throw new Error(`cleanup did not start: ${start.outcome}`);
    return start.finished;
  }

  it("a dry run counts the expired archives and their bytes and removes nothing; the real run removes exactly those", async () => {
    const expired = [await submitted([{ name: "a.ts", data: "a\n" }]), await submitted([{ name: "b.ts", data: "b\n" }])];
    const recent = await submitted([{ name: "c.ts", data: "c\n" }]);
    for (const { scanId } of expired) await finishedLongAgo(scanId);
    const expiredBytes = expired.reduce((sum, { archive }) => sum + archive.length, 0);

    const dry = await runCleanup(true);

    expect(dry).toMatchObject({ status: "SUCCEEDED", counts: { artifacts: 2, orphanFiles: 0 }, bytesFreed: BigInt(expiredBytes) });
    expect(await s3.keys(`${PREFIX}/`)).toHaveLength(3);

    const real = await runCleanup(false);

    expect(real).toMatchObject({ status: "SUCCEEDED", counts: { artifacts: 2, orphanFiles: 0 }, bytesFreed: BigInt(expiredBytes) });
    expect((await s3.keys(`${PREFIX}/`)).map((object) => object.key)).toEqual([objectKey(recent.artifact.storageKey)]);
    expect(await s3.sha256Of(objectKey(recent.artifact.storageKey))).toBe(sha256(recent.archive));
    for (const { artifact } of expired) {
      expect((await server.app.deps.prisma.artifact.findUniqueOrThrow({ where: { id: artifact.id } })).deletedAt).not.toBeNull();
    }
    expect((await runCleanup(false)).counts).toEqual({ artifacts: 0, orphanFiles: 0 });
  });

  it("finds orphaned objects across listing pages and deletes them in batches, keeping live and recent ones", async () => {
    const live = await submitted([{ name: "live.ts", data: "live\n" }]);
    const orphanKeys = Array.from({ length: 12 }, (_, index) => `sources/2000-01/orphan-${String(index).padStart(3, "0")}`);
    const body = Buffer.from("orphaned bytes");
    for (const key of orphanKeys) await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: objectKey(key), Body: body }));
    // The same bucket and prefix with small pages (S3's are 1,000 keys per ListObjectsV2 page and per
    // DeleteObjects call; writing thousands of objects to s3rver takes minutes here): several of each.
    const pagedStore = await openS3ArtifactStore({
      bucket: s3.bucket,
      prefix: `${PREFIX}/`,
      tmpDir: store().tmpDir,
      endpoint: s3.endpoint,
      forcePathStyle: true,
      batchSizes: { list: 5, delete: 4 },
    });
    const pages: number[] = [];
    for await (const page of pagedStore.list("sources")) pages.push(page.length);
    expect(pages).toEqual([5, 5, 3]);
    const context = (dryRun: boolean, hoursAhead: number) => ({
      prisma: server.app.deps.prisma,
      artifacts: pagedStore,
      config: server.config,
      log: server.app.deps.log,
      dryRun,
      // s3rver stamps objects with the time they were written: the run's clock is moved past the hour of grace instead.
      now: new Date(Date.now() + hoursAhead * 3600_000),
    });

    const fresh = { count: 0, bytes: 0 };
    await removeOrphanFiles(context(false, 0), fresh);
    expect(fresh).toEqual({ count: 0, bytes: 0 });

    const dry = { count: 0, bytes: 0 };
    await removeOrphanFiles(context(true, 2), dry);
    expect(dry).toEqual({ count: orphanKeys.length, bytes: orphanKeys.length * body.length });
    expect(await s3.keys(`${PREFIX}/`)).toHaveLength(orphanKeys.length + 1);

    const real = { count: 0, bytes: 0 };
    await removeOrphanFiles(context(false, 2), real);
    expect(real).toEqual(dry);
    expect((await s3.keys(`${PREFIX}/`)).map((object) => object.key)).toEqual([objectKey(live.artifact.storageKey)]);
    expect(await s3.sha256Of(objectKey(live.artifact.storageKey))).toBe(sha256(live.archive));
  });
});

describe("choosing the store", () => {
  it("opens the S3 store for s3://bucket/prefix and the local one by default", async () => {
    const dir = server.dataDir;
    const local = await openConfiguredArtifactStore(loadConfig({ VEGA_DATA_DIR: dir }));
    expect(local.kind).toBe("local");
    expect(await local.downloadLocation("sources/x", 60)).toEqual({ kind: "api" });
    const remote = await openConfiguredArtifactStore(loadConfig({ VEGA_DATA_DIR: dir, ...s3.env("some/prefix/") }));
    expect(remote.location).toBe(`s3://${s3.bucket}/some/prefix/`);
  });

  it("refuses a VEGA_ARTIFACT_STORE that is neither local nor an s3:// URL", () => {
    expect(() => loadConfig({ VEGA_ARTIFACT_STORE: "gs://bucket/x" })).toThrow(/VEGA_ARTIFACT_STORE/);
    expect(() => loadConfig({ VEGA_ARTIFACT_STORE: "s3://" })).toThrow(/VEGA_ARTIFACT_STORE/);
  });
});
