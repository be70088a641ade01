/**
 * One database per test file: an in-memory PGlite by default, or, with
 * VEGA_TEST_DATABASE_URL=postgresql://..., a fresh database on that server
 * (created here, dropped at the end). A migrated one is a copy of the template
 * that ./global-setup.ts migrated once for the whole run; outside vitest (the
 * benchmarks), with no template, it is migrated here.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import pg from "pg";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import { migrate } from "../../api/db/migrate.ts";
import { PGLITE_TEMPLATE_ENV, POSTGRES_TEMPLATE_ENV } from "./global-setup.ts";

export const postgresTestUrl = process.env.VEGA_TEST_DATABASE_URL || undefined;

export interface TestDatabase {
  database: Database;
  /** The URL of the PostgreSQL database created for this file (undefined on PGlite). */
  url?: string;
  close(): Promise<void>;
}

/**
 * Creates a PostgreSQL database next to VEGA_TEST_DATABASE_URL and answers its URL: empty, or
 * `migrated` (a copy of the run's template when there is one, else migrated here).
 */
export async function createPostgresDatabase(options: { migrated?: boolean } = {}): Promise<{ url: string; drop(): Promise<void> }> {
  if (!postgresTestUrl) throw new Error("VEGA_TEST_DATABASE_URL is not set");
  const name = `vega_test_${randomBytes(6).toString("hex")}`;
  const template = options.migrated ? process.env[POSTGRES_TEMPLATE_ENV] : undefined;
  const admin = new pg.Client({ connectionString: postgresTestUrl });
  await admin.connect();
  await admin.query(template ? `CREATE DATABASE ${name} TEMPLATE ${template}` : `CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(postgresTestUrl);
  url.pathname = `/${name}`;
  if (options.migrated && !template) {
    const database = await openDatabase(loadConfig({ VEGA_DATABASE_URL: url.toString() }));
    await migrate(database.sql).finally(() => database.close());
  }
  return {
    url: url.toString(),
    async drop() {
      const dropper = new pg.Client({ connectionString: postgresTestUrl });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}

export async function openTestDatabase(options: { onQuery?: (sql: string) => void; migrated?: boolean } = {}): Promise<TestDatabase> {
  const migrated = options.migrated ?? true;
  if (postgresTestUrl) {
    const created = await createPostgresDatabase({ migrated });
    const database = await openDatabase(loadConfig({ VEGA_DATABASE_URL: created.url, VEGA_DATABASE_POOL_SIZE: "10" }), options);
    return {
      database,
      url: created.url,
      async close() {
        await database.close();
        await created.drop();
      },
    };
  }
  const template = migrated ? await pgliteTemplate() : undefined;
  const database = await openDatabase(loadConfig({}), { ...options, inMemory: true, loadDataDir: template });
  if (migrated && !template) await migrate(database.sql);
  return { database, close: () => database.close() };
}

let templateDump: Promise<Blob> | undefined;

/** The run's migrated PGlite, dumped: read once per test process, loaded by every database it opens. */
function pgliteTemplate(): Promise<Blob> | undefined {
  const file = process.env[PGLITE_TEMPLATE_ENV];
  if (!file) return undefined;
  templateDump ??= readFile(file).then((bytes) => new Blob([new Uint8Array(bytes)]));
  return templateDump;
}
