/**
 * `npm start` as a container command: a container runtime sends SIGTERM (or a
 * terminal SIGINT) to the pid it started, which is npm's, not Vega's. Each
 * documented start command is spawned as a container would spawn it, the signal
 * goes to that one pid (never a process group), and the test checks that the
 * whole service stopped cleanly: the worker drained and deregistered, the port
 * closed, the data directory released, nothing left running, and after a
 * restart everything reported done is there.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { signToken } from "../../api/auth.ts";
import { startCommand, stopProcess } from "../support/cli.ts";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase } from "../../api/db/client.ts";
import { dataDirKey, portAnswers, vegaServerOf } from "../support/processes.ts";
import { submitScan } from "../support/uploads.ts";
import { processExists, waitFor } from "../support/worker-process.ts";
import { buildZip } from "../support/zips.ts";

vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const repository = path.resolve(".");
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) await stopProcess(child, "SIGKILL");
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** The pid Vega's own process logs (npm's pid is the one the test holds). */
const vegaPidOf = (output: string) => Number(/"pid":(\d+)/.exec(output)![1]);

const exitOf = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once("exit", (code, signal) => resolve({ code, signal }));
  });

async function launch(command: string, args: string[], ready: RegExp) {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-npm-"));
  dirs.push(dataDir);
  const env = { VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_WORKER_POLL_INTERVAL_SECONDS: "1" };
  const started = await startCommand(command, args, env, ready, { cwd: repository, timeoutMs: 300_000 });
  children.push(started.child);
  const server = vegaServerOf(started);
  return { dataDir, env, started, server, vegaPid: vegaPidOf(started.output()) };
}

/** After the signal: Vega's process gone, the port closed, the data directory's lock released. */
async function expectEverythingStopped(launched: Awaited<ReturnType<typeof launch>>) {
  await waitFor(`Vega (pid ${launched.vegaPid}) to exit`, () => !processExists(launched.vegaPid));
  expect(await portAnswers(Number(new URL(launched.server.url).port))).toBe(false);
  expect(await readdir(launched.dataDir)).not.toContain("vega.lock");
  expect(launched.started.output()).toContain('"msg":"shutting down"');
}

describe("npm start, stopped by a signal to npm's pid", () => {
  it("SIGTERM: drains and deregisters the worker, closes the API, exits 0; the directory, opened afterwards, has the finished scan and the deregistration", async () => {
    const launched = await launch("npm", ["start"], /"msg":"worker registered"/);
    const key = await dataDirKey(launched.dataDir);
    const alice = await signToken(key, { sub: "alice", ttlSeconds: 3600 });
    const submitted = await submitScan({ graphqlUrl: launched.server.graphqlUrl }, alice, await buildZip([{ name: "README.md", data: "# hello\n" }]));
    const scanId = submitted.body.data.submitScan.scan.id;
    await waitFor("the scan to succeed", async () => {
      const { data } = await launched.server.gql(`query ($id: ID!) { scan(id: $id) { status } }`, { id: scanId }, alice);
      return data?.scan?.status === "SUCCEEDED";
    });

    const exited = exitOf(launched.started.child);
    process.kill(launched.started.child.pid!, "SIGTERM");
    expect(await exited).toEqual({ code: 0, signal: null });
    await expectEverythingStopped(launched);
    expect(launched.started.output()).toContain('"msg":"worker drained and deregistered"');

    // The directory is free: the test opens it itself and reads what the stopped service wrote.
    const workerId = /"workerId":"([^"]+)"[^\n]*"msg":"worker registered"/.exec(launched.started.output())![1];
    const database = await openDatabase(loadConfig({ VEGA_DATA_DIR: launched.dataDir }));
    try {
      expect(await database.prisma.worker.findUniqueOrThrow({ where: { id: workerId } })).toMatchObject({ draining: true, deregisteredAt: expect.any(Date) });
      expect(await database.prisma.scan.findUniqueOrThrow({ where: { id: scanId } })).toMatchObject({ status: "SUCCEEDED" });
    } finally {
      await database.close();
    }
  });

  it("SIGINT to `npm run serve`: closes the API and exits 0", async () => {
    const launched = await launch("npm", ["run", "serve"], /"msg":"Vega API listening"/);
    const exited = exitOf(launched.started.child);
    process.kill(launched.started.child.pid!, "SIGINT");
    expect(await exited).toEqual({ code: 0, signal: null });
    await expectEverythingStopped(launched);
  });

  it("SIGTERM to `npx vega serve`: npm's shell dies of it, and Vega, left without its parent, stops cleanly all the same", async () => {
    const launched = await launch("npx", ["--yes", "vega", "serve"], /"msg":"Vega API listening"/);
    process.kill(launched.started.child.pid!, "SIGTERM");
    await exitOf(launched.started.child);
    await expectEverythingStopped(launched);
    expect(launched.started.output()).toContain('"reason":"parent exited"');
  });
});
