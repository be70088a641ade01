/**
 * One database per test file: an in-memory PGlite by default, or, with
 * VEGA_TEST_DATABASE_URL=postgresql://..., a fresh database on that server
 * (created here, migrated, dropped at the end).
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase, type Database } from "../../api/db/client.ts";
import { migrate } from "../../api/db/migrate.ts";

export const postgresTestUrl = process.env.VEGA_TEST_DATABASE_URL || undefined;

export interface TestDatabase {
  database: Database;
  /** The URL of the PostgreSQL database created for this file (undefined on PGlite). */
  url?: string;
  close(): Promise<void>;
}

/** Creates an empty PostgreSQL database next to VEGA_TEST_DATABASE_URL and answers its URL. */
export async function createPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!postgresTestUrl) throw new Error("VEGA_TEST_DATABASE_URL is not set");
  const name = `vega_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: postgresTestUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(postgresTestUrl);
  url.pathname = `/${name}`;
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
    const created = await createPostgresDatabase();
    const database = await openDatabase(loadConfig({ VEGA_DATABASE_URL: created.url, VEGA_DATABASE_POOL_SIZE: "10" }), options);
    if (migrated) await migrate(database.sql);
    return {
      database,
      url: created.url,
      async close() {
        await database.close();
        await created.drop();
      },
    };
  }
  const database = await openDatabase(loadConfig({}), { ...options, inMemory: true });
  if (migrated) await migrate(database.sql);
  return { database, close: () => database.close() };
}
