/**
 * A process that cannot do its job says why and exits non-zero, at once and
 * having started nothing; a process whose trouble can heal keeps trying. Real
 * `vega serve`, `vega start`, `vega maintenance` and `vega worker` processes on
 * ports and data directories of the test's.
 */
import http from "node:http";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { signToken } from "../../api/auth.ts";
import { runVega, startVega, stopProcess } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { freePort, startVegaServer } from "../support/processes.ts";
import { startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { startWorkerProcess } from "../support/worker-process.ts";

vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });
const CLI = { timeoutMs: 240_000 };

const dirs: string[] = [];
/** A data directory: empty, or holding a migrated embedded database (seeded). */
const dataDir = async ({ seeded }: { seeded: boolean }) => {
  const dir = seeded ? await migratedDataDir("vega-startup-") : await mkdtemp(path.join(os.tmpdir(), "vega-startup-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));

/** An HTTP server of the test's on 127.0.0.1, answering with `handler`. */
async function httpServer(handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/\n\s+at /);

describe("settings and addresses that cannot work", () => {
  it("refuses VEGA_PORT=70000 with the other settings, before anything starts", async () => {
    const dir = await dataDir({ seeded: false });
    const result = await runVega(["serve"], { VEGA_DATA_DIR: dir, VEGA_PORT: "70000" }, CLI);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('VEGA_PORT="70000" is not a TCP port (1-65535');
    noStackTrace(result.stderr);
    expect(await readdir(dir)).toEqual([]);
  });

  it("exits 1 at once when the port is in use (serve and start), releasing the data directory; the data is intact after", async () => {
    const dir = await dataDir({ seeded: true });
    const secret = { VEGA_JWT_SECRET: TEST_JWT_SECRET };
    const workerToken = await signToken(new TextEncoder().encode(TEST_JWT_SECRET), { sub: "fleet", scope: "worker", ttlSeconds: 600 });
    const opsToken = await signToken(new TextEncoder().encode(TEST_JWT_SECRET), { sub: "olga", groups: ["vega-ops"], ttlSeconds: 600 });
    // A write reported done before the failed starts.
    const first = await startVegaServer("serve", { VEGA_DATA_DIR: dir, ...secret });
    const registered = await first.gql(
      `mutation { registerWorker(input: { name: "before", host: "h", pid: 1, version: "1", capacity: 1 }) { worker { id } } }`,
      {},
      workerToken,
    );
    expect(registered.errors).toBeUndefined();
    expect(await first.stop()).toBe(0);

    const squatter = await httpServer((_req, res) => res.end("taken"));
    const port = new URL(squatter.url).port;
    try {
      for (const command of ["serve", "start"]) {
        const result = await runVega([command], { VEGA_DATA_DIR: dir, VEGA_HOST: "127.0.0.1", VEGA_PORT: port, ...secret }, CLI);
        expect(result.code, result.stderr).toBe(1);
        expect(result.stderr).toContain(`cannot listen on 127.0.0.1:${port}: the port is already in use`);
        noStackTrace(result.stderr);
        expect(await readdir(dir)).not.toContain("vega.lock");
      }
    } finally {
      await squatter.close();
    }

    const again = await startVegaServer("serve", { VEGA_DATA_DIR: dir, ...secret });
    try {
      const { data } = await again.gql(`{ ops { workers { id name } } }`, {}, opsToken);
      expect(data.ops.workers).toEqual([{ id: registered.data.registerWorker.worker.id, name: "before" }]);
    } finally {
      await again.stop();
    }
  });

  it('says "cannot connect to …" when VEGA_DATABASE_URL names a port where no PostgreSQL listens', async () => {
    const url = `postgresql://vega@127.0.0.1:${await freePort()}/vega`;
    const served = await runVega(["serve"], { VEGA_DATABASE_URL: url, VEGA_JWT_SECRET: TEST_JWT_SECRET, VEGA_PORT: "0" }, CLI);
    expect(served.code).toBe(1);
    expect(served.stderr).toContain(`cannot connect to the database at ${url}`);
    expect(served.stderr).not.toContain("pending migrations");
    noStackTrace(served.stderr);

    const migrated = await runVega(["maintenance", "migrate"], { VEGA_DATABASE_URL: url }, CLI);
    expect(migrated.code).toBe(1);
    expect(JSON.parse(migrated.stdout)).toMatchObject({ ok: false, error: expect.stringContaining(`cannot connect to the database at ${url}`) });
  });
});

describe("a worker whose registration cannot succeed", () => {
  let api: TestServer;
  beforeAll(async () => {
    api = await startTestServer();
  });
  afterAll(() => api?.close());

  it("exits 1 naming VEGA_API_URL when the address answers 404", async () => {
    const elsewhere = await httpServer((_req, res) => {
      res.statusCode = 404;
      res.end("<html>not here</html>");
    });
    try {
      const token = await api.token("fleet", { scope: "worker" });
      const result = await runVega(["worker"], { VEGA_API_URL: `${elsewhere.url}/graphql`, VEGA_WORKER_TOKEN: token }, CLI);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`VEGA_API_URL=${elsewhere.url}/graphql answered 404`);
      noStackTrace(result.stderr);
    } finally {
      await elsewhere.close();
    }
  });

  it("exits 1 naming VEGA_WORKER_TOKEN when the token lacks the worker scope, or is not signed with the API's key", async () => {
    const userToken = await api.token("alice");
    const scope = await runVega(["worker"], { VEGA_API_URL: api.graphqlUrl, VEGA_WORKER_TOKEN: userToken }, CLI);
    expect(scope.code).toBe(1);
    expect(scope.stderr).toContain("VEGA_WORKER_TOKEN must have vega_scope=worker");

    const foreign = await signToken(new TextEncoder().encode("another-key-that-is-long-enough-for-hs256"), { sub: "fleet", scope: "worker", ttlSeconds: 600 });
    const unsigned = await runVega(["worker"], { VEGA_API_URL: api.graphqlUrl, VEGA_WORKER_TOKEN: foreign }, CLI);
    expect(unsigned.code).toBe(1);
    expect(unsigned.stderr).toContain("VEGA_WORKER_TOKEN must be a valid token");
    expect(await api.app.deps.prisma.worker.count()).toBe(0);
  });
});

describe("a worker whose API is away", () => {
  let api: TestServer;
  beforeAll(async () => {
    api = await startTestServer({ VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1", VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "30" });
  });
  afterAll(() => api?.close());

  it("keeps retrying a refused connection, and stops with 0 on SIGTERM", async () => {
    const token = await api.token("fleet", { scope: "worker" });
    const worker = await startVega(
      ["worker"],
      { VEGA_API_URL: `http://127.0.0.1:${await freePort()}/graphql`, VEGA_WORKER_TOKEN: token, VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1" },
      /(?:"msg":"registration failed; retrying"[^]*?){3}/,
      { timeoutMs: 120_000 },
    );
    expect(worker.child.exitCode).toBeNull();
    expect(await stopProcess(worker.child)).toBe(0);
  });

  it("keeps retrying 503s and registers once the API answers; the registration is in the registry", async () => {
    let refusals = 0;
    const flaky = await httpServer(async (req, res) => {
      if (refusals < 3) {
        refusals++;
        res.statusCode = 503;
        res.end("starting");
        return;
      }
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const answer = await fetch(api.graphqlUrl, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: req.headers.authorization ?? "" },
        body: Buffer.concat(chunks),
      });
      res.statusCode = answer.status;
      res.setHeader("content-type", "application/json");
      res.end(Buffer.from(await answer.arrayBuffer()));
    });
    try {
      const worker = await startWorkerProcess("after-503s", {
        VEGA_API_URL: `${flaky.url}/graphql`,
        VEGA_WORKER_TOKEN: await api.token("fleet", { scope: "worker" }),
        VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "1",
      });
      expect(refusals).toBe(3);
      expect(worker.logLines().filter((line) => line.msg === "registration failed; retrying")).toHaveLength(3);
      expect(await stopProcess(worker.child)).toBe(0);
      const row = await api.app.deps.prisma.worker.findUniqueOrThrow({ where: { id: worker.workerId } });
      expect(row).toMatchObject({ name: "after-503s", deregisteredAt: expect.any(Date) });
    } finally {
      await flaky.close();
    }
  });
});
