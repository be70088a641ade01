import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorCodes, startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const LIMITS = `{ ops { limits { maxActiveScansPerUser maxSessionsPerWorkspace maxSourceBytes maxArchiveEntries
  maxArchiveUncompressedBytes workerHeartbeatIntervalSeconds workerHeartbeatTtlSeconds scanRunningStaleSeconds } } }`;

describe("operators read the limits in force", () => {
  it("shows DESIGN.md's defaults to a member of vega-ops, byte counts as exact decimal strings", async () => {
    const response = await server.gql(LIMITS, {}, await server.token("alice", { groups: ["vega-ops"] }));
    expect(response.status).toBe(200);
    expect(response.body.data.ops.limits).toEqual({
      maxActiveScansPerUser: 4,
      maxSessionsPerWorkspace: 20,
      maxSourceBytes: "2147483648",
      maxArchiveEntries: 50000,
      maxArchiveUncompressedBytes: "5368709120",
      workerHeartbeatIntervalSeconds: 15,
      workerHeartbeatTtlSeconds: 60,
      scanRunningStaleSeconds: 21600,
    });
  });

  it("answers 403 FORBIDDEN to a token without an operator group", async () => {
    const response = await server.gql(LIMITS, {}, await server.token("bob", { groups: ["developers"] }));
    expect(response.status).toBe(403);
    expect(errorCodes(response)).toEqual(["FORBIDDEN"]);
  });

  it("answers 401 UNAUTHENTICATED without a token", async () => {
    const response = await server.gql(LIMITS);
    expect(response.status).toBe(401);
    expect(errorCodes(response)).toEqual(["UNAUTHENTICATED"]);
  });

  it("does not let worker or runner tokens read ops", async () => {
    const worker = await server.gql(LIMITS, {}, await server.token("worker-1", { scope: "worker", groups: ["vega-ops"] }));
    expect(worker.status).toBe(403);
    const runner = await server.gql(LIMITS, {}, await server.token("runner", { scope: "runner", scanId: "x", groups: ["vega-ops"] }));
    expect(runner.status).toBe(403);
  });
});

describe("refuses bad tokens with 401", () => {
  const viewer = "{ viewer { id } }";

  it("refuses an expired token", async () => {
    const expired = await new SignJWT({ groups: [] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("alice")
      .setIssuedAt(Math.floor(Date.now() / 1000) - 7200)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 3600)
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    const response = await server.gql(viewer, {}, expired);
    expect(response.status).toBe(401);
    expect(response.body.errors?.[0].message).toMatch(/expired/);
  });

  it("refuses a token signed with another key", async () => {
    const forged = await new SignJWT({ groups: ["vega-ops"] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("mallory")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode("not-the-server-secret-not-the-server-secret"));
    const response = await server.gql(viewer, {}, forged);
    expect(response.status).toBe(401);
    expect(errorCodes(response)).toEqual(["UNAUTHENTICATED"]);
  });

  it("refuses a malformed token and an unsigned one", async () => {
    expect((await server.gql(viewer, {}, "not.a.jwt")).status).toBe(401);
    const unsigned = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from('{"sub":"root"}').toString("base64url")}.`;
    expect((await server.gql(viewer, {}, unsigned)).status).toBe(401);
  });
});

describe("the viewer", () => {
  it("reads groups from `groups` or `cognito:groups` and gets a personal workspace on first sight", async () => {
    const token = await new SignJWT({ "cognito:groups": ["vega-ops", "staff"] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("carol")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    const response = await server.gql("{ viewer { id groups isOperator workspaces { name personal } } }", {}, token);
    expect(response.body.data.viewer).toEqual({
      id: "carol",
      groups: ["vega-ops", "staff"],
      isOperator: true,
      workspaces: [{ name: "carol (personal)", personal: true }],
    });
  });
});
