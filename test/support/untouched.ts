/**
 * What every hostile-request test checks afterwards: the server is untouched.
 * Another user's normal query answers, /readyz is 200, and seconds later the
 * process is alive and answers again.
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

export async function expectServerUntouched(server: ServerUnderTest) {
  // In this process nothing may have reached Object.prototype (the multipart map's `__proto__` path did).
  expect(Object.keys(Object.prototype)).toEqual([]);
  const sub = `bystander-${randomUUID()}`;
  const token = await server.token(sub);
  await bystanderQuery(server, token, sub);
  expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  await sleep(WATCH_SECONDS * 1000);
  expect(server.alive?.() ?? true).toBe(true);
  expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  await bystanderQuery(server, token, sub);
}
