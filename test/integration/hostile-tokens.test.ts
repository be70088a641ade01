/**
 * Tokens and browsers: every token must expire, may not be dated ahead of the
 * server's clock, and carries a bounded subject and groups; cross-origin
 * browser calls are allowed from VEGA_CORS_ORIGINS only; the schema is
 * introspectable by authenticated callers only. Real signed tokens, a real
 * server (and a real JWKS endpoint for the OIDC path).
 */
import { createServer, type Server } from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config.ts";
import { runVega } from "../support/cli.ts";
import { CLAIM, registerTestWorker } from "../support/execution.ts";
import { insertScan } from "../support/fixtures.ts";
import { errorCodes, startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";

const key = new TextEncoder().encode(TEST_JWT_SECRET);
const now = () => Math.floor(Date.now() / 1000);
const VIEWER = "{ viewer { id groups } }";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  if (server) await expectServerStillUntouched(server);
  await server?.close();
});

/** An HS256 token with exactly these claims (a `sub` of "alice" unless given), as any issuer could sign it. */
function token(claims: JWTPayload & Record<string, unknown>) {
  return new SignJWT({ sub: "alice", ...claims }).setProtectedHeader({ alg: "HS256" }).sign(key);
}

describe("a bearer token must expire, and not be dated ahead of the server", () => {
  it("refuses a token without exp", async () => {
    const response = await server.gql(VIEWER, {}, await token({ iat: now() }));
    expect(response.status).toBe(401);
    expect(errorCodes(response)).toEqual(["UNAUTHENTICATED"]);
    expect(response.body.errors?.[0].message).toMatch(/no expiry \(exp\)/);
    await expectServerUntouched(server);
  });

  it("refuses a token issued an hour ahead, and takes one within the clock skew", async () => {
    const ahead = await server.gql(VIEWER, {}, await token({ iat: now() + 3600, exp: now() + 7200 }));
    expect(ahead.status).toBe(401);
    expect(ahead.body.errors?.[0].message).toMatch(/issued in the future/);
    const skewed = await server.gql(VIEWER, {}, await token({ iat: now() + 30, exp: now() + 3600 }));
    expect(skewed.body.data?.viewer.id).toBe("alice");
  });

  it("refuses a token expired beyond the clock skew, and takes one just expired within it", async () => {
    expect((await server.gql(VIEWER, {}, await token({ iat: now() - 600, exp: now() - 120 }))).status).toBe(401);
    expect((await server.gql(VIEWER, {}, await token({ iat: now() - 600, exp: now() - 30 }))).body.data?.viewer.id).toBe("alice");
  });

  it("carries exp in every token Vega mints: `vega token`, a worker's session token, a runner's token", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-token-"));
    try {
      const printed = await runVega(["token", "--sub", "alice"], { VEGA_JWT_SECRET: TEST_JWT_SECRET, VEGA_DATA_DIR: dataDir });
      expect(printed.code, printed.stderr).toBe(0);
      expect(decodeJwt(printed.stdout.trim()).exp).toBeGreaterThan(now());
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
    const worker = await registerTestWorker(server, "minted");
    expect(decodeJwt(worker.token).exp).toBeGreaterThan(now());
    await insertScan(server.app.deps.prisma, { ownerId: "alice" });
    const claimed = await server.gql(CLAIM, { workerId: worker.id, max: 1 }, worker.token);
    expect(claimed.body.errors).toBeUndefined();
    expect(decodeJwt(claimed.body.data.claimScans[0].runnerToken).exp).toBeGreaterThan(now());
  });
});

describe("a token's subject and groups are bounded", () => {
  it("refuses a 10 KB subject without creating a user", async () => {
    const longSub = "x".repeat(10 * 1024);
    const response = await server.gql(VIEWER, {}, await token({ sub: longSub, exp: now() + 600 }));
    expect(response.status).toBe(401);
    expect(response.body.errors?.[0].message).toMatch(/subject is longer than 255 characters/);
    expect(await server.app.deps.prisma.user.count({ where: { id: { startsWith: "xxxxxxxxxx" } } })).toBe(0);
    await expectServerUntouched(server);
  });

  it("takes a subject and a group of 255 characters, and refuses a group of 256", async () => {
    const sub = "s".repeat(255);
    const group = "g".repeat(255);
    const taken = await server.gql(VIEWER, {}, await token({ sub, groups: [group], exp: now() + 600 }));
    expect(taken.body.data?.viewer).toEqual({ id: sub, groups: [group] });
    const refused = await server.gql(VIEWER, {}, await token({ groups: ["g".repeat(256)], exp: now() + 600 }));
    expect(refused.status).toBe(401);
    expect(refused.body.errors?.[0].message).toMatch(/group longer than 255 characters/);
  });
});

describe("tokens of an OIDC issuer (JWKS) must expire too", () => {
  let jwks: Server;
  let oidc: TestServer;
  let privateKey: CryptoKey;
  beforeAll(async () => {
    const pair = await generateKeyPair("RS256");
    privateKey = pair.privateKey as CryptoKey;
    const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "test-key", alg: "RS256", use: "sig" };
    jwks = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: [publicJwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, "127.0.0.1", resolve));
    const port = (jwks.address() as AddressInfo).port;
    oidc = await startTestServer({
      VEGA_JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks.json`,
      VEGA_JWT_ISSUER: "https://issuer.test",
      VEGA_JWT_AUDIENCE: "vega",
    });
  });
  afterAll(async () => {
    if (oidc) await expectServerStillUntouched(oidc);
    await oidc?.close();
    await new Promise((resolve) => jwks?.close(resolve));
  });

  const issued = (claims: JWTPayload) =>
    new SignJWT({ sub: "carol", iss: "https://issuer.test", aud: "vega", iat: now(), ...claims })
      .setProtectedHeader({ alg: "RS256", kid: "test-key" })
      .sign(privateKey);

  it("refuses the issuer's token without exp and takes it with one", async () => {
    const refused = await oidc.gql(VIEWER, {}, await issued({}));
    expect(refused.status).toBe(401);
    expect(refused.body.errors?.[0].message).toMatch(/no expiry \(exp\)/);
    expect((await oidc.gql(VIEWER, {}, await issued({ exp: now() + 600 }))).body.data?.viewer.id).toBe("carol");
    await expectServerUntouched(oidc);
  });
});

describe("cross-origin browser calls", () => {
  const origin = "https://app.example.com";
  const preflight = (url: string, from: string) =>
    fetch(url, {
      method: "OPTIONS",
      headers: { origin: from, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
  const corsHeaders = (response: Response) => [...response.headers].filter(([name]) => name.startsWith("access-control-"));
  const query = (url: string, headers: Record<string, string>) =>
    fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ query: "{ __typename }" }) });

  it("are allowed from no origin by default, while same-origin pages keep working", async () => {
    const foreign = await query(server.graphqlUrl, { origin: "https://evil.example" });
    expect(corsHeaders(foreign)).toEqual([]);
    expect(corsHeaders(await preflight(server.graphqlUrl, "https://evil.example"))).toEqual([]);
    const sameOrigin = await query(server.graphqlUrl, { origin: server.url });
    expect(sameOrigin.status).toBe(200);
    expect((await sameOrigin.json()).data).toEqual({ __typename: "Query" });
    await expectServerUntouched(server);
  });

  describe("with VEGA_CORS_ORIGINS", () => {
    let allowing: TestServer;
    beforeAll(async () => {
      allowing = await startTestServer({ VEGA_CORS_ORIGINS: `${origin}, https://admin.example.com` });
    });
    afterAll(async () => {
      if (allowing) await expectServerStillUntouched(allowing);
      await allowing?.close();
    });

    it("allows a listed origin, without credentials, and no other", async () => {
      const allowed = await query(allowing.graphqlUrl, { origin });
      expect(allowed.headers.get("access-control-allow-origin")).toBe(origin);
      expect(allowed.headers.get("access-control-allow-credentials")).toBeNull();
      expect(allowed.headers.get("vary")).toMatch(/Origin/);
      const allowedPreflight = await preflight(allowing.graphqlUrl, origin);
      expect(allowedPreflight.status).toBe(204);
      expect(allowedPreflight.headers.get("access-control-allow-origin")).toBe(origin);
      expect(allowedPreflight.headers.get("access-control-allow-methods")).toBe("GET, POST");
      expect(allowedPreflight.headers.get("access-control-allow-headers")).toMatch(/authorization/);
      for (const response of [await query(allowing.graphqlUrl, { origin: "https://evil.example" }), await preflight(allowing.graphqlUrl, "https://evil.example")]) {
        expect(corsHeaders(response)).toEqual([]);
      }
      await expectServerUntouched(allowing);
    });

    it("refuses a setting that is not a list of origins, naming it", () => {
      expect(() => loadConfig({ VEGA_CORS_ORIGINS: "https://app.example.com/" })).toThrow(/VEGA_CORS_ORIGINS.*is not an origin/);
      expect(() => loadConfig({ VEGA_CORS_ORIGINS: "*" })).toThrow(/VEGA_CORS_ORIGINS/);
    });
  });
});

describe("the schema is introspectable by authenticated callers only", () => {
  it("refuses __schema and __type to an anonymous caller with 400, and answers a user", async () => {
    for (const introspection of ["{ __schema { queryType { name } } }", '{ __type(name: "Scan") { name } }']) {
      const anonymous = await server.gql(introspection);
      expect(anonymous.status).toBe(400);
      expect(errorCodes(anonymous)).toEqual(["GRAPHQL_VALIDATION_FAILED"]);
      expect(anonymous.body.errors?.[0].message).toMatch(/needs a bearer token/);
      const user = await server.gql(introspection, {}, await server.token("alice"));
      expect(user.body.errors).toBeUndefined();
    }
    expect((await server.gql("{ __typename }")).body.data).toEqual({ __typename: "Query" });
    await expectServerUntouched(server);
  });
});
