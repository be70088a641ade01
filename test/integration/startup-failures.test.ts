/**
 * A process that cannot do its job says why and exits non-zero, at once and
 * having started nothing. Real `vega serve`, `vega start` and `vega
 * maintenance` processes on ports and data directories of the test's, none on
 * the test database (so this file runs once in CI: worker-startup.test.ts has
 * the workers, against a test server).
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { signToken } from "../../api/auth.ts";
import { expectNoStackTrace, runVega } from "../support/cli.ts";
import { migratedDataDir } from "../support/data-dir.ts";
import { httpServer } from "../support/http-stub.ts";
import { TEST_JWT_SECRET } from "../support/jwt-secret.ts";
import { freePort, startVegaServer } from "../support/processes.ts";

vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });
const CLI = { timeoutMs: 240_000 };

const dirs: string[] = [];
/** A data directory: empty, or holding a migrated embedded database (seeded). */
const dataDir = async ({ seeded }: { seeded: boolean }) => {
  const dir = seeded ? await migratedDataDir("vega-startup-") : await mkdtemp(path.join(os.tmpdir(), "vega-startup-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));


describe("settings and addresses that cannot work", () => {
  it("refuses VEGA_PORT=70000 with the other settings, before anything starts", async () => {
    const dir = await dataDir({ seeded: false });
    const result = await runVega(["serve"], { VEGA_DATA_DIR: dir, VEGA_PORT: "70000" }, CLI);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('VEGA_PORT="70000" is not a TCP port (1-65535');
    expectNoStackTrace(result.stderr);
    expect(await readdir(dir)).toEqual([]);
  });

  it("exits 1 at once when the port is in use (serve and start), releasing the data directory; the data is intact after", async () => {
    const dir = await dataDir({ seeded: true });
    const secret = { VEGA_JWT_SECRET: TEST_JWT_SECRET };
    const workerToken = await signToken(new TextEncoder().encode(TEST_JWT_SECRET), { sub: "fleet", scope: "worker", ttlSeconds: 600 });
    const opsToken = await signToken(new TextEncoder().encode(TEST_JWT_SECRET), { sub: "olga", groups: ["vega-ops"], ttlSeconds: 600 });
    // A write reported done before the failed starts.
    const first = await startVegaServer("serve", { VEGA_DATA_DIR: dir, ...secret });
    const registered = await first.gql(
      `mutation { registerWorker(input: { name: "before", host: "h", pid: 1, version: "1", capacity: 1 }) { worker { id } } }`,
      {},
      workerToken,
    );
    expect(registered.errors).toBeUndefined();
    expect(await first.stop()).toBe(0);

    const squatter = await httpServer((_req, res) => res.end("taken"));
    const port = new URL(squatter.url).port;
    try {
      for (const command of ["serve", "start"]) {
        const result = await runVega([command], { VEGA_DATA_DIR: dir, VEGA_HOST: "127.0.0.1", VEGA_PORT: port, ...secret }, CLI);
        expect(result.code, result.stderr).toBe(1);
        expect(result.stderr).toContain(`cannot listen on 127.0.0.1:${port}: the port is already in use`);
        expectNoStackTrace(result.stderr);
        expect(await readdir(dir)).not.toContain("vega.lock");
      }
    } finally {
      await squatter.close();
    }

    const again = await startVegaServer("serve", { VEGA_DATA_DIR: dir, ...secret });
    try {
      const { data } = await again.gql(`{ ops { workers { id name } } }`, {}, opsToken);
      expect(data.ops.workers).toEqual([{ id: registered.data.registerWorker.worker.id, name: "before" }]);
    } finally {
      await again.stop();
    }
  });

  it('says "cannot connect to …" when VEGA_DATABASE_URL names a port where no PostgreSQL listens', async () => {
    const url = `postgresql://vega@127.0.0.1:${await freePort()}/vega`;
    const served = await runVega(["serve"], { VEGA_DATABASE_URL: url, VEGA_JWT_SECRET: TEST_JWT_SECRET, VEGA_PORT: "0" }, CLI);
    expect(served.code).toBe(1);
    expect(served.stderr).toContain(`cannot connect to the database at ${url}`);
    expect(served.stderr).not.toContain("pending migrations");
    expectNoStackTrace(served.stderr);

    const migrated = await runVega(["maintenance", "migrate"], { VEGA_DATABASE_URL: url }, CLI);
    expect(migrated.code).toBe(1);
    expect(JSON.parse(migrated.stdout)).toMatchObject({ ok: false, error: expect.stringContaining(`cannot connect to the database at ${url}`) });
  });
});
