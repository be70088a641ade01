/**
 * Once per `vitest run`, before any test file: one migrated template database,
 * from which every test file's database is copied (./database.ts). Migrating
 * costs about 2.1 s per PGlite; loading a dump of a migrated one about 0.7 s.
 * The same migrated PGlite, as a data directory, seeds the VEGA_DATA_DIR of
 * the `vega` processes the tests start (./data-dir.ts): a fresh directory
 * costs each of them PGlite's initdb and the migrations, 5–10 s of CPU.
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
import { PGLITE_DATA_DIR_TEMPLATE_ENV } from "./data-dir.ts";

export const PGLITE_TEMPLATE_ENV = "VEGA_TEST_PGLITE_TEMPLATE";
export const POSTGRES_TEMPLATE_ENV = "VEGA_TEST_POSTGRES_TEMPLATE";

export default async function setup(): Promise<() => Promise<void>> {
  const removePglite = await pgliteTemplates();
  const postgresUrl = process.env.VEGA_TEST_DATABASE_URL || undefined;
  const dropPostgres = postgresUrl ? await postgresTemplate(postgresUrl) : undefined;
  return async () => {
    await dropPostgres?.();
    await removePglite();
  };
}

/** The migrated PGlite: as a dump for the in-memory test databases, and as a data directory for `vega` processes. */
async function pgliteTemplates() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-test-template-"));
  const dataDir = path.join(dir, "pglite");
  const pglite = new PGlite(dataDir);
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
  process.env[PGLITE_DATA_DIR_TEMPLATE_ENV] = dataDir;
  return () => rm(dir, { recursive: true, force: true });
}

async function postgresTemplate(postgresUrl: string) {
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
