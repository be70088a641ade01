/**
 * A real `vega serve` process on an ephemeral port, over a data directory (and,
 * with VEGA_TEST_DATABASE_URL, a PostgreSQL database) of its own: for tests
 * that must see the server as its own process — that it is still alive, and
 * its open descriptors and memory, read from /proc.
 */
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { signToken, type TokenRequest } from "../../api/auth.ts";
import { startVega, stopProcess } from "./cli.ts";
import { migratedDataDir } from "./data-dir.ts";
import { createPostgresDatabase, postgresTestUrl } from "./database.ts";
import { TEST_JWT_SECRET } from "./server.ts";

export interface ServeProcess {
  child: ChildProcess;
  pid: number;
  url: string;
  graphqlUrl: string;
  wsUrl: string;
  dataDir: string;
  token(sub: string, options?: Partial<Omit<TokenRequest, "sub">>): Promise<string>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** What the process holds open, one entry per descriptor (/proc/<pid>/fd: a path, `socket:[…]`, `pipe:[…]`…). */
  openFds(): string[];
  /** Resident memory in bytes (VmRSS in /proc/<pid>/status). */
  rssBytes(): number;
  /** The most resident memory the process ever had, in bytes (VmHWM): what a moment's buffering would raise. */
  peakRssBytes(): number;
  /** Files in the artifact store's tmp/ (uploads in progress, or leaked). */
  uploadTemporaries(): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startServeProcess(env: Record<string, string> = {}): Promise<ServeProcess> {
  const dataDir = await migratedDataDir("vega-serve-");
  const postgres = postgresTestUrl ? await createPostgresDatabase({ migrated: true }) : undefined;
  const { child, output } = await startVega(
    ["serve"],
    {
      VEGA_DATA_DIR: dataDir,
      VEGA_PORT: "0",
      VEGA_HOST: "127.0.0.1",
      VEGA_JWT_SECRET: TEST_JWT_SECRET,
      VEGA_CLEANUP_INTERVAL_SECONDS: "0",
      ...(postgres ? { VEGA_DATABASE_URL: postgres.url } : {}),
      ...env,
    },
    /"msg":"Vega API listening"/,
    { timeoutMs: 180_000 },
  );
  const port = /"port":(\d+)[^\n]*"msg":"Vega API listening"/.exec(output())![1];
  const url = `http://127.0.0.1:${port}`;
  const pid = child.pid!;
  const key = new TextEncoder().encode(TEST_JWT_SECRET);
  const tmpDir = path.join(dataDir, "artifacts", "tmp");
  return {
    child,
    pid,
    url,
    graphqlUrl: `${url}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    dataDir,
    token: (sub, options = {}) => signToken(key, { ttlSeconds: 3600, ...options, sub }),
    alive: () => child.exitCode === null && child.signalCode === null,
    openFds: () =>
      readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
        try {
          return [readlinkSync(`/proc/${pid}/fd/${fd}`)];
        } catch {
          return []; // closed while the directory was read
        }
      }),
    rssBytes: () => statusBytes(pid, "VmRSS"),
    peakRssBytes: () => statusBytes(pid, "VmHWM"),
    uploadTemporaries: () => readdir(tmpDir),
    async stop() {
      await stopProcess(child, "SIGTERM");
      await postgres?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

function statusBytes(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024;
}
