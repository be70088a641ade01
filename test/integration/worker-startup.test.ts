/**
 * A worker that cannot register says why and exits non-zero; one whose trouble
 * can heal (an API away, answering 503) keeps trying. Real `vega worker`
 * processes against a test server.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { signToken } from "../../api/auth.ts";
import { expectNoStackTrace, runVega, startVega, stopProcess } from "../support/cli.ts";
import { httpServer } from "../support/http-stub.ts";
import { freePort } from "../support/processes.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { startWorkerProcess } from "../support/worker-process.ts";

vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });
const CLI = { timeoutMs: 240_000 };

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
      expectNoStackTrace(result.stderr);
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
