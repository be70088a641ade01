/**
 * What every hostile-request test checks afterwards: the server is untouched.
 * Another user's normal query answers, /readyz is 200, and seconds later (at the
 * end of the file) the process is alive and answers again.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "vitest";
import type { TokenRequest } from "../../api/auth.ts";

export interface ServerUnderTest {
  url: string;
  graphqlUrl: string;
  token(sub: string, options?: Partial<Omit<TokenRequest, "sub">>): Promise<string>;
  /** For a server in its own process; an in-process server is as alive as the test. */
  alive?(): boolean;
}

/** How long the server is watched after the hostile request: a crash it caused would show by then. */
const WATCH_SECONDS = 2;

const BYSTANDER_QUERY = `{ viewer { id workspaces { id personal } } scans(first: 5) { edges { node { id } } } }`;

async function bystanderQuery(server: ServerUnderTest, token: string, sub: string) {
  const response = await fetch(server.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: BYSTANDER_QUERY }),
  });
  const body = await response.json();
  expect(body.errors, JSON.stringify(body.errors)).toBeUndefined();
  expect(response.status).toBe(200);
  expect(body.data.viewer).toMatchObject({ id: sub, workspaces: [{ personal: true }] });
}

/** When each server last met a hostile request, for the watch that ends its test file. */
const lastHostileAt = new WeakMap<ServerUnderTest, number>();

/**
 * Right after a hostile request: another user's query answers and /readyz is 200. The server is
 * also recorded for `expectServerStillUntouched`, which its file's afterAll calls: a crash the
 * request caused later (the multipart `__proto__` path killed the process ~20 s after) shows there,
 * and the file waits once rather than after every request.
 */
export async function expectServerUntouched(server: ServerUnderTest) {
  // In this process nothing may have reached Object.prototype (the multipart map's `__proto__` path did).
  expect(Object.keys(Object.prototype)).toEqual([]);
  lastHostileAt.set(server, Date.now());
  const sub = `bystander-${randomUUID()}`;
  await bystanderQuery(server, await server.token(sub), sub);
  expect(server.alive?.() ?? true).toBe(true);
  expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
}

/**
 * Seconds after the last hostile request the server met, it is alive, ready and answers another
 * user. Call it in afterAll, before stopping the server, in every file that calls
 * `expectServerUntouched`.
 */
export async function expectServerStillUntouched(server: ServerUnderTest) {
  const last = lastHostileAt.get(server);
  if (last === undefined) return;
  const remaining = last + WATCH_SECONDS * 1000 - Date.now();
  if (remaining > 0) await sleep(remaining);
  expect(server.alive?.() ?? true, "the server died after a hostile request").toBe(true);
  expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  const sub = `bystander-${randomUUID()}`;
  await bystanderQuery(server, await server.token(sub), sub);
  expect(Object.keys(Object.prototype)).toEqual([]);
}
