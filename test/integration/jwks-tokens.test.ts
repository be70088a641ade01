/**
 * People's tokens from an OIDC issuer (VEGA_JWT_JWKS_URL, VEGA_JWT_ISSUER,
 * VEGA_JWT_AUDIENCE), verified against a real JWKS endpoint on a local port
 * that serves one RSA and one EC public key: RS256 and ES256 tokens of the
 * issuer are taken; a wrong issuer or audience, a key the JWKS does not hold,
 * an expired token, an algorithm the key is not for, and an HS256 token
 * signed with the issuer's public key (the algorithm-confusion attack) are
 * refused with UNAUTHENTICATED (401).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorCodes, startTestServer, type TestServer } from "../support/server.ts";

const ISSUER = "https://issuer.test";
const AUDIENCE = "vega";
const VIEWER = "{ viewer { id groups isOperator } }";
const now = () => Math.floor(Date.now() / 1000);

let jwks: Server;
let jwksRequests = 0;
let server: TestServer;
let rsa: { privateKey: CryptoKey; publicKey: CryptoKey };
let ec: { privateKey: CryptoKey; publicKey: CryptoKey };

beforeAll(async () => {
  rsa = (await generateKeyPair("RS256", { extractable: true })) as typeof rsa;
  ec = (await generateKeyPair("ES256")) as typeof ec;
  const keys = [
    { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
    { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
  ];
  jwks = createServer((req, res) => {
    jwksRequests++;
    if (req.url !== "/.well-known/jwks.json") return void res.writeHead(404).end();
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => jwks.listen(0, "127.0.0.1", resolve));
  const port = (jwks.address() as AddressInfo).port;
  server = await startTestServer({
    VEGA_JWT_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    VEGA_JWT_ISSUER: ISSUER,
    VEGA_JWT_AUDIENCE: AUDIENCE,
  });
});
afterAll(async () => {
  await server?.close();
  await new Promise((resolve) => jwks?.close(resolve));
});

/** A token as the issuer would sign it, with `claims` over the good defaults. */
function issued(alg: string, kid: string, key: CryptoKey | Uint8Array, claims: JWTPayload = {}) {
  return new SignJWT({ sub: "carol", groups: ["vega-ops"], iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 600, ...claims })
    .setProtectedHeader({ alg, kid })
    .sign(key);
}

async function expectRefused(token: string, message: RegExp) {
  const response = await server.gql(VIEWER, {}, token);
  expect(response.status).toBe(401);
  expect(errorCodes(response)).toEqual(["UNAUTHENTICATED"]);
  expect(response.body.errors?.[0].message).toMatch(message);
  expect(response.body.data ?? null).toBeNull();
}

describe("tokens of the JWKS issuer", () => {
  it("takes an RS256 token signed with the issuer's RSA key, fetching the key from the JWKS", async () => {
    const response = await server.gql(VIEWER, {}, await issued("RS256", "rsa-1", rsa.privateKey));
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.viewer).toEqual({ id: "carol", groups: ["vega-ops"], isOperator: true });
    // The key came from the endpoint (once fetched, jose keeps the set for a while).
    expect(jwksRequests).toBeGreaterThan(0);
  });

  it("takes an ES256 token signed with the issuer's EC key", async () => {
    const response = await server.gql(VIEWER, {}, await issued("ES256", "ec-1", ec.privateKey, { sub: "dana", groups: [] }));
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.viewer).toEqual({ id: "dana", groups: [], isOperator: false });
  });
});

describe("tokens the JWKS issuer's keys do not vouch for", () => {
  it("refuses a token from another issuer", async () => {
    await expectRefused(await issued("RS256", "rsa-1", rsa.privateKey, { iss: "https://elsewhere.test" }), /claim rejected.*iss/);
  });

  it("refuses a token for another audience", async () => {
    await expectRefused(await issued("ES256", "ec-1", ec.privateKey, { aud: "another-service" }), /claim rejected.*aud/);
  });

  it("refuses a token whose key id the JWKS does not hold", async () => {
    const stranger = await generateKeyPair("RS256");
    await expectRefused(await issued("RS256", "rsa-2", stranger.privateKey), /Bearer token/);
  });

  it("refuses a token signed by another key under a key id the JWKS holds", async () => {
    const stranger = await generateKeyPair("RS256");
    await expectRefused(await issued("RS256", "rsa-1", stranger.privateKey), /signature is invalid/);
  });

  it("refuses an expired token of the issuer", async () => {
    await expectRefused(await issued("RS256", "rsa-1", rsa.privateKey, { iat: now() - 7200, exp: now() - 3600 }), /expired/);
  });

  it("refuses a token whose algorithm is not the one its key is for", async () => {
    // The RSA key is published for RS256: an RS384 signature by the same private key is not taken.
    const sameKeyForRs384 = await importJWK(await exportJWK(rsa.privateKey), "RS384");
    await expectRefused(await issued("RS384", "rsa-1", sameKeyForRs384 as CryptoKey), /Bearer token/);
    // An ES256 signature under the RSA key's id.
    await expectRefused(await issued("ES256", "rsa-1", ec.privateKey), /Bearer token/);
  });

  it("refuses an HS256 token signed with the issuer's public key as the HMAC secret", async () => {
    const publicPem = new TextEncoder().encode(await exportSPKI(rsa.publicKey));
    await expectRefused(await issued("HS256", "rsa-1", publicPem), /signature is invalid/);
  });
});
