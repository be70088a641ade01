/**
 * When a worker beats, and what it does when a beat fails.
 *
 * - Every beat is VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS ±10%: workers started
 *   together (a deployment, an autoscaling step) drift apart instead of
 *   hitting the API in step.
 * - A failed call is retried after 1 s, 2 s, 4 s… (±10%), never more than the
 *   interval: a struggling API is not hammered, and a worker that recovers is
 *   never seen less often than a healthy one. Failures are never fatal.
 * - An answer that says the registration is gone (the row was pruned or
 *   deregistered, or the session token expired) makes the worker register again.
 * - Registration is retried only through what can heal: no answer (connection
 *   refused, timeout), 5xx, 408, 429 and the API's own transient errors. A token
 *   the API refuses or that lacks the worker scope, or an address that is not
 *   the API's GraphQL endpoint (404, or no GraphQL answer at all), stays so: the
 *   worker stops and names the setting to fix.
 */
import { ApiRequestError } from "./api-client.ts";

export const HEARTBEAT_JITTER = 0.1;
const FIRST_RETRY_MS = 1000;

export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.round(ms * (1 - HEARTBEAT_JITTER + 2 * HEARTBEAT_JITTER * random()));
}

export function nextHeartbeatDelayMs(intervalSeconds: number, random?: () => number): number {
  return jittered(intervalSeconds * 1000, random);
}

/** The delay before retry number `failures` (1 for the first retry). */
export function retryDelayMs(failures: number, intervalSeconds: number, random?: () => number): number {
  const exponential = FIRST_RETRY_MS * 2 ** Math.min(Math.max(failures - 1, 0), 30);
  return jittered(Math.min(exponential, intervalSeconds * 1000), random);
}

/** NOT_FOUND, CONFLICT (deregistered) or UNAUTHENTICATED (session token expired): the worker registers again. */
export function registrationLost(error: unknown): boolean {
  return error instanceof ApiRequestError && error.hasCode("NOT_FOUND", "CONFLICT", "UNAUTHENTICATED");
}

/** Registration failed for good (registrationRefusal): the worker stops. */
export class RegistrationRefusedError extends Error {
  override name = "RegistrationRefusedError";
}

/** Codes that mean the request itself is wrong, whatever the API's health. */
const REFUSAL_CODES = ["UNAUTHENTICATED", "FORBIDDEN", "BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED"];

/** Why registering can never succeed by retrying (naming the setting to fix), or undefined when it may heal. */
export function registrationRefusal(error: unknown, apiUrl: string): string | undefined {
  if (!(error instanceof ApiRequestError) || error.status === undefined) return undefined;
  const status = error.status;
  if (error.hasCode("UNAUTHENTICATED")) {
    return `the API at ${apiUrl} does not accept the worker token (${error.message}): VEGA_WORKER_TOKEN must be a valid token signed with the API's key (e.g. \`vega token --sub worker-1 --scope worker\`)`;
  }
  if (error.hasCode("FORBIDDEN")) {
    return `the API at ${apiUrl} refused to register this worker (${error.message}): VEGA_WORKER_TOKEN must have vega_scope=worker (e.g. \`vega token --sub worker-1 --scope worker\`)`;
  }
  if (error.hasCode(...REFUSAL_CODES)) return `the API at ${apiUrl} refused the registration: ${error.message}`;
  if (error.codes.length > 0 || status >= 500 || status === 408 || status === 429) return undefined;
  if (status === 404) return `VEGA_API_URL=${apiUrl} answered 404: it must be the API's GraphQL endpoint (http://host:port/graphql)`;
  return `VEGA_API_URL=${apiUrl} gave no GraphQL answer (${error.message}): it must be the API's GraphQL endpoint (http://host:port/graphql)`;
}
