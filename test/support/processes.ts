/**
 * Real processes for fault tests: `vega start|serve` on a data directory of the
 * test's, `redis-server` on a port of the test's, each stopped or killed by the
 * pid the test holds.
 */
import type { ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { signToken } from "../../api/auth.ts";
import { startCommand, startVega, stopProcess, type StartOptions } from "./cli.ts";

/** A port nothing listens on right now (the system's choice, released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts connections on the port. */
export function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

export interface VegaServerProcess {
  child: ChildProcess;
  pid: number;
  url: string;
  graphqlUrl: string;
  output(): string;
  /** A GraphQL request; answers the parsed body. */
  gql<Data = any>(query: string, variables?: Record<string, unknown>, token?: string): Promise<{ data?: Data; errors?: any[] }>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const LISTENING = /"port":(\d+)[^\n]*"msg":"Vega API listening"/;

/** Answers the body of a GraphQL request to `graphqlUrl`. */
export async function graphqlRequest(graphqlUrl: string, query: string, variables: Record<string, unknown> = {}, token?: string) {
  const response = await fetch(graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()) as { data?: any; errors?: any[] };
}

/** Wraps a started `vega start|serve` whose output shows the port it listens on. */
export function vegaServerOf(started: { child: ChildProcess; output: () => string }): VegaServerProcess {
  const port = LISTENING.exec(started.output())?.[1];
  if (!port) throw new Error(`the server logged no port:\n${started.output()}`);
  const url = `http://127.0.0.1:${port}`;
  return {
    child: started.child,
    pid: started.child.pid!,
    url,
    graphqlUrl: `${url}/graphql`,
    output: started.output,
    gql: (query, variables, token) => graphqlRequest(`${url}/graphql`, query, variables, token),
    stop: (signal = "SIGTERM") => stopProcess(started.child, signal),
  };
}

/**
 * `vega start` (ready once its embedded worker registered) or `vega serve`
 * (ready once it listens) on an ephemeral port of 127.0.0.1.
 */
export async function startVegaServer(command: "start" | "serve", env: Record<string, string>, options: StartOptions = {}): Promise<VegaServerProcess> {
  const ready = command === "start" ? /"msg":"worker registered"/ : /"msg":"Vega API listening"/;
  const started = await startVega([command], { VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", ...env }, ready, { timeoutMs: 240_000, ...options });
  return vegaServerOf(started);
}

/** The HS256 key the embedded default generated into the data directory. */
export async function dataDirKey(dataDir: string): Promise<Uint8Array> {
  return new TextEncoder().encode((await readFile(path.join(dataDir, "jwt-secret"), "utf8")).trim());
}

export const operatorToken = (key: Uint8Array, sub = "olga") => signToken(key, { sub, groups: ["vega-ops"], ttlSeconds: 3600 });

export interface RedisProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  url: string;
  /** SIGKILL: Redis goes away as a crashed or partitioned server does, without closing connections politely. */
  kill(): Promise<void>;
}

/** A redis-server of the test's own on `port` (nothing kept on disk). */
export async function startRedisServer(port: number): Promise<RedisProcess> {
  const started = await startCommand(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
    {},
    /Ready to accept connections/,
    { timeoutMs: 60_000 },
  );
  return {
    child: started.child,
    pid: started.child.pid!,
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: async () => {
      await stopProcess(started.child, "SIGKILL");
    },
  };
}
