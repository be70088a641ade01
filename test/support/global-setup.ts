/**
 * Once per `vitest run`, before any test file: one migrated template database,
 * from which every test file's database is copied (./database.ts). Migrating
 * costs about 2.1 s per PGlite; loading a dump of a migrated one about 0.7 s.
 * On PostgreSQL the template is a database of its own, and each test database
 * is made with `CREATE DATABASE … TEMPLATE`. The template's whereabouts reach
 * the test processes through the environment, which they inherit.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase } from "../../api/db/client.ts";
import { pgliteDriver } from "../../api/db/driver.ts";
import { migrate } from "../../api/db/migrate.ts";

export const PGLITE_TEMPLATE_ENV = "VEGA_TEST_PGLITE_TEMPLATE";
export const POSTGRES_TEMPLATE_ENV = "VEGA_TEST_POSTGRES_TEMPLATE";

export default async function setup(): Promise<() => Promise<void>> {
  const postgresUrl = process.env.VEGA_TEST_DATABASE_URL || undefined;
  if (postgresUrl) {
    const name = `vega_template_${randomBytes(6).toString("hex")}`;
    const admin = new pg.Client({ connectionString: postgresUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(postgresUrl);
    url.pathname = `/${name}`;
    const template = await openDatabase(loadConfig({ VEGA_DATABASE_URL: url.toString() }));
    try {
      await migrate(template.sql);
    } finally {
      // CREATE DATABASE … TEMPLATE refuses while anyone is connected to the template.
      await template.close();
    }
    process.env[POSTGRES_TEMPLATE_ENV] = name;
    return async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    };
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-test-template-"));
  const pglite = new PGlite();
  try {
    await migrate(pgliteDriver(pglite));
    // Uncompressed: gzip makes every load pay for inflating it.
    const dump = await pglite.dumpDataDir("none");
    const file = path.join(dir, "pglite.tar");
    await writeFile(file, Buffer.from(await dump.arrayBuffer()));
    process.env[PGLITE_TEMPLATE_ENV] = file;
  } finally {
    await pglite.close();
  }
  return async () => {
    await rm(dir, { recursive: true, force: true });
  };
}
