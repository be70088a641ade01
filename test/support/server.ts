/**
 * Starts the real API server on an ephemeral port over a database of its own,
 * and speaks HTTP to it like a client would.
 */
import { createLauncher } from "../../worker/launchers/index.ts";
import { mkdtemp, rm } from "node:fs/promises";
import pino from "pino";
import os from "node:os";
import path from "node:path";
import { signToken, type TokenRequest } from "../../api/auth.ts";
import { loadConfig, type Config } from "../../shared/config.ts";
import type { Logger } from "../../shared/logger.ts";
import { createApp, type App } from "../../api/server.ts";
import { openTestDatabase, type TestDatabase } from "./database.ts";
import { TEST_JWT_SECRET } from "./jwt-secret.ts";

export { TEST_JWT_SECRET };

export interface GraphQLResponse<Data = any> {
  status: number;
  headers: Headers;
  body: { data?: Data | null; errors?: { message: string; path?: string[]; extensions?: Record<string, any> }[] };
}

export interface TestServer {
  app: App;
  config: Config;
  url: string;
  graphqlUrl: string;
  wsUrl: string;
  db: TestDatabase;
  dataDir: string;
  token(sub: string, options?: Partial<Omit<TokenRequest, "sub">>): Promise<string>;
  gql<Data = any>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GraphQLResponse<Data>>;
  close(): Promise<void>;
}

export async function startTestServer(
  env: Record<string, string> = {},
  options: { onQuery?: (sql: string) => void; log?: Logger } = {},
): Promise<TestServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-test-"));
  const db = await openTestDatabase({ onQuery: options.onQuery });
  const config = loadConfig({
    VEGA_DATA_DIR: dataDir,
    VEGA_JWT_SECRET: TEST_JWT_SECRET,
    VEGA_LOG_LEVEL: process.env.VEGA_LOG_LEVEL ?? "warn",
    VEGA_CLEANUP_INTERVAL_SECONDS: "0",
    ...(db.url ? { VEGA_DATABASE_URL: db.url } : {}),
    ...env,
  });
  const app = await createApp(config, { database: db.database, log: options.log, openLauncher: (log) => createLauncher(config, log) });
  const url = await app.listen(0, "127.0.0.1");
  const key = new TextEncoder().encode(TEST_JWT_SECRET);
  const server: TestServer = {
    app,
    config,
    url,
    graphqlUrl: `${url}/graphql`,
    wsUrl: `${url.replace(/^http/, "ws")}/graphql`,
    db,
    dataDir,
    token: (sub, tokenOptions = {}) => signToken(key, { ttlSeconds: 3600, ...tokenOptions, sub }),
    async gql(query, variables, token) {
      const response = await fetch(server.graphqlUrl, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return { status: response.status, headers: response.headers, body: await response.json() };
    },
    async close() {
      await app.close();
      await db.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** The codes of a response's errors, for assertions. */
export const errorCodes = (response: GraphQLResponse) => (response.body.errors ?? []).map((error) => error.extensions?.code);

/** A logger that keeps every line it writes, for tests of what the server logs. */
export function capturingLogger(level = "info"): { log: Logger; lines: Record<string, any>[] } {
  const lines: Record<string, any>[] = [];
  const log = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { log, lines };
}
