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
