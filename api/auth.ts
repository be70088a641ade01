/**
 * Bearer tokens. HS256 with VEGA_JWT_SECRET (or, on the embedded default, a
 * secret generated once into VEGA_DATA_DIR so `vega token` and the server
 * agree), or tokens of an OIDC/Cognito issuer verified against its JWKS.
 * Claims: `sub`; groups from `groups` or `cognito:groups`; `vega_scope` for
 * service tokens (`worker`, or `runner` with `vega_scan_id` and `vega_attempt`).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from "jose";
import type { Config } from "../shared/config.ts";
import { ConfigError } from "../shared/config.ts";
import { unauthenticated } from "../shared/errors.ts";

export type PrincipalScope = "user" | "worker" | "runner";

export interface Principal {
  sub: string;
  groups: string[];
  scope: PrincipalScope;
  /** For runner tokens: the one scan the token may report on. */
  scanId?: string;
  /** For runner tokens: the claim of that scan it was minted for; a later claim supersedes it. */
  attempt?: number;
  /** For worker tokens returned by registerWorker: the one worker the token may beat for. */
  workerId?: string;
}

export interface TokenRequest {
  sub: string;
  groups?: string[];
  scope?: PrincipalScope;
  scanId?: string;
  attempt?: number;
  workerId?: string;
  ttlSeconds: number;
}

const HS256 = "HS256";
const SECRET_FILE = "jwt-secret";

/**
 * A subject and each group name are stored (User.id, User.groups) and shown:
 * bound them, so that a signed 10 KB claim cannot create a 10 KB row.
 */
export const MAX_CLAIM_LENGTH = 255;

/**
 * The HS256 key in force (for the worker and runner tokens Vega mints, and
 * people's tokens when there is no OIDC issuer), or undefined when only a JWKS
 * issuer is configured.
 * Without VEGA_JWT_SECRET the embedded default generates one into the data dir;
 * against PostgreSQL that would give each replica its own key, so it is refused.
 */
export async function resolveSigningKey(
  config: Pick<Config, "jwtSecret" | "jwtJwksUrl" | "databaseUrl" | "dataDir">,
): Promise<Uint8Array | undefined> {
  if (config.jwtSecret) return new TextEncoder().encode(config.jwtSecret);
  if (config.jwtJwksUrl) return undefined;
  if (config.databaseUrl) {
    throw new ConfigError(
      "VEGA_JWT_SECRET (or VEGA_JWT_JWKS_URL) must be set when VEGA_DATABASE_URL is: " +
        "every API replica and `vega token` need the same key",
    );
  }
  const file = path.join(config.dataDir, SECRET_FILE);
  try {
    return new TextEncoder().encode((await readFile(file, "utf8")).trim());
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  await mkdir(config.dataDir, { recursive: true });
  const secret = randomBytes(32).toString("base64url");
  try {
    // `wx`: if another process created it first, use theirs.
    await writeFile(file, secret, { mode: 0o600, flag: "wx" });
    return new TextEncoder().encode(secret);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    return new TextEncoder().encode((await readFile(file, "utf8")).trim());
  }
}

export async function signToken(key: Uint8Array, request: TokenRequest): Promise<string> {
  const claims: JWTPayload & Record<string, unknown> = { groups: request.groups ?? [] };
  if (request.scope && request.scope !== "user") claims.vega_scope = request.scope;
  if (request.scanId) claims.vega_scan_id = request.scanId;
  if (request.attempt !== undefined) claims.vega_attempt = request.attempt;
  if (request.workerId) claims.vega_worker_id = request.workerId;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: HS256 })
    .setSubject(request.sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + request.ttlSeconds)
    .sign(key);
}

export type TokenVerifier = (token: string) => Promise<Principal>;

/**
 * HS256 tokens are checked with the shared key (when one is configured): the
 * worker and runner tokens Vega mints, and people's tokens on the embedded
 * default. Other algorithms go to the OIDC issuer's JWKS (when configured), so
 * people can sign in through Cognito while services keep Vega's own tokens.
 *
 * Every token must expire (`exp`): one without would be a credential good
 * forever, which no revocation list here could take back. `exp`, `nbf` and
 * `iat` are judged with VEGA_JWT_CLOCK_SKEW_SECONDS of tolerance.
 */
export function createTokenVerifier(
  config: Pick<Config, "jwtJwksUrl" | "jwtIssuer" | "jwtAudience" | "jwtClockSkewSeconds">,
  key: Uint8Array | undefined,
): TokenVerifier {
  const jwks = config.jwtJwksUrl ? createRemoteJWKSet(new URL(config.jwtJwksUrl)) : undefined;
  const claims = { requiredClaims: ["exp"], clockTolerance: config.jwtClockSkewSeconds };
  return async (token) => {
    let payload: JWTPayload;
    try {
      const { alg } = decodeProtectedHeader(token);
      if (alg === HS256 && key) {
        ({ payload } = await jwtVerify(token, key, { algorithms: [HS256], ...claims }));
      } else if (alg !== HS256 && jwks) {
        ({ payload } = await jwtVerify(token, jwks, { issuer: config.jwtIssuer, audience: config.jwtAudience, ...claims }));
      } else {
        throw new joseErrors.JOSEAlgNotAllowed(`"${String(alg)}" tokens are not accepted here`);
      }
    } catch (error) {
      throw unauthenticated(describeVerificationFailure(error));
    }
    // jose checks `iat` only against a maximum age; a token dated ahead of our clock is refused here.
    if (typeof payload.iat === "number" && payload.iat > Date.now() / 1000 + config.jwtClockSkewSeconds) {
      throw unauthenticated("Bearer token was issued in the future (iat is ahead of the server's clock)");
    }
    return principalFromClaims(payload);
  };
}

function describeVerificationFailure(error: unknown): string {
  if (error instanceof joseErrors.JWTExpired) return "Bearer token has expired";
  if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === "exp" && error.reason === "missing") {
    return "Bearer token has no expiry (exp): tokens must expire";
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return "Bearer token signature is invalid";
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `Bearer token claim rejected: ${error.message}`;
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return "Bearer token uses an algorithm that is not accepted";
  return "Bearer token is malformed";
}

function principalFromClaims(payload: JWTPayload): Principal {
  if (typeof payload.sub !== "string" || payload.sub === "") throw unauthenticated("Bearer token has no subject");
  if (payload.sub.length > MAX_CLAIM_LENGTH) throw unauthenticated(`Bearer token subject is longer than ${MAX_CLAIM_LENGTH} characters`);
  const groupsClaim = payload.groups ?? payload["cognito:groups"] ?? [];
  const groups = Array.isArray(groupsClaim) ? groupsClaim.filter((group): group is string => typeof group === "string") : [];
  if (groups.some((group) => group.length > MAX_CLAIM_LENGTH)) {
    throw unauthenticated(`Bearer token names a group longer than ${MAX_CLAIM_LENGTH} characters`);
  }
  const scopeClaim = payload.vega_scope;
  if (scopeClaim !== undefined && scopeClaim !== "worker" && scopeClaim !== "runner") {
    throw unauthenticated(`Bearer token has an unknown vega_scope ${JSON.stringify(scopeClaim)}`);
  }
  const principal: Principal = { sub: payload.sub, groups, scope: scopeClaim ?? "user" };
  if (principal.scope === "runner") {
    if (typeof payload.vega_scan_id !== "string") throw unauthenticated("Runner token has no vega_scan_id");
    principal.scanId = payload.vega_scan_id;
    // Tokens minted before claims carried attempts have none: they are refused where a runner reports.
    if (Number.isSafeInteger(payload.vega_attempt)) principal.attempt = payload.vega_attempt as number;
  }
  if (principal.scope === "worker" && typeof payload.vega_worker_id === "string") {
    principal.workerId = payload.vega_worker_id;
  }
  return principal;
}

/** The token of an `Authorization: Bearer ...` header (or a graphql-ws connection_init payload). */
export function bearerToken(authorization: string | null | undefined): string | undefined {
  if (!authorization) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!match) throw unauthenticated("Authorization header must be `Bearer <token>`");
  return match[1];
}

export const isOperator = (principal: Principal | null | undefined, opsGroups: string[]) =>
  principal?.scope === "user" && principal.groups.some((group) => opsGroups.includes(group));
